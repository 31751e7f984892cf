#!/usr/bin/env python3
"""Makes the compressed-tensors fixtures with the compressed-tensors library itself.

Not run in CI: the outputs are committed. Run it in a throwaway venv that sees the
system torch, e.g.
    python3 -m venv --system-site-packages /tmp/ct && /tmp/ct/bin/pip install compressed-tensors==0.20.0
    /tmp/ct/bin/python make_ct_fixtures.py            # every scheme except act-order
    python3 -m venv --system-site-packages /tmp/ct12 && /tmp/ct12/bin/pip install compressed-tensors==0.12.2
    /tmp/ct12/bin/python make_ct_fixtures.py --actorder  # int4 g32 act-order (weight_g_idx)
(compressed-tensors 0.20 removed actorder="group" and weight_g_idx; vLLM still loads them,
so the act-order fixture comes from the last release line that wrote them.)

For each case the script builds a one-layer model (module model.layers.0.self_attn.q_proj,
bf16, plus an unquantized bf16 lm_head), lets the library initialise the quantization
parameters, overwrites the scales / zero points / g_idx with values chosen here, and lets
the library's ModelCompressor compress it. Outputs per case:
  <case>.safetensors      the compressed state dict, exactly as the library made it
  <case>.ref.safetensors  q (the library's quantized values: I8 for int, F8_E4M3 for fp8),
                          scale (F32), zero_point (I8, asymmetric only), g_idx (I32,
                          act-order only), dequantized (F32: the library's own decompression,
                          computed in the scale dtype bf16 and widened exactly)
and quantization_configs.json: {case: the quantization_config object the library writes
into config.json}, each checked by loading it back into the library's pydantic
QuantizationConfig. config.json is the whole config.json for int4_g128_sym (W4A16).
"""
import argparse
import json
import os
import tempfile

import torch
from safetensors.torch import save_file

import compressed_tensors
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    apply_quantization_config,
)
from compressed_tensors.compressors import ModelCompressor

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "model.layers.0.self_attn.q_proj"


class Attn(torch.nn.Module):
    def __init__(self, rows, cols):
        super().__init__()
        self.q_proj = torch.nn.Linear(cols, rows, bias=False)


class Layer(torch.nn.Module):
    def __init__(self, rows, cols):
        super().__init__()
        self.self_attn = Attn(rows, cols)


class Inner(torch.nn.Module):
    def __init__(self, rows, cols):
        super().__init__()
        self.layers = torch.nn.ModuleList([Layer(rows, cols)])


class Tiny(torch.nn.Module):
    def __init__(self, rows, cols):
        super().__init__()
        self.model = Inner(rows, cols)
        self.lm_head = torch.nn.Linear(rows, 8, bias=False)


def int_args(bits, strategy, group_size=None, symmetric=True, actorder=None):
    kw = dict(num_bits=bits, type="int", symmetric=symmetric, strategy=strategy, dynamic=False)
    if group_size is not None:
        kw["group_size"] = group_size
    if actorder is not None:
        kw["actorder"] = actorder
    return QuantizationArgs(**kw)


def fp8_args(strategy, block=None):
    kw = dict(num_bits=8, type="float", symmetric=True, strategy=strategy, dynamic=False)
    if block is not None:
        kw["block_structure"] = block
    return QuantizationArgs(**kw)


FP8_DYNAMIC_TOKEN = dict(num_bits=8, type="float", symmetric=True, strategy="token", dynamic=True)
FP8_STATIC_TENSOR = dict(num_bits=8, type="float", symmetric=True, strategy="tensor", dynamic=False)
FP8_DYNAMIC_GROUP128 = dict(num_bits=8, type="float", symmetric=True, strategy="group",
                            group_size=128, dynamic=True)

# name: (rows, cols, weights args, input activation args or None)
CASES = {
    "int4_g32_sym": (20, 256, lambda: int_args(4, "group", 32), None),
    "int4_g32_asym": (20, 256, lambda: int_args(4, "group", 32, symmetric=False), None),
    "int4_g128_sym": (20, 256, lambda: int_args(4, "group", 128), None),
    "int4_g128_asym": (20, 256, lambda: int_args(4, "group", 128, symmetric=False), None),
    "int8_channel_sym": (20, 64, lambda: int_args(8, "channel"), None),
    "int8_channel_asym": (20, 64, lambda: int_args(8, "channel", symmetric=False), None),
    "fp8_channel": (20, 64, lambda: fp8_args("channel"), FP8_DYNAMIC_TOKEN),            # FP8_DYNAMIC
    "fp8_channel_w8a16": (20, 64, lambda: fp8_args("channel"), None),                   # weight-only
    "fp8_tensor": (20, 64, lambda: fp8_args("tensor"), FP8_STATIC_TENSOR),              # FP8 (static)
    "fp8_block128": (144, 320, lambda: fp8_args("block", [128, 128]), FP8_DYNAMIC_GROUP128),  # FP8_BLOCK
}
ACTORDER_CASES = {
    "int4_g32_actorder": (20, 256, lambda: int_args(4, "group", 32, actorder="group"), None),
}


def bf16(x):
    return x.to(torch.bfloat16)


