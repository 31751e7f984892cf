#!/usr/bin/env python3
"""Fixtures for tests/core/ggml_blocks_test.cc and tests/quantize/gguf_quants_test.cc.

Decode fixtures (decode_<TYPE>.bin): random but valid blocks of each ggml type
(random bytes for the quants, random finite f16 scales) and gguf-py's
`gguf.quants.dequantize` of them. gguf-py 0.19 has no Q8_1 / Q8_K decoder; for
those two the expected values are computed here as ggml defines them
(x = d * q in f32), which makes them a layout check rather than a reference.
Layout: u32 n_blocks, u32 block_bytes, blocks, then n_blocks * block_elems f32.

Encode fixtures: encode_input.bin holds f32 rows (u32 rows, u32 cols, data):
random rows plus edge rows (zeros, constants, huge and tiny magnitudes, a single
outlier, ties); encode_<TYPE>.bin holds `gguf.quants.quantize(rows, TYPE)`
(u32 rows, u32 row_bytes, data).

Run: python3 tests/reference/ggml_blocks/make_fixtures.py (numpy, gguf==0.19.0).
"""
import os
import struct
import warnings

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))

# gguf-py's table still says 40 bytes for Q8_1 (the old float d, s layout);
# ggml's block_q8_1 is two f16 and 32 int8 = 36 bytes, which is what we use.
BLOCK_SIZES = dict(GGML_QUANT_SIZES)
BLOCK_SIZES[T.Q8_1] = (32, 36)
rng = np.random.default_rng(20240603)


def finite_f16(n):
    """Random finite f16 bit patterns (all exponents, subnormals and zero included)."""
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (h & 0x7C00) == 0x7C00
    h[bad] &= 0xBBFF  # clear one exponent bit: finite
    return h


def moderate_f16(n):
    """Random f16 scales of ordinary size (1e-4 .. 1e2, either sign)."""
    v = rng.uniform(-4, 2, size=n)
    s = np.where(rng.integers(0, 2, size=n) == 0, 1.0, -1.0)
    return (s * 10.0**v).astype(np.float16).view(np.uint16)


def random_blocks(qtype, n_blocks):
    block_elems, block_bytes = BLOCK_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint16).astype(np.uint8)

    def put_f16(offset, values):
        raw[:, offset:offset + 2] = values.reshape(n_blocks, 1).view(np.uint8).reshape(n_blocks, 2)

    # Half the blocks get scales of every magnitude, half ordinary ones.
    def scales():
        h = finite_f16(n_blocks)
        m = moderate_f16(n_blocks)
        return np.where(np.arange(n_blocks) % 2 == 0, h, m).astype(np.uint16)

    if qtype in (T.Q4_0, T.Q5_0, T.Q8_0):
        put_f16(0, scales())
    elif qtype in (T.Q4_1, T.Q5_1, T.Q8_1):
        put_f16(0, scales())
        put_f16(2, scales())
    elif qtype == T.Q2_K:
        put_f16(16 + 64, scales())
        put_f16(16 + 64 + 2, scales())
    elif qtype == T.Q3_K:
        put_f16(32 + 64 + 12, scales())
    elif qtype in (T.Q4_K, T.Q5_K):
        put_f16(0, scales())
        put_f16(2, scales())
    elif qtype == T.Q6_K:
        put_f16(128 + 64 + 16, scales())
    elif qtype == T.Q8_K:
        d = rng.uniform(-3, 3, size=n_blocks).astype(np.float32) * np.float32(1e-2)
        raw[:, 0:4] = d.reshape(n_blocks, 1).view(np.uint8).reshape(n_blocks, 4)
    elif qtype in (T.F16, T.BF16, T.F32):
        pass
    return raw


def reference_decode(raw, qtype):
    block_elems, block_bytes = BLOCK_SIZES[qtype]
    n_blocks = raw.shape[0]
    if qtype == T.Q8_1:  # ggml: x = d * q (s is the sum, not used to decode)
        d = raw[:, 0:2].copy().view(np.float16).astype(np.float32)
        q = raw[:, 4:].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(-1)
    if qtype == T.Q8_K:  # ggml: x = d * q, d an f32
        d = raw[:, 0:4].copy().view(np.float32)
        q = raw[:, 4:4 + 256].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(-1)
    return np.asarray(gguf.quants.dequantize(raw.reshape(-1), qtype), dtype=np.float32).reshape(-1)


def write_decode(qtype, n_blocks):
    name = qtype.name
    raw = random_blocks(qtype, n_blocks)
    out = reference_decode(raw, qtype)
    block_elems, block_bytes = BLOCK_SIZES[qtype]
    assert out.size == n_blocks * block_elems
    with open(os.path.join(HERE, f"decode_{name}.bin"), "wb") as f:
        f.write(struct.pack("<II", n_blocks, block_bytes))
        f.write(raw.tobytes())
        f.write(out.astype("<f4").tobytes())


def encode_rows():
    cols = 256
    rows = []
    for scale in (1.0, 0.02, 3e-3, 50.0):
        rows.append(rng.normal(0, scale, size=cols))
    rows.append(rng.uniform(-1, 1, size=cols))
    rows.append(rng.standard_t(3, size=cols) * 0.05)  # heavy tails
    rows.append(np.zeros(cols))
    rows.append(np.full(cols, 0.75))
    rows.append(np.full(cols, -2.5))
    rows.append(rng.normal(0, 1, size=cols) * 1e4)  # f16 scales near the top of the range
    rows.append(rng.normal(0, 1, size=cols) * 1e6)  # scales overflow f16 to inf
    rows.append(rng.normal(0, 1, size=cols) * 1e-6)  # subnormal f16 scales
    rows.append(rng.normal(0, 1, size=cols) * 1e-9)  # scales flush to f16 zero
    outlier = rng.normal(0, 0.01, size=cols)
    outlier[37] = 4.0
    outlier[200] = -7.0
    rows.append(outlier)
    ties = np.round(rng.uniform(-8, 8, size=cols)) * 0.25  # many exact ties and repeated maxima
    rows.append(ties)
    signs = np.abs(rng.normal(0, 1, size=cols))
    signs[::32] = -signs.max() - 1  # largest magnitude negative in each block
    rows.append(signs)
    pos = np.abs(rng.normal(0, 1, size=cols)) + 0.5  # all positive (min > 0)
    rows.append(pos)
    rows.append(-pos)
    return np.stack(rows).astype(np.float32)


def main():
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q8_1):
        write_decode(qtype, 96)
    for qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K):
        write_decode(qtype, 24)
    for qtype in (T.F16, T.BF16):
        write_decode(qtype, 2048)

    x = encode_rows()
    with open(os.path.join(HERE, "encode_input.bin"), "wb") as f:
        f.write(struct.pack("<II", *x.shape))
        f.write(x.astype("<f4").tobytes())
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # f16 overflow in the 1e6 row is intended
            q = np.asarray(gguf.quants.quantize(x, qtype), dtype=np.uint8)
        with open(os.path.join(HERE, f"encode_{qtype.name}.bin"), "wb") as f:
            f.write(struct.pack("<II", *q.shape))
            f.write(q.tobytes())


if __name__ == "__main__":
    main()
