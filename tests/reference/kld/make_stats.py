#!/usr/bin/env python3
"""Reference for eval/kl_divergence: per-position comparisons and the
llama.cpp-style statistics computed independently in numpy float64.

Writes stats.json: logits and ref_logits [positions, vocab] (float32 values,
stored exactly as decimal), targets, and the expected per-position and
aggregate numbers. Percentiles use numpy's default "linear" method (the one
llama-perplexity implements by hand); standard errors are sample std / sqrt(n).

Run from the repository root: python3 tests/reference/kld/make_stats.py
"""
import json
import os

import numpy as np

rng = np.random.default_rng(20240611)
positions, vocab = 157, 23
ref = rng.normal(0, 2.0, size=(positions, vocab)).astype(np.float32)
# The model is the reference plus noise of varying size, so KLD spreads over
# orders of magnitude and some argmaxes disagree.
scale = rng.uniform(0.0, 1.5, size=(positions, 1))
model = (ref + rng.normal(0, 1.0, size=(positions, vocab)) * scale).astype(np.float32)
targets = rng.integers(0, vocab, size=positions)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


lp, lr = log_softmax(model), log_softmax(ref)
rows = np.arange(positions)
nll = -lp[rows, targets]
nll_ref = -lr[rows, targets]
kld = (np.exp(lr) * (lr - lp)).sum(axis=1)
p_diff = np.exp(-nll) - np.exp(-nll_ref)
same = model.argmax(axis=1) == ref.argmax(axis=1)
n = positions


def se(x):
    return float(np.std(x, ddof=1) / np.sqrt(len(x)))


def quantiles(x):
    fr = {"min": 0, "p0_1": 0.1, "p1": 1, "p5": 5, "p10": 10, "p25": 25, "median": 50,
          "p75": 75, "p90": 90, "p95": 95, "p99": 99, "p99_9": 99.9, "max": 100}
    return {k: float(np.percentile(x, v)) for k, v in fr.items()}


ln_ratio = nll - nll_ref
ppl, ppl_ref = np.exp(nll.mean()), np.exp(nll_ref.mean())
cov = np.cov(nll, nll_ref, ddof=1)[0, 1] / n
rms = np.sqrt(np.mean(p_diff ** 2))
f = same.mean()
expected = {
    "count": n,
    "ppl": [float(ppl), float(ppl * se(nll))],
    "ppl_ref": [float(ppl_ref), float(ppl_ref * se(nll_ref))],
    "ln_ppl_correlation": float(np.corrcoef(nll, nll_ref)[0, 1]),
    "ln_ppl_ratio": [float(ln_ratio.mean()), se(ln_ratio)],
    "ppl_ratio": [float(np.exp(ln_ratio.mean())), float(np.exp(ln_ratio.mean()) * se(ln_ratio))],
    "ppl_diff": [float(ppl - ppl_ref),
                 float(np.sqrt((ppl * se(nll)) ** 2 + (ppl_ref * se(nll_ref)) ** 2 - 2 * ppl * ppl_ref * cov))],
    "kld": [float(kld.mean()), se(kld)],
    "kld_quantiles": quantiles(kld),
    "p_diff": [float(p_diff.mean()), se(p_diff)],
    "p_diff_quantiles": quantiles(p_diff),
    "rms_p_diff": [float(rms), float(0.5 / rms * se(p_diff ** 2))],
    "same_top": [float(f), float(np.sqrt(f * (1 - f) / (n - 1)))],
}
out = {
    "vocab": vocab,
    "logits": [[float(v) for v in r] for r in model],
    "ref_logits": [[float(v) for v in r] for r in ref],
    "targets": [int(t) for t in targets],
    "nll": nll.tolist(), "nll_ref": nll_ref.tolist(), "kld": kld.tolist(), "p_diff": p_diff.tolist(),
    "same_top": [bool(s) for s in same],
    "expected": expected,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats.json")
with open(path, "w") as fh:
    json.dump(out, fh, indent=0)
print(f"wrote {path}: {positions} positions, vocab {vocab}, same top {f:.3f}, mean KLD {kld.mean():.5f}")
