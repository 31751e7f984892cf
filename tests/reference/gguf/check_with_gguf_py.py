#!/usr/bin/env python3
"""Loads a GGUF file with gguf-py's GGUFReader and prints what it sees as one
JSON object, for tests/formats/gguf_test.cc to compare with what our writer
was given:

  {"version", "alignment", "data_offset",
   "metadata": [{"key", "types": ["array", "i32"], "contents": ...}],   # file order
   "tensors": [{"name", "ggml_type", "dims" (innermost first), "n_bytes",
                "offset" (relative to the data section), "data_hex"}]}

gguf-py flattens nested arrays: "contents" then lists their leaves in order.
Exits non-zero (with the Python error on stderr) if gguf-py cannot load the file.
Usage: check_with_gguf_py.py FILE.gguf
"""
import json
import sys

import gguf
from gguf import GGUFValueType as VT

TYPE_NAMES = {VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32",
              VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "string", VT.ARRAY: "array",
              VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64"}


def main(path):
    r = gguf.GGUFReader(path)
    out = {"version": int(r.fields["GGUF.version"].contents()), "alignment": int(r.alignment),
           "data_offset": int(r.data_offset), "metadata": [], "tensors": []}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        contents = field.contents()
        if field.types and field.types[0] == VT.ARRAY and field.types[-1] == VT.ARRAY:
            contents = []  # an empty nested array: no leaves
        out["metadata"].append({"key": key, "types": [TYPE_NAMES[t] for t in field.types], "contents": contents})
    for t in r.tensors:
        out["tensors"].append({"name": t.name, "ggml_type": int(t.tensor_type), "dims": [int(d) for d in t.shape],
                               "n_bytes": int(t.n_bytes), "offset": int(t.data_offset - r.data_offset),
                               "data_hex": t.data.tobytes().hex()})
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
