#!/usr/bin/env python3
"""Makes the compressed-tensors sparsity fixtures with the compressed-tensors library itself.

Not run in CI: the outputs are committed. compressed-tensors 0.13+ dropped the sparse
compressors ("legacy formats"), so run it with the last release line that has them:
    python3 -m venv --system-site-packages /tmp/ct12 && /tmp/ct12/bin/pip install compressed-tensors==0.12.2
    /tmp/ct12/bin/python make_sparse_fixtures.py

Each case builds a small model (model.layers.0.self_attn.q_proj, bf16 [8, 20], plus a
dense bf16 lm_head that the config ignores), sets a pruned weight chosen here, and lets
the library's ModelCompressor compress it and write config.json. Outputs per case:
  <case>.safetensors   the compressed state dict exactly as the library made it
  <case>.dense.safetensors  "weight": the dense pruned q_proj weight (bf16) given to it
and sparse_configs.json: {case: the "quantization_config" object the library writes into
config.json}.
Cases:
  sparse_bitmask_50  sparse-bitmask, about half the entries zero, one all-zero row, a -0.0
                     (the library drops it: -0.0 != 0 is false) and 20 columns (the
                     bitmask row is padded to 3 bytes)
  sparse_24          sparse-24-bitmask, exactly 2 nonzeros in every group of 4 (with fewer,
                     the library's choice of zero positions follows torch.topk's tie order)
"""
import json
import os
import tempfile

import torch
from safetensors.torch import save_file

import compressed_tensors
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS, COLS = 8, 20


class Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(COLS, ROWS, bias=False)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attn()


class Inner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Layer()])


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = Inner()
        self.lm_head = torch.nn.Linear(COLS, 4, bias=False)


def unstructured_weight(gen):
    w = torch.randn(ROWS, COLS, generator=gen)
    keep = torch.rand(ROWS, COLS, generator=gen) >= 0.5
    w = w * keep
    w[3, :] = 0.0
    w[5, 7] = -0.0
    return w.to(torch.bfloat16)


def two_four_weight(gen):
    w = torch.randn(ROWS, COLS, generator=gen) + 0.1  # no accidental zeros
    w = w.reshape(-1, 4)
    keep = torch.zeros_like(w, dtype=torch.bool)
    for g in range(w.shape[0]):
        idx = torch.randperm(4, generator=gen)[:2]
        keep[g, idx] = True
    w = (w * keep).reshape(ROWS, COLS)
    return w.to(torch.bfloat16)


def make(case, sparsity_config, weight):
    model = Model().to(torch.bfloat16)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.copy_(weight)
        model.lm_head.weight.copy_(torch.linspace(-1, 1, 4 * COLS).reshape(4, COLS))
    mc = ModelCompressor(sparsity_config=sparsity_config)
    sd = mc.compress(model)
    sd = {k: v.contiguous() for k, v in sd.items()}
    save_file(sd, os.path.join(HERE, case + ".safetensors"))
    save_file({"weight": weight.contiguous()}, os.path.join(HERE, case + ".dense.safetensors"))
    with tempfile.TemporaryDirectory() as d:
        mc.update_config(d)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)["quantization_config"]
    # the library's own decompression gives back the dense weight
    comp = mc.sparsity_compressor
    prefix = "model.layers.0.self_attn.q_proj"
    data = {n: sd[prefix + "." + n] for n in comp.compression_param_names}
    back = comp.decompress_weight(data)
    assert torch.equal(back.float(), weight.float()), case
    for k, v in sd.items():
        print(case, k, v.dtype, list(v.shape))
    return cfg


def main():
    gen = torch.Generator().manual_seed(7)
    w50 = unstructured_weight(gen)
    w24 = two_four_weight(gen)
    sparsity50 = float((w50 == 0).sum()) / w50.numel()
    configs = {
        "sparse_bitmask_50": make(
            "sparse_bitmask_50",
            BitmaskConfig(global_sparsity=sparsity50, sparsity_structure="unstructured",
                          targets=["Linear"], ignore=["lm_head"]),
            w50),
        "sparse_24": make(
            "sparse_24",
            Sparse24BitMaskConfig(global_sparsity=0.5, sparsity_structure="2:4",
                                  targets=["Linear"], ignore=["lm_head"]),
            w24),
    }
    with open(os.path.join(HERE, "sparse_configs.json"), "w") as f:
        json.dump(configs, f, indent=2, sort_keys=True)
        f.write("\n")
    print("compressed-tensors", compressed_tensors.__version__)


if __name__ == "__main__":
    main()