def make_case(name, rows, cols, wargs, aargs, gen):
    model = Tiny(rows, cols).to(torch.bfloat16)
    scheme = QuantizationScheme(
        targets=["Linear"], weights=wargs,
        input_activations=QuantizationArgs(**aargs) if aargs is not None else None)
    config = QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"],
                                quantization_status="frozen")
    apply_quantization_config(model, config)
    lin = model.model.layers[0].self_attn.q_proj
    is_fp8 = wargs.type == "float"
    scale_shape = tuple(lin.weight_scale.shape)

    with torch.no_grad():
        if is_fp8:
            w = torch.randn(rows, cols, generator=gen) * 0.05
            # a few outliers so some values saturate / land near the top of the range
            w[0, :4] = torch.tensor([0.9, -0.7, 0.5, -0.45])
            if wargs.strategy == "tensor":
                scale = bf16(w.abs().max() / 448.0).reshape(1)
            elif wargs.strategy == "channel":
                scale = bf16(w.abs().amax(dim=1, keepdim=True) / 448.0)
            else:  # block 128x128, ragged edges
                b = 128
                s = torch.empty(scale_shape)
                for i in range(scale_shape[0]):
                    for j in range(scale_shape[1]):
                        s[i, j] = w[i * b:(i + 1) * b, j * b:(j + 1) * b].abs().max() / 448.0
                scale = bf16(s)
            # push a few values past the range so the library's clamp shows up
            scale = bf16(scale.float() * 0.9)
            lin.weight.copy_(bf16(w))
            lin.weight_scale.copy_(scale)
        else:
            bits = wargs.num_bits
            qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            scale = bf16(0.002 + 0.01 * torch.rand(scale_shape, generator=gen))
            if wargs.symmetric:
                zero = torch.zeros(scale_shape, dtype=torch.int8)
            else:
                zero = torch.randint(qmin // 2, qmax // 2 + 1, scale_shape, generator=gen).to(torch.int8)
            if wargs.strategy == "group":
                gs = wargs.group_size
                if getattr(wargs, "actorder", None) is not None:
                    perm = torch.randperm(cols, generator=gen)
                    g_idx = (perm // gs).to(torch.int32)
                else:
                    g_idx = (torch.arange(cols) // gs).to(torch.int32)
                s_full = scale.float()[:, g_idx.long()]
                z_full = zero.float()[:, g_idx.long()]
            else:
                g_idx = None
                s_full = scale.float().expand(rows, cols)
                z_full = zero.float().expand(rows, cols)
            q = torch.randint(qmin, qmax + 1, (rows, cols), generator=gen).float()
            # off-grid weights (round-to-nearest decides) and some clamped ones
            noise = (torch.rand(rows, cols, generator=gen) - 0.5) * 0.8
            w = s_full * (q - z_full + noise)
            w[1, :3] = s_full[1, :3] * (qmax + 3 - z_full[1, :3])
            lin.weight.copy_(bf16(w))
            lin.weight_scale.copy_(scale)
            if hasattr(lin, "weight_zero_point"):
                lin.weight_zero_point.copy_(zero.to(lin.weight_zero_point.dtype))
            if hasattr(lin, "weight_g_idx"):
                lin.weight_g_idx.copy_(g_idx)
        if hasattr(lin, "input_scale"):
            lin.input_scale.fill_(0.0123)

    scheme = lin.quantization_scheme
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(HERE, name + ".safetensors"), metadata={"format": "pt"})

    # The library's own decompression of the saved checkpoint.
    decomp = ModelCompressor.from_pretrained_model
    with tempfile.TemporaryDirectory() as d:
        compressor.update_config(d)
        with open(os.path.join(d, "config.json")) as f:
            qc = json.load(f)["quantization_config"]
    compressor.decompress_model(model)
    lin = model.model.layers[0].self_attn.q_proj
    dequant = lin.weight.detach().float()

    ref = {"dequantized": dequant.contiguous(),
           "scale": state[MODULE + ".weight_scale"].float().contiguous()}
    if is_fp8:
        ref["q"] = state[MODULE + ".weight"].contiguous()
    else:
        ref["q"] = unpack_ints(state, scheme, rows, cols)
        if not wargs.symmetric:
            ref["zero_point"] = zero.contiguous()
        if getattr(wargs, "actorder", None) is not None:
            ref["g_idx"] = g_idx.contiguous()
    save_file(ref, os.path.join(HERE, name + ".ref.safetensors"),
              metadata={"dequantized_dtype": "bfloat16",
                        "compressed_tensors": compressed_tensors.__version__})
    # load it back with the library's schema
    check = dict(qc)
    for k in ("version", "sparsity_config", "transform_config"):
        check.pop(k, None)
    QuantizationConfig.model_validate(check)
    print(name, {k: (tuple(v.shape), str(v.dtype)) for k, v in state.items()})
    return qc


def unpack_ints(state, scheme, rows, cols):
    """The library's unpacking of weight_packed (the values it quantized)."""
    try:
        from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    except ImportError:  # 0.12
        from compressed_tensors.compressors.quantized_compressors.pack_quantized import unpack_from_int32
    return unpack_from_int32(state[MODULE + ".weight_packed"], scheme.weights.num_bits,
                             torch.Size([rows, cols])).contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--actorder", action="store_true")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(1234 if not args.actorder else 4321)
    cases = ACTORDER_CASES if args.actorder else CASES
    path = os.path.join(HERE, "quantization_configs.json")
    configs = {}
    if os.path.exists(path):
        with open(path) as f:
            configs = json.load(f)
    for name, (rows, cols, wargs, aargs) in cases.items():
        configs[name] = make_case(name, rows, cols, wargs(), aargs, gen)
    with open(path, "w") as f:
        json.dump(dict(sorted(configs.items())), f, indent=2, sort_keys=True)
        f.write("\n")
    if not args.actorder:
        full = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "quantization_config": configs["int4_g128_sym"]}
        with open(os.path.join(HERE, "config.json"), "w") as f:
            json.dump(full, f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
