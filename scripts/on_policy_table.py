#!/usr/bin/env python3
"""The table of scripts/on-policy-experiment: held-out accuracy against steps
and seconds for each arm of recipes/on_policy.textproto, over seeds.

    python3 scripts/on_policy_table.py RUN_DIR...   (one run directory per seed)

For each eval stage named eval_<arm>_<step> (or eval_base / eval_answers_base,
step 0) it reads result.json's accuracy, and the arm's metrics.jsonl for the
seconds its training had taken at that step (elapsed_s) and the sampled
accuracy of its on-policy steps. Prints a Markdown table: one row per arm and
step, accuracy per seed, their mean and range.
"""
import json
import os
import re
import sys

ARMS = [
    ("base", "SFT on traces (start)", "sft_base"),
    ("sft_more", "(a) more SFT", "sft_more"),
    ("on_policy", "(b) on-policy reverse KL", "on_policy"),
    ("gkd_mix", "(c) lambda 0.5 mix", "gkd_mix"),
    ("sft_more_low", "(a') more SFT, lr 2e-5", "sft_more_low"),
    ("on_policy_low", "(b') on-policy reverse KL, lr 2e-5", "on_policy_low"),
    ("answers_base", "answers only (start)", "answers_base"),
    ("on_policy_answers", "(d) on-policy from answers-only", "on_policy_answers"),
]


def metrics(run, stage):
    path = os.path.join(run, stage, "metrics.jsonl")
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in m:
                out[m["step"]] = m
    return out


def results(run):
    """{(arm, step): (accuracy, seconds)} of one run directory."""
    found = {}
    for name in sorted(os.listdir(run)):
        m = re.fullmatch(r"eval_(.+?)(?:_(\d+))?", name)
        res = os.path.join(run, name, "result.json")
        if not m or not os.path.exists(res):
            continue
        arm, step = m.group(1), int(m.group(2) or 0)
        with open(res) as f:
            acc = json.load(f)["accuracy"]
        seconds = 0.0
        if step > 0:
            steps = metrics(run, arm)
            if step in steps:
                seconds = steps[step].get("elapsed_s", 0.0)
        found[(arm, step)] = (acc, seconds)
    return found


def main():
    runs = sys.argv[1:]
    if not runs:
        sys.exit(__doc__)
    per_run = [results(r) for r in runs]
    keys = sorted({k for r in per_run for k in r},
                  key=lambda k: ([a[0] for a in ARMS].index(k[0]) if k[0] in [a[0] for a in ARMS]
                                 else 99, k[1]))
    labels = {a[0]: a[1] for a in ARMS}
    names = [os.path.basename(os.path.normpath(r)) for r in runs]
    print("| arm | step | seconds (mean) | " + " | ".join(names) + " | mean | range |")
    print("|---|---|---|" + "---|" * len(names) + "---|---|")
    for arm, step in keys:
        accs = [r[(arm, step)][0] for r in per_run if (arm, step) in r]
        secs = [r[(arm, step)][1] for r in per_run if (arm, step) in r]
        cells = [f"{100 * r[(arm, step)][0]:.1f}%" if (arm, step) in r else "—" for r in per_run]
        mean = sum(accs) / len(accs)
        print(f"| {labels.get(arm, arm)} | {step} | {sum(secs) / len(secs):.0f} | "
              + " | ".join(cells)
              + f" | {100 * mean:.1f}% | {100 * min(accs):.1f}–{100 * max(accs):.1f}% |")


if __name__ == "__main__":
    main()
