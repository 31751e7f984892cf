#!/usr/bin/env python3
"""Writes the GGUF reference fixtures with gguf-py (the llama.cpp project's
Python writer) and fixtures.json, a description of each file from which the
C++ tests check our reader and rebuild every file byte for byte with our
writer.

Run from the repository root:  python3 tests/reference/gguf/make_fixtures.py
(gguf 0.19.0, numpy). Values are typed explicitly in the description because
JSON alone cannot tell u8 from i64.
"""
import importlib.metadata
import json
import os

import numpy as np
import gguf
from gguf import GGUFValueType as VT
from gguf import GGMLQuantizationType as QT

HERE = os.path.dirname(os.path.abspath(__file__))
TYPE_NAMES = {VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32",
              VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "string", VT.ARRAY: "array",
              VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64"}


def describe_array(items, elem):
    """JSON for an array value: {"elem", "value"}; nested arrays recurse with
    the element type gguf-py infers for them (i32, f32, bool, string; u8 for bytes)."""
    if elem != VT.ARRAY:
        return {"elem": TYPE_NAMES[elem], "value": list(items)}
    out = []
    for item in items:
        if isinstance(item, bytes):
            out.append(describe_array(list(item), VT.UINT8))
        else:
            out.append(describe_array(item, VT.get_type(item[0])))
    return {"elem": "array", "value": out}


# key, gguf value type, value, array element type
METADATA = [
    ("test.u8", VT.UINT8, 255, None),
    ("test.i8", VT.INT8, -128, None),
    ("test.u16", VT.UINT16, 65535, None),
    ("test.i16", VT.INT16, -32768, None),
    ("test.u32", VT.UINT32, 4294967295, None),
    ("test.i32", VT.INT32, -2147483648, None),
    ("test.f32", VT.FLOAT32, 0.1, None),  # rounds to the nearest f32
    ("test.bool_true", VT.BOOL, True, None),
    ("test.bool_false", VT.BOOL, False, None),
    ("test.string", VT.STRING, "h\u00e9llo \u2713 \"quoted\"\n<\uff5cUser\uff5c>", None),
    ("test.empty_string", VT.STRING, "", None),
    ("test.u64", VT.UINT64, 18446744073709551615, None),
    ("test.i64", VT.INT64, -9223372036854775808, None),
    ("test.f64", VT.FLOAT64, 3.141592653589793, None),
    ("test.arr_u8", VT.ARRAY, [0, 1, 255], VT.UINT8),
    ("test.arr_i8", VT.ARRAY, [-1, 2, -128], VT.INT8),
    ("test.arr_u16", VT.ARRAY, [65535, 7], VT.UINT16),
    ("test.arr_i16", VT.ARRAY, [-32768, 5], VT.INT16),
    ("test.arr_u32", VT.ARRAY, [4294967295, 0], VT.UINT32),
    ("test.arr_i32", VT.ARRAY, [1, -2, 3], VT.INT32),
    ("test.arr_f32", VT.ARRAY, [0.5, -1.25, 1e-3], VT.FLOAT32),
    ("test.arr_bool", VT.ARRAY, [True, False, True], VT.BOOL),
    ("test.arr_string", VT.ARRAY, ["a", "", "\u0120the", "<|endoftext|>"], VT.STRING),
    ("test.arr_u64", VT.ARRAY, [18446744073709551615, 1], VT.UINT64),
    ("test.arr_i64", VT.ARRAY, [-9223372036854775808, 9223372036854775807], VT.INT64),
    ("test.arr_f64", VT.ARRAY, [2.5, -0.1], VT.FLOAT64),
    ("test.nested_i32", VT.ARRAY, [[1, 2, 3], [4]], VT.ARRAY),
    ("test.nested_string", VT.ARRAY, [["x"], ["y", "z"]], VT.ARRAY),
    ("test.nested_u8", VT.ARRAY, [b"\x01\x02", b"\xff"], VT.ARRAY),
    ("test.nested_3", VT.ARRAY, [[[1.5], [2.5, 3.5]], [[-1.0]]], VT.ARRAY),
    ("tokenizer.ggml.model", VT.STRING, "gpt2", None),
]


def metadata_json(arch, entries, alignment=None):
    out = [{"key": "general.architecture", "type": "string", "value": arch}]
    for key, vtype, value, elem in entries:
        if key == "general.alignment":
            out.append({"key": key, "type": "u32", "value": value})
        elif vtype == VT.ARRAY:
            out.append({"key": key, "type": "array", **describe_array(value, elem)})
        else:
            out.append({"key": key, "type": TYPE_NAMES[vtype], "value": value})
    return out


def add_metadata(w, entries):
    for key, vtype, value, elem in entries:
        if key == "general.alignment":
            w.add_custom_alignment(value)
        else:
            # add_key_value directly: add_string/add_array skip empty values.
            w.add_key_value(key, value, vtype, sub_type=elem)


def make_tensor(kind, shape, rng):
    """Returns (array for gguf-py, raw_dtype or None, ggml type id)."""
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "F32":
        return x, None, QT.F32
    if kind == "F16":
        return x.astype(np.float16), None, QT.F16
    if kind == "BF16":
        bits = (x.view(np.uint32) + 0x7FFF + ((x.view(np.uint32) >> 16) & 1)) >> 16
        return bits.astype(np.uint16), QT.BF16, QT.BF16
    if kind == "I8":
        return rng.integers(-128, 128, shape).astype(np.int8), None, QT.I8
    if kind == "I32":
        return rng.integers(-2**31, 2**31, shape).astype(np.int32), None, QT.I32
    if kind == "F64":
        return x.astype(np.float64), None, QT.F64
    qt = {"Q8_0": QT.Q8_0, "Q4_0": QT.Q4_0}[kind]
    return gguf.quants.quantize(x, qt), qt, qt


FILES = [
    # name, arch, metadata entries, tensors (name, kind, row-major shape)
    ("all_types.gguf", "llama", METADATA, [
        ("token_embd.weight", "F16", (6, 8)),
        ("blk.0.attn_q.weight", "Q8_0", (4, 64)),
        ("blk.0.ffn_down.weight", "Q4_0", (3, 32)),
        ("blk.0.attn_norm.weight", "F32", (5,)),
        ("blk.0.attn_k.weight", "BF16", (2, 3, 4)),
        ("output.weight", "F32", (3, 5)),
    ]),
    ("aligned64.gguf", "qwen2", [
        ("general.name", VT.STRING, "tiny", None),
        ("general.alignment", VT.UINT32, 64, None),
        ("qwen2.block_count", VT.UINT32, 1, None),
    ], [
        ("a", "F32", (3,)),
        ("b", "Q8_0", (2, 32)),
        ("c", "F16", (5,)),
        ("d", "I32", (2, 2, 1, 3)),
    ]),
    # Alignment 1: tensors follow each other unpadded, so "f" is misaligned.
    ("aligned1.gguf", "llama", [
        ("general.alignment", VT.UINT32, 1, None),
    ], [
        ("e", "I8", (3,)),
        ("f", "F32", (2,)),
        ("g", "F64", (1,)),
    ]),
    ("metadata_only.gguf", "llama", [
        ("llama.context_length", VT.UINT32, 2048, None),
        ("tokenizer.ggml.tokens", VT.ARRAY, ["<s>", "</s>", "hi"], VT.STRING),
    ], []),
]


def read_back(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


def main():
    rng = np.random.default_rng(1234)
    description = {"generator": f"gguf-py {importlib.metadata.version('gguf')}",
                   "files": []}
    for fname, arch, entries, tensors in FILES:
        path = os.path.join(HERE, fname)
        w = gguf.GGUFWriter(path, arch)
        add_metadata(w, entries)
        tdesc = []
        for name, kind, shape in tensors:
            arr, raw_dtype, qt = make_tensor(kind, shape, rng)
            w.add_tensor(name, arr, raw_dtype=raw_dtype)
            tdesc.append({"name": name, "ggml_type": int(qt), "shape": list(shape), "data_hex": arr.tobytes().hex()})
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

        # Offsets as gguf-py's reader sees them, for the reader tests.
        r, by_name = read_back(path)
        for t in tdesc:
            rt = by_name[t["name"]]
            t["dims"] = [int(d) for d in rt.shape]  # innermost first, as stored
            t["offset"] = int(rt.data_offset - r.data_offset)
            t["nbytes"] = int(rt.n_bytes)
        description["files"].append({
            "file": fname, "arch": arch, "alignment": int(r.alignment), "data_offset": int(r.data_offset),
            "file_size": os.path.getsize(path), "metadata": metadata_json(arch, entries), "tensors": tdesc})
        assert [f["key"] for f in description["files"][-1]["metadata"]] == \
            [k for k in r.fields if not k.startswith("GGUF.")], fname

    with open(os.path.join(HERE, "fixtures.json"), "w") as f:
        json.dump(description, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
