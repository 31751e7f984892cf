#!/usr/bin/env python3
"""k-quant encoder references from ggml itself (gguf-py has no k-quant encoder).

Uses the PyPI package ggml-python (0.0.45; pip builds its bundled ggml from the
sdist) and calls ggml_quantize_chunk on the rows of encode_input.bin (written
by make_fixtures.py). Writes, for Q2_K..Q6_K:
  ggml_encode_<TYPE>.bin          without importance (ggml's *_ref quantizers)
  ggml_encode_<TYPE>_imatrix.bin  with the importance vector in ggml_imatrix.bin
each as u32 rows, u32 row_bytes, bytes; ggml_imatrix.bin is cols f32.
Our Q3_K and Q6_K encoders reproduce the first kind byte for byte; for the
others tests/quantize/gguf_quants_test.cc compares reconstruction error.

Run: pip install ggml-python==0.0.45; python3 make_ggml_fixtures.py
"""
import ctypes
import os
import struct
import warnings

import numpy as np
import ggml

HERE = os.path.dirname(os.path.abspath(__file__))


def quantize(x, type_name, imatrix=None):
    t = getattr(ggml, "GGML_TYPE_" + type_name)
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = x.shape
    ggml.ggml_quantize_init(t)
    size = ggml.ggml_row_size(t, cols) * rows
    out = (ctypes.c_uint8 * size)()
    imp = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        imp = imatrix.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    written = ggml.ggml_quantize_chunk(t, x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                       ctypes.cast(out, ctypes.c_void_p), 0, rows, cols, imp)
    assert written == size, (written, size)
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(rows, -1)


def main():
    with open(os.path.join(HERE, "encode_input.bin"), "rb") as f:
        raw = f.read()
    rows, cols = struct.unpack("<II", raw[:8])
    x = np.frombuffer(raw[8:], dtype="<f4").reshape(rows, cols)
    imatrix = (np.random.default_rng(5).normal(size=cols) ** 2).astype(np.float32)
    imatrix.astype("<f4").tofile(os.path.join(HERE, "ggml_imatrix.bin"))
    for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
        for suffix, imp in (("", None), ("_imatrix", imatrix)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = quantize(x, name, imp)
            with open(os.path.join(HERE, f"ggml_encode_{name}{suffix}.bin"), "wb") as f:
                f.write(struct.pack("<II", *q.shape))
                f.write(q.tobytes())


if __name__ == "__main__":
    main()
