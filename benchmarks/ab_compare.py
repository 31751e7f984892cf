#!/usr/bin/env python3
"""Interleaved A/B speed comparison of two builds of retort's benchmarks.

Runs each case with build A's program, then build B's, alternating for
--rounds rounds on the same machine (so drift and load hit both alike), and
prints one row per metric: the median of A, the median of B and B/A. Used to
show that a change (e.g. the kernel interface of issue 15) keeps speed.

  benchmarks/ab_compare.py --a OLD_BENCH_DIR --b build/benchmarks \\
      [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--rounds 3] [--threads 2] \\
      [--out results.json]

A "bench dir" holds engine_bench, generation_bench and train_bench. The
cases: engine_bench decode and prefill tokens/s on the real GGUF and on a
100M bf16 preset, generation_bench batched tokens/s (batch 1 and 4), and
train_bench tokens/s (30m and 100m presets). Output: a Markdown table on
stdout (medians and best rounds) and, with --out, every raw JSON. Only the Python standard library.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def dig(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def generation_tps(doc, batch):
    for run in doc["generation"]:
        if run.get("batch") == batch:
            return run["generated_tokens_per_second"]
    raise KeyError(f"generation_bench: no batch {batch}")


def cases(args):
    n = str(args.threads)
    engine_real = ["engine_bench", "--model", args.model, "--threads", n, "--prompt", "256",
                   "--decode", "32", "--repeats", "2"]
    engine_100m = ["engine_bench", "--size", "100m", "--dtype", "bf16", "--threads", n,
                   "--prompt", "256", "--decode", "32", "--repeats", "2"]
    gen = ["generation_bench", "--model", args.model, "--threads", n, "--batches", "1,4",
           "--prompt", "32", "--new", "32"]
    train30 = ["train_bench", "--preset", "30m", "--threads", n, "--steps", "3"]
    train100 = ["train_bench", "--preset", "100m", "--threads", n, "--steps", "2"]
    return [
        ("engine decode tok/s (SmolLM2 Q4_1)", engine_real, ["decode", "tokens_per_second"]),
        ("engine prefill tok/s (SmolLM2 Q4_1)", engine_real, ["prefill", "tokens_per_second"]),
        ("engine decode tok/s (100m bf16)", engine_100m, ["decode", "tokens_per_second"]),
        ("engine prefill tok/s (100m bf16)", engine_100m, ["prefill", "tokens_per_second"]),
        ("generation tok/s batch 1 (SmolLM2)", gen, lambda d: generation_tps(d, 1)),
        ("generation tok/s batch 4 (SmolLM2)", gen, lambda d: generation_tps(d, 4)),
        ("train tok/s (30m)", train30, ["tokens_per_s"]),
        ("train tok/s (100m)", train100, ["tokens_per_s"]),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="folder with build A's benchmark programs")
    ap.add_argument("--b", required=True, help="folder with build B's benchmark programs")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="run only cases whose name contains this text")
    ap.add_argument("--out", help="write every raw JSON result here")
    args = ap.parse_args()

    table = cases(args)
    if args.only:
        table = [c for c in table if args.only in c[0]]
    # One run of a command serves every metric read from it.
    commands = []
    for _, cmd, _ in table:
        if cmd not in commands:
            commands.append(cmd)
    raw = {"cpu": cpu_name(), "rounds": args.rounds, "runs": []}
    values = {}  # (command index, side) -> list of JSON docs
    for r in range(args.rounds):
        for ci, cmd in enumerate(commands):
            for side, folder in (("a", args.a), ("b", args.b)):
                full = [os.path.join(folder, cmd[0])] + cmd[1:]
                print(f"round {r + 1}/{args.rounds} {side}: {' '.join(full)}", file=sys.stderr)
                doc = run_json(full)
                values.setdefault((ci, side), []).append(doc)
                raw["runs"].append({"round": r, "side": side, "cmd": full, "result": doc})
    print(f"CPU: {raw['cpu']}, {args.threads} threads, {args.rounds} interleaved rounds\n")
    # Medians, and the best round of each side: interference from other work
    # on the machine only ever slows a run down, so the best is the steadier.
    print("| metric | A median | B median | B/A | A best | B best | B/A best |")
    print("|---|---|---|---|---|---|---|")
    for name, cmd, path in table:
        ci = commands.index(cmd)
        get = path if callable(path) else (lambda d, p=path: dig(d, p))
        av = [get(d) for d in values[(ci, "a")]]
        bv = [get(d) for d in values[(ci, "b")]]
        a, b = statistics.median(av), statistics.median(bv)
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.3f} | {max(av):.2f} | {max(bv):.2f} | "
              f"{max(bv) / max(av):.3f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
