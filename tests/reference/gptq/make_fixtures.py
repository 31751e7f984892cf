#!/usr/bin/env python3
"""GPTQ reference fixtures for tests/quantize/gptq_test.cc.

A PyTorch GPTQ written from the paper (Frantar et al., 2022, Algorithm 1) in
the shape of the reference fasterquant loop: dead columns, dampening of
mean(diag H), U = cholesky(cholesky_inverse(cholesky(H)), upper=True), lazy
batches of 128 columns, group parameters computed when a group starts from the
error-updated weights, act-order by descending diag(H) with g_idx, static
groups. The rounding rule of one value is retort's (quantize/scheme.h, the
compressed-tensors observer: symmetric scale = absmax / 7.5 for int4, / 127.5
for int8, asymmetric (max - min) / 15 with a clamped zero, fp8 absmax / 448),
computed in f32 as retort does; the error propagation runs in f64.

Every case is also run through a plain column-by-column GPTQ (no lazy
batching) and must give the same quantized values: the lazy batches are only a
reordering of the same arithmetic.

Writes gptq.safetensors:
  x            F32 [256, 256]  calibration activations (correlated channels,
                               a few 10x channels, column 7 always zero)
  w            F32 [32, 256]   weights
  <case>.deq   F32 [32, 256]   dequantized GPTQ result
  <case>.loss  F64 [1]         sum of (w - q)^2 / U_jj^2 / 2
  <case>.g_idx I32 [256]       (act-order group cases)
Cases: int4_g64_sym, int4_g64_asym, int4_g64_sym_act, int4_g64_asym_act,
int4_g64_sym_act_static, int8_channel, int8_channel_act, fp8_channel.
Run: python3 tests/reference/gptq/make_fixtures.py (torch, safetensors).
"""
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS, COLS, TOKENS = 32, 256, 256
BLOCK = 128
DAMP = 0.01


def make_data():
    g = torch.Generator().manual_seed(1234)
    z = torch.randn(TOKENS, COLS, generator=g, dtype=torch.float64)
    # Mixing with decaying singular values: strongly correlated channels.
    mix = torch.randn(COLS, COLS, generator=g, dtype=torch.float64)
    u, _, v = torch.linalg.svd(mix)
    s = torch.logspace(0, -2, COLS, dtype=torch.float64)
    x = z @ (u * s) @ v.T
    scale = torch.ones(COLS, dtype=torch.float64)
    scale[torch.randperm(COLS, generator=g)[:8]] = 10.0
    x = x * scale * 3.0
    x[:, 7] = 0.0
    w = torch.randn(ROWS, COLS, generator=g, dtype=torch.float64) * 0.02
    w[3, 11] = 0.25  # an outlier weight
    return x.float(), w.float()


class Scheme:
    def __init__(self, kind, sym=True, group=0):
        self.kind, self.sym, self.group = kind, sym, group
        if kind == "int4":
            self.qmin, self.qmax = -8.0, 7.0
        elif kind == "int8":
            self.qmin, self.qmax = -128.0, 127.0
        else:
            self.qmin, self.qmax = -448.0, 448.0

    def params(self, lo, hi):
        """Per-row scale and zero (f32) of values spanning [lo, hi] (f32)."""
        lo = torch.clamp(lo, max=0.0)
        hi = torch.clamp(hi, min=0.0)
        if self.kind == "fp8" or self.sym:
            absmax = torch.maximum(-lo, hi)
            rng = self.qmax if self.kind == "fp8" else (self.qmax - self.qmin) / 2
            scale = absmax / torch.tensor(rng, dtype=torch.float32)
            ok = (scale > 0) & torch.isfinite(scale)
            return torch.where(ok, scale, torch.ones_like(scale)), torch.zeros_like(scale)
        scale = (hi - lo) / torch.tensor(self.qmax - self.qmin, dtype=torch.float32)
        ok = (hi != lo) & (scale > 0) & torch.isfinite(scale)
        scale = torch.where(ok, scale, torch.ones_like(scale))
        zero = torch.clamp(torch.round(self.qmin - lo / scale), self.qmin, self.qmax)
        return scale, torch.where(ok, zero, torch.zeros_like(zero))

    def quant(self, w, scale, zero):
        """Stored value (f32) of the f32 weights w under (scale, zero)."""
        x = w / scale
        if self.kind == "fp8":
            return torch.clamp(x, -448.0, 448.0).to(torch.float8_e4m3fn).float()
        return torch.clamp(torch.round(x) + zero, self.qmin, self.qmax)


