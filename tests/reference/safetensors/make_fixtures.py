#!/usr/bin/env python3
"""Writes the safetensors fixtures that tests/formats/ read.

Run from the repository root:  python3 tests/reference/safetensors/make_fixtures.py
Needs numpy, ml_dtypes, torch (CPU) and safetensors; CI never runs it, the
outputs are committed. Outputs (all tiny):

  all_dtypes.safetensors     one tensor per dtype python safetensors writes,
                             random values (seed 0), metadata {"format": "pt"}
  all_dtypes.expected.json   per tensor: dtype, shape, hex of the raw bytes and
                             the values as float (exact f32/f64 values)
  formula.safetensors        tensors whose values follow a formula that the C++
                             test recomputes: v_i = ((7 i) mod 11 - 5) / 2
                             (exact in every float type), cast per dtype; our
                             writer must produce these bytes exactly
  no_metadata.safetensors    two tensors, written without metadata
  hf_sharded/                config.json, model.safetensors.index.json (as
                             transformers writes it: indent 2, sorted keys)
                             and two shards
"""
import json
import os

import ml_dtypes
import numpy as np
import torch
from safetensors.torch import save

OUT = os.path.dirname(os.path.abspath(__file__))

# safetensors name -> (numpy dtype for values, torch dtype for writing)
DTYPES = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (ml_dtypes.bfloat16, torch.bfloat16),
    "F8_E4M3": (ml_dtypes.float8_e4m3fn, torch.float8_e4m3fn),
    "F8_E5M2": (ml_dtypes.float8_e5m2, torch.float8_e5m2),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
    "I16": (np.int16, torch.int16),
    "I8": (np.int8, torch.int8),
    "U8": (np.uint8, torch.uint8),
    "U16": (np.uint16, torch.uint16),
    "U32": (np.uint32, torch.uint32),
    "U64": (np.uint64, torch.uint64),
    "BOOL": (np.bool_, torch.bool),
}
FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def to_torch(arr, torch_dtype):
    raw = bytearray(np.ascontiguousarray(arr).tobytes())
    if not raw:
        return torch.empty(arr.shape, dtype=torch_dtype)
    return torch.frombuffer(raw, dtype=torch_dtype).reshape(arr.shape).clone()


def write(path, tensors, metadata):
    data = save({k: to_torch(a, DTYPES[d][1]) for k, (d, a) in tensors.items()}, metadata=metadata)
    with open(path, "wb") as f:
        f.write(data)


def random_values(rng, name, shape):
    np_dtype = DTYPES[name][0]
    if name == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if name in FLOATS:
        return (rng.standard_normal(size=shape) * 3).astype(np.float32).astype(np_dtype)
    info = np.iinfo(np_dtype)
    lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
    return rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64 if info.min < 0 else np.uint64).astype(np_dtype)


def all_dtypes():
    rng = np.random.default_rng(0)
    shapes = [(2, 3), (5,), (3, 1, 2), (4,), (2, 2), (7,), (1, 3), (6,), (2, 5), (3,), (4, 2), (2,), (3, 3), (1,), (2, 4)]
    tensors, expected = {}, {}
    for (name, _), shape in zip(DTYPES.items(), shapes):
        arr = random_values(rng, name, shape)
        key = "t_" + name.lower()
        tensors[key] = (name, arr)
        if name == "BOOL":
            values = [1.0 if v else 0.0 for v in arr.ravel()]
        else:
            values = [float(v) for v in arr.ravel()]
        expected[key] = {"dtype": name, "shape": list(shape), "hex": arr.tobytes().hex(), "values": values}
    write(os.path.join(OUT, "all_dtypes.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(OUT, "all_dtypes.expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


def formula(name, shape):
    n = int(np.prod(shape)) if shape else 1
    v = np.array([((7 * i) % 11 - 5) / 2 for i in range(n)], dtype=np.float64).reshape(shape)
    if name == "BOOL":
        return (v > 0)
    if name in FLOATS:
        return v.astype(DTYPES[name][0])
    if name.startswith("U"):
        return (v * 2 + 5).astype(DTYPES[name][0])  # 0..10
    return (v * 2).astype(DTYPES[name][0])  # -5..5


# Kept in sync with FormulaTensors() in tests/formats/safetensors_test.cc.
FORMULA = [
    ("embed.weight", "BF16", (4, 3)),
    ("norm.weight", "F32", (3,)),
    ("scalar", "F64", ()),
    ("empty", "F16", (0, 3)),
    ("q.weight", "F8_E4M3", (2, 5)),
    ("k.weight", "F8_E5M2", (3,)),
    ("ids", "I64", (2, 2)),
    ("mask", "BOOL", (5,)),
    ("small", "I8", (3,)),
    ("u16", "U16", (2,)),
    ("i32", "I32", (1, 2)),
    ("h", "F16", (2, 2)),
]


def formula_file():
    tensors = {name: (d, formula(d, shape)) for name, d, shape in FORMULA}
    write(os.path.join(OUT, "formula.safetensors"), tensors, {"format": "pt"})


def no_metadata():
    tensors = {"b": ("F32", np.arange(4, dtype=np.float32)), "a": ("U8", np.arange(3, dtype=np.uint8))}
    write(os.path.join(OUT, "no_metadata.safetensors"), tensors, None)


def hf_sharded():
    d = os.path.join(OUT, "hf_sharded")
    os.makedirs(d, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4,
              "num_hidden_layers": 1, "vocab_size": 6, "torch_dtype": "bfloat16"}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    shards = {
        "model-00001-of-00002.safetensors": {
            "model.embed_tokens.weight": ("BF16", formula("BF16", (6, 4))),
            "model.norm.weight": ("F32", formula("F32", (4,))),
        },
        "model-00002-of-00002.safetensors": {
            "lm_head.weight": ("BF16", formula("BF16", (6, 4))),
        },
    }
    weight_map, total = {}, 0
    for fname, tensors in shards.items():
        write(os.path.join(d, fname), tensors, {"format": "pt"})
        for k, (_, a) in tensors.items():
            weight_map[k] = fname
            total += a.nbytes
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    all_dtypes()
    formula_file()
    no_metadata()
    hf_sharded()
