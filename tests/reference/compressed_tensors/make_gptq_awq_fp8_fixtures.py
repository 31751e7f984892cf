#!/usr/bin/env python3
"""GPTQ, AWQ and DeepSeek-V3 FP8 checkpoint fixtures.

Not run in CI (outputs are committed); needs numpy, torch (for float8 and saving) and
safetensors. The packers below are hand-written from the documented layouts (no GPTQ/AWQ
package is installed here); each case also stores the dequantized weight computed from
the *unsigned* stored values with the formats' own formula, so a reader that gets the
packing or the zero offset wrong does not match:
  GPTQ (AutoGPTQ / GPTQModel, "checkpoint_format" gptq = v1):
    qweight I32 [cols * bits / 32, rows]: input column c of output row r is in
      qweight[c // (32 / bits), r] at bit (c % (32 / bits)) * bits, low bits first
    qzeros  I32 [groups, rows * bits / 32]: zero of (group g, row r) in
      qzeros[g, r // (32 / bits)] at bit (r % (32 / bits)) * bits; v1 stores zero - 1
      (so symmetric 4-bit zeros 8 are stored as 7), gptq_v2 stores zero itself
    scales  F16 [groups, rows]; g_idx I32 [cols] (group of each input column)
    w[r, c] = scales[g_idx[c], r] * (q[r, c] - zero[g_idx[c], r])
  AWQ (AutoAWQ "gemm" version):
    qweight I32 [cols, rows / 8]: packed along the output dim, nibble i of word
      qweight[c, j] holds output row 8 j + ORDER[i], ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
    qzeros  I32 [groups, rows / 8], same order, zeros stored as they are
    scales  F16 [groups, rows]; w[r, c] = scales[c // gs, r] * (q[r, c] - zero[c // gs, r])
  DeepSeek-V3 FP8 (quant_method "fp8", weight_block_size [128, 128]):
    weight F8_E4M3 [rows, cols], weight_scale_inv F32 [ceil(rows/128), ceil(cols/128)],
    w = float(weight) * weight_scale_inv[r // 128, c // 128] (its fp8_cast_bf16.py)
Outputs per case: <case>.safetensors (checkpoint tensors under MODULE), <case>.json (the
config.json quantization_config), <case>.ref.safetensors (q and zero_point in retort's
signed convention, scale F32, g_idx when act-order, dequantized F32).
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "model.layers.0.mlp.down_proj"
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_along_rows(vals_u, bits):
    """[n, m] unsigned -> I32 [n * bits / 32, m], element i of each word at bit i * bits."""
    per = 32 // bits
    n, m = vals_u.shape
    out = np.zeros((n // per, m), dtype=np.uint32)
    for i in range(per):
        out |= vals_u[i::per, :].astype(np.uint32) << np.uint32(i * bits)
    return out.view(np.int32)


def pack_along_cols(vals_u, bits, order=None):
    """[n, m] unsigned -> I32 [n, m * bits / 32]; nibble i holds element order[i]."""
    per = 32 // bits
    order = order or list(range(per))
    n, m = vals_u.shape
    out = np.zeros((n, m // per), dtype=np.uint32)
    for i in range(per):
        out |= vals_u[:, order[i]::per].astype(np.uint32) << np.uint32(i * bits)
    return out.view(np.int32)


def f16(x):
    return x.astype(np.float16)


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def save_case(name, tensors, qconfig, ref):
    save_file({MODULE + "." + k: t(v) for k, v in tensors.items()},
              os.path.join(HERE, name + ".safetensors"), metadata={"format": "pt"})
    save_file({k: t(v) for k, v in ref.items()}, os.path.join(HERE, name + ".ref.safetensors"))
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump({"quantization_config": qconfig}, f, indent=2, sort_keys=True)
        f.write("\n")


def gptq_case(name, rng, rows, cols, bits, group_size, desc_act, sym, fmt):
    half = 1 << (bits - 1)
    gs = cols if group_size == -1 else group_size
    groups = cols // gs
    q_u = rng.integers(0, 1 << bits, size=(rows, cols), dtype=np.int64)
    scales = f16(0.001 + 0.01 * rng.random((groups, rows), dtype=np.float32))
    if sym:
        zeros_u = np.full((groups, rows), half, dtype=np.int64)
    else:
        zeros_u = rng.integers(1, 1 << bits, size=(groups, rows), dtype=np.int64)
    if desc_act:
        g_idx = (rng.permutation(cols) // gs).astype(np.int32)
    else:
        g_idx = (np.arange(cols) // gs).astype(np.int32)
    stored_zeros = zeros_u - 1 if fmt == "gptq" else zeros_u
    tensors = {
        "qweight": pack_along_rows(q_u.T.copy(), bits),          # [cols*bits/32, rows]
        "qzeros": pack_along_cols(stored_zeros, bits),            # [groups, rows*bits/32]
        "scales": scales,
        "g_idx": g_idx,
    }
    s_rc = scales.astype(np.float32)[g_idx, :].T                  # [rows, cols]
    z_rc = zeros_u[g_idx, :].T
    dequant = (s_rc * (q_u - z_rc).astype(np.float32)).astype(np.float32)
    ref = {"q": (q_u - half).astype(np.int8), "scale": scales.astype(np.float32).T.copy(),
           "dequantized": dequant}
    if not sym:
        ref["zero_point"] = (zeros_u - half).astype(np.int8).T.copy()
    if desc_act:
        ref["g_idx"] = g_idx
    qconfig = {"quant_method": "gptq", "bits": bits, "group_size": group_size,
               "desc_act": desc_act, "sym": sym, "damp_percent": 0.01,
               "static_groups": False, "true_sequential": True, "checkpoint_format": fmt}
    save_case(name, tensors, qconfig, ref)


def awq_case(name, rng, rows, cols, group_size):
    groups = cols // group_size
    q_u = rng.integers(0, 16, size=(rows, cols), dtype=np.int64)
    zeros_u = rng.integers(0, 16, size=(groups, rows), dtype=np.int64)
    scales = f16(0.001 + 0.01 * rng.random((groups, rows), dtype=np.float32))
    tensors = {
        "qweight": pack_along_cols(q_u.T.copy(), 4, AWQ_ORDER),   # [cols, rows/8]
        "qzeros": pack_along_cols(zeros_u, 4, AWQ_ORDER),         # [groups, rows/8]
        "scales": scales,
    }
    g = np.arange(cols) // group_size
    dequant = (scales.astype(np.float32)[g, :].T * (q_u - zeros_u[g, :].T).astype(np.float32))
    ref = {"q": (q_u - 8).astype(np.int8), "scale": scales.astype(np.float32).T.copy(),
           "zero_point": (zeros_u - 8).astype(np.int8).T.copy(),
           "dequantized": dequant.astype(np.float32)}
    qconfig = {"quant_method": "awq", "bits": 4, "group_size": group_size,
               "zero_point": True, "version": "gemm", "modules_to_not_convert": None}
    save_case(name, tensors, qconfig, ref)


def deepseek_case(name, rng, rows, cols):
    b = 128
    w = torch.from_numpy(rng.standard_normal((rows, cols), dtype=np.float32) * 100)
    q = w.to(torch.float8_e4m3fn)
    sr, sc = -(-rows // b), -(-cols // b)
    scale_inv = (0.0005 + 0.001 * rng.random((sr, sc), dtype=np.float32)).astype(np.float32)
    s_full = torch.from_numpy(np.repeat(np.repeat(scale_inv, b, 0), b, 1)[:rows, :cols])
    dequant = (q.float() * s_full).numpy().astype(np.float32)
    save_file({MODULE + ".weight": q.contiguous(), MODULE + ".weight_scale_inv": t(scale_inv)},
              os.path.join(HERE, name + ".safetensors"), metadata={"format": "pt"})
    save_file({"q": q.contiguous(), "scale": t(scale_inv), "dequantized": t(dequant),
               "dequantized_bf16": torch.from_numpy(dequant).to(torch.bfloat16)},
              os.path.join(HERE, name + ".ref.safetensors"))
    qconfig = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
               "weight_block_size": [128, 128]}
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump({"quantization_config": qconfig}, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    rng = np.random.default_rng(20240607)
    gptq_case("gptq_4bit_g32_sym", rng, 24, 64, 4, 32, False, True, "gptq")
    gptq_case("gptq_4bit_g32_actorder", rng, 24, 64, 4, 32, True, True, "gptq")
    gptq_case("gptq_8bit_g32_sym", rng, 24, 64, 8, 32, False, True, "gptq")
    gptq_case("gptq_4bit_channel_sym", rng, 24, 64, 4, -1, False, True, "gptq")
    gptq_case("gptq_v2_4bit_g32_asym", rng, 24, 64, 4, 32, False, False, "gptq_v2")
    awq_case("awq_4bit_g32", rng, 24, 64, 32)
    deepseek_case("deepseek_fp8_block", rng, 144, 320)


if __name__ == "__main__":
    main()
