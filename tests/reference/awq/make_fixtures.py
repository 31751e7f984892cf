#!/usr/bin/env python3
"""AWQ reference fixtures for tests/quantize/awq_test.cc.

A PyTorch AWQ scale search and clip search written from the AWQ paper and the
behaviour of llm-awq / AutoAWQ (_search_best_scale, _compute_best_clip):
x_mean = mean |x|, w_mean = mean of |w| over its group's absmax (+1e-6),
s = x_mean^a / (w_mean^(1-a) + 1e-4) (duo) or x_mean^a, clamp 1e-4,
s / sqrt(max(s) min(s)), a = i / 20; plus retort's extra first candidate s = 1.
Loss = sum over linears of ||x W^T - x (Q(W s) / s)^T||^2 (f64). The rounding
is retort's (quantize/scheme.h), shared with tests/reference/gptq.

Writes awq.safetensors:
  x                F32 [256, 128]  activations (a few channels 20x larger)
  w1, w2           F32 [48, 128], [32, 128]  two linears sharing x
  <case>.scales    F32 [128]
  <case>.loss      F64 [1]   loss of the chosen scales
  <case>.rtn_loss  F64 [1]   loss of s = 1
  clip.w           F32 [48, 128]  w1 * scales(int4_g32_asym), clipped with
                   int4-g32-asym on x / scales, 20 steps, max shrink 0.5,
                   100 max tokens (stride 2 over 256)
  clip16.w         F32 [48, 128]  the same with 16 max tokens (fewer tokens
                   than group columns: retort's direct error path)
Run: python3 tests/reference/awq/make_fixtures.py (torch, safetensors).
"""
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "gptq"))
from make_fixtures import Scheme  # noqa: E402  (retort's rounding rule in torch)

TOKENS, COLS = 256, 128


def make_data():
    g = torch.Generator().manual_seed(99)
    x = torch.randn(TOKENS, COLS, generator=g)
    big = torch.randperm(COLS, generator=g)[:6]
    x[:, big] *= 20.0
    x = x + 0.5 * torch.randn(TOKENS, 1, generator=g)  # shared component
    w1 = torch.randn(48, COLS, generator=g) * 0.02
    w2 = torch.randn(32, COLS, generator=g) * 0.03
    return x.float(), w1.float(), w2.float()


def fake_quant(w, scheme):
    rows, cols = w.shape
    g = scheme.group or cols
    wg = w.reshape(rows, cols // g, g)
    s, z = scheme.params(wg.amin(-1), wg.amax(-1))
    q = scheme.quant(wg, s[..., None], z[..., None])
    return (s[..., None] * (q - z[..., None])).reshape(rows, cols)


def loss_of(x, ws, s, scheme):
    total = torch.zeros((), dtype=torch.float64)
    for w in ws:
        wq = fake_quant(w * s[None, :], scheme) / s[None, :]
        total += ((x.double() @ (w.double() - wq.double()).T) ** 2).sum()
    return total


def search_scales(x, ws, scheme, duo, grid=20):
    x_mean = (x.double().abs().sum(0) / x.shape[0]).float()
    g = scheme.group or x.shape[1]
    sums = torch.zeros(x.shape[1], dtype=torch.float64)
    rows = 0
    for w in ws:
        wg = w.reshape(-1, g).abs()
        norm = (wg / (wg.amax(dim=1, keepdim=True) + 1e-6)).reshape(w.shape)
        sums += norm.double().sum(0)
        rows += w.shape[0]
    w_mean = (sums / rows).float()
    best = torch.ones(x.shape[1])
    best_loss = rtn_loss = loss_of(x, ws, best, scheme)
    for i in range(grid):
        ratio = i / grid
        if duo:
            s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        else:
            s = x_mean.pow(ratio).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        s[~torch.isfinite(s)] = 1
        loss = loss_of(x, ws, s, scheme)
        if loss < best_loss:
            best_loss, best = loss, s.clone()
    return best, best_loss, rtn_loss


def clip(w, x, scheme, n_grid=20, max_shrink=0.5, max_tokens=100):
    rows, cols = w.shape
    g = scheme.group or cols
    step = max(1, x.shape[0] // max_tokens)
    xs = x[::step].double()
    out = w.clone()
    for k in range(cols // g):
        wk = w[:, k * g:(k + 1) * g]
        xk = xs[:, k * g:(k + 1) * g]
        amax = wk.abs().amax(dim=1)
        best_err = torch.full((rows,), float("inf"), dtype=torch.float64)
        best_max = amax.clone()
        for i in range(int(max_shrink * n_grid)):
            mv = amax * (1 - i / n_grid)
            cur = torch.maximum(torch.minimum(wk, mv[:, None]), -mv[:, None])
            s, z = scheme.params(cur.amin(1), cur.amax(1))
            q = scheme.quant(cur, s[:, None], z[:, None])
            d = (s[:, None] * (q - z[:, None])) - wk
            err = ((xk @ d.double().T) ** 2).sum(0)
            better = err < best_err
            best_err[better] = err[better]
            best_max[better] = mv[better]
        out[:, k * g:(k + 1) * g] = torch.maximum(torch.minimum(wk, best_max[:, None]),
                                                  -best_max[:, None])
    return out


def main():
    x, w1, w2 = make_data()
    out = {"x": x.contiguous(), "w1": w1.contiguous(), "w2": w2.contiguous()}
    cases = {
        "int4_g32_sym": (Scheme("int4", True, 32), True),
        "int4_g32_asym": (Scheme("int4", False, 32), True),
        "int4_g32_sym_noduo": (Scheme("int4", True, 32), False),
        "int4_channel_asym": (Scheme("int4", False, 0), True),
    }
    for name, (scheme, duo) in cases.items():
        s, loss, rtn = search_scales(x, [w1, w2], scheme, duo)
        out[f"{name}.scales"] = s.float().contiguous()
        out[f"{name}.loss"] = loss.reshape(1)
        out[f"{name}.rtn_loss"] = rtn.reshape(1)
        print(f"{name}: loss {loss.item():.6g} rtn {rtn.item():.6g}")
    s = out["int4_g32_asym.scales"]
    out["clip.w"] = clip(w1 * s[None, :], x / s[None, :], Scheme("int4", False, 32)).contiguous()
    out["clip16.w"] = clip(w1 * s[None, :], x / s[None, :], Scheme("int4", False, 32),
                           max_tokens=16).contiguous()
    save_file(out, os.path.join(HERE, "awq.safetensors"))


if __name__ == "__main__":
    main()