def prepare(w, h, scheme, act_order, static_groups):
    w = w.double().clone()
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    cols = w.shape[1]
    fixed = None  # (scale, zero) [rows, cols] in natural order, or None
    if scheme.group == 0:  # channel: from the weights before GPTQ
        wf = w.float()
        s, z = scheme.params(wf.amin(1), wf.amax(1))
        fixed = (s[:, None].expand(-1, cols), z[:, None].expand(-1, cols))
    elif static_groups:
        wf = w.float()
        ss, zz = [], []
        for c0 in range(0, cols, scheme.group):
            seg = wf[:, c0:c0 + scheme.group]
            s, z = scheme.params(seg.amin(1), seg.amax(1))
            ss.append(s[:, None].expand(-1, scheme.group))
            zz.append(z[:, None].expand(-1, scheme.group))
        fixed = (torch.cat(ss, 1), torch.cat(zz, 1))
    perm = torch.arange(cols)
    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
    w = w[:, perm]
    h = h[perm][:, perm]
    if fixed is not None:
        fixed = (fixed[0][:, perm], fixed[1][:, perm])
    damp = DAMP * torch.mean(torch.diag(h))
    h = h + damp * torch.eye(cols, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    return w, u, perm, fixed


def quant_column(scheme, wcol, scale, zero):
    q = scheme.quant(wcol.float(), scale, zero)
    return q, (scale * (q - zero)).double()


def gptq_lazy(w, h, scheme, act_order=False, static_groups=False):
    w, u, perm, fixed = prepare(w, h, scheme, act_order, static_groups)
    rows, cols = w.shape
    deq = torch.zeros_like(w)
    loss = torch.zeros((), dtype=torch.float64)
    scale = zero = None
    for i1 in range(0, cols, BLOCK):
        i2 = min(i1 + BLOCK, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if fixed is not None:
                scale, zero = fixed[0][:, col], fixed[1][:, col]
            elif col % scheme.group == 0:
                assert col + scheme.group <= i2, "groups must sit inside a lazy block here"
                seg = w1[:, i:i + scheme.group].float()
                scale, zero = scheme.params(seg.amin(1), seg.amax(1))
            x = w1[:, i]
            _, dq = quant_column(scheme, x, scale, zero)
            deq[:, col] = dq
            d = u1[i, i]
            loss += ((x - dq) ** 2 / d ** 2).sum() / 2
            e = (x - dq) / d
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    invperm = torch.argsort(perm)
    g_idx = None
    if scheme.group and act_order and not static_groups:
        g_idx = (torch.arange(cols) // scheme.group)[invperm].to(torch.int32)
    return deq[:, invperm].float(), loss, g_idx


def gptq_plain(w, h, scheme, act_order=False, static_groups=False):
    """Algorithm 1 without lazy batching: every column updates the rest at once."""
    w, u, perm, fixed = prepare(w, h, scheme, act_order, static_groups)
    cols = w.shape[1]
    deq = torch.zeros_like(w)
    scale = zero = None
    for j in range(cols):
        if fixed is not None:
            scale, zero = fixed[0][:, j], fixed[1][:, j]
        elif j % scheme.group == 0:
            seg = w[:, j:j + scheme.group].float()
            scale, zero = scheme.params(seg.amin(1), seg.amax(1))
        _, dq = quant_column(scheme, w[:, j], scale, zero)
        deq[:, j] = dq
        e = (w[:, j] - dq) / u[j, j]
        w[:, j + 1:] -= e[:, None] * u[j, j + 1:][None, :]
    return deq[:, torch.argsort(perm)].float()


def main():
    x, w = make_data()
    h = 2.0 / TOKENS * (x.double().T @ x.double())
    out = {"x": x.contiguous(), "w": w.contiguous()}
    cases = {
        "int4_g64_sym": (Scheme("int4", True, 64), False, False),
        "int4_g64_asym": (Scheme("int4", False, 64), False, False),
        "int4_g64_sym_act": (Scheme("int4", True, 64), True, False),
        "int4_g64_asym_act": (Scheme("int4", False, 64), True, False),
        "int4_g64_sym_act_static": (Scheme("int4", True, 64), True, True),
        "int8_channel": (Scheme("int8", True, 0), False, False),
        "int8_channel_act": (Scheme("int8", True, 0), True, False),
        "fp8_channel": (Scheme("fp8", True, 0), False, False),
    }
    for name, (scheme, act, static) in cases.items():
        deq, loss, g_idx = gptq_lazy(w, h, scheme, act, static)
        plain = gptq_plain(w, h, scheme, act, static)
        assert torch.equal(deq, plain), f"{name}: lazy and plain GPTQ differ"
        out[f"{name}.deq"] = deq.contiguous()
        out[f"{name}.loss"] = loss.reshape(1)
        if g_idx is not None:
            out[f"{name}.g_idx"] = g_idx.contiguous()
        print(f"{name}: loss {loss.item():.6g}")
    save_file(out, os.path.join(HERE, "gptq.safetensors"))


if __name__ == "__main__":
    main()
