#!/usr/bin/env python3
"""Builds the dtype-conversion fixtures that tests/core/convert_test.cc reads.

The reference is ml_dtypes (float8_e4m3fn, float8_e5m2, bfloat16) and numpy
(float16); every result is cross-checked against PyTorch's CPU conversions
(torch.float16 / bfloat16 / float8_e4m3fn / float8_e5m2) and the script stops if
the two libraries disagree anywhere (NaN payloads aside).

One file per narrow format, <name>.bin.zst (zstd -19 of the raw layout below),
all integers little-endian, uW = u16 for 16-bit formats and u8 for fp8:

  u32 n_decode                 number of bit patterns (65536 or 256)
  u32 decode[n_decode]         f32 bits of the reference decode of pattern i
  u32 n_pairs                  pairs of adjacent values a < b among the format's
                               finite values >= 0 (sorted, from the decode table)
  uW  mid_expected[3*n_pairs]  reference encoding of, for each pair: the f32 one
                               ulp below m = (a+b)/2, m itself (exact in f32: a
                               tie, rounded to the even neighbour), one ulp above
  u32 n_extra
  u32 extra_input[n_extra]     f32 bits
  uW  extra_expected[n_extra]

The midpoint inputs are not stored: the C++ test rebuilds them from the decode
table by the rule above (the counts must match). The script also asserts two
properties the C++ test relies on: the reference encodes every non-NaN decoded
value back to its own pattern, and it is sign-symmetric on the midpoint inputs
(the test checks -x too). Extra inputs: values beyond the largest finite value
(the tie to the next would-be binade, f32 max, ...), tiny values around half the
smallest subnormal, f32 subnormals, +-0, +-inf, several NaN bit patterns and
4,000 seeded random f32 bit patterns spanning the format's exponent range.

Names: f16 -> float16, bf16 -> bfloat16, f8_e4m3fn -> float8_e4m3fn,
f8_e5m2 -> float8_e5m2. ml_dtypes' e4m3fn overflows to NaN; retort saturates
to +-448 instead (core/convert.h), as torch >= 2.x does; the script
checks that torch differs from ml_dtypes only there, the fixture keeps
ml_dtypes' raw answers and the C++ test checks the difference explicitly.

Usage: python3 make_fixtures.py      (needs numpy, ml_dtypes, torch, zstd CLI)
"""
import os
import struct
import subprocess
import tempfile

import ml_dtypes
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

FORMATS = [
    # name, numpy dtype, torch dtype, bits
    ("f16", np.dtype(np.float16), torch.float16, 16),
    ("bf16", np.dtype(ml_dtypes.bfloat16), torch.bfloat16, 16),
    ("f8_e4m3fn", np.dtype(ml_dtypes.float8_e4m3fn), torch.float8_e4m3fn, 8),
    ("f8_e5m2", np.dtype(ml_dtypes.float8_e5m2), torch.float8_e5m2, 8),
]


def uint_dtype(bits):
    return np.uint16 if bits == 16 else np.uint8


def decode_table(np_dtype, torch_dtype, bits):
    patterns = np.arange(1 << bits, dtype=np.uint32).astype(uint_dtype(bits))
    ref = patterns.view(np_dtype).astype(np.float32)
    if bits == 16:
        t = torch.from_numpy(patterns.view(np.int16)).view(torch_dtype)
    else:
        t = torch.from_numpy(patterns).view(torch_dtype)
    other = t.to(torch.float32).numpy()
    check_same_floats(ref, other, "decode")
    return ref


def check_same_floats(a, b, what):
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    assert np.array_equal(a_nan, b_nan), f"{what}: NaN positions differ"
    assert np.array_equal(a.view(np.uint32)[~a_nan], b.view(np.uint32)[~b_nan]), f"{what}: values differ"


def f32(x):
    with np.errstate(over="ignore"):
        return np.array(x, dtype=np.float32)


def positive_values(decoded):
    """Sorted distinct finite values >= 0 of the format, as float64."""
    finite = decoded[np.isfinite(decoded)].astype(np.float64)
    return np.unique(finite[finite >= 0])


def midpoint_inputs(decoded):
    """For each pair of adjacent values a < b in positive_values(): the f32 one
    ulp below the midpoint, the midpoint (exact in f32), and one ulp above.
    Returns an array of shape [pairs, 3]. The C++ test rebuilds the same
    inputs from the decode table by this rule."""
    values = positive_values(decoded)
    mid = (values[:-1] + values[1:]) / 2
    mid32 = mid.astype(np.float32)
    assert np.array_equal(mid32.astype(np.float64), mid), "midpoint not exact in f32"
    below = np.nextafter(mid32, np.float32(-np.inf))
    above = np.nextafter(mid32, np.float32(np.inf))
    return np.stack([below, mid32, above], axis=1)


def extra_inputs(decoded, seed):
    values = positive_values(decoded)
    inputs = []
    # Beyond the largest finite value.
    vmax = values[-1]
    step = vmax - values[-2]  # ulp of the top binade
    beyond = f32([vmax + step / 2, vmax + step, vmax * 1.5, vmax * 2, vmax * 1000, 1e30,
                  float(np.finfo(np.float32).max)])
    with np.errstate(over="ignore"):
        beyond = np.concatenate([beyond, np.nextafter(beyond, np.float32(np.inf)),
                                 np.nextafter(beyond, np.float32(0))])
    inputs += [beyond, -beyond]
    # Tiny values: around half the smallest subnormal (a tie that goes to 0).
    tiny = values[1]
    t = f32([tiny / 2, tiny / 4, tiny * 0.75, tiny * 1.5, tiny * 2.5])
    t = np.concatenate([t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(np.inf)),
                        np.array([1, 2, 0x7FFFFF, 0x800000], dtype=np.uint32).view(np.float32)])
    inputs += [t, -t]
    inputs.append(f32([0.0, -0.0, np.inf, -np.inf]))
    inputs.append(np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000],
                           dtype=np.uint32).view(np.float32))
    # Seeded random f32 bit patterns whose exponent spans the format's range
    # (and a little beyond on both sides).
    n = 4000
    rng = np.random.default_rng(seed)
    lo = int(np.floor(np.log2(tiny))) - 3
    hi = int(np.floor(np.log2(vmax))) + 3
    exps = rng.integers(lo + 127, hi + 128, size=n).clip(0, 254).astype(np.uint32)
    mans = rng.integers(0, 1 << 23, size=n, dtype=np.uint32)
    signs = rng.integers(0, 2, size=n, dtype=np.uint32)
    inputs.append(((signs << 31) | (exps << 23) | mans).view(np.float32))
    out = np.concatenate([np.asarray(x, dtype=np.float32) for x in inputs])
    _, idx = np.unique(out.view(np.uint32), return_index=True)  # dedupe, stable order
    return out[np.sort(idx)]


def encode(inputs, np_dtype, torch_dtype, bits, name):
    """ml_dtypes' encoding of `inputs`, checked against torch's."""
    with np.errstate(over="ignore", invalid="ignore"):
        ref = inputs.astype(np_dtype).view(uint_dtype(bits))
    t = torch.from_numpy(inputs.copy()).to(torch_dtype)
    if bits == 16:
        other = t.view(torch.int16).numpy().view(np.uint16)
    else:
        other = t.view(torch.uint8).numpy()
    ref_f = ref.view(np_dtype).astype(np.float32)
    other_f = other.view(np_dtype).astype(np.float32)
    in_nan = np.isnan(inputs)
    if name == "f8_e4m3fn":
        # ml_dtypes overflows to NaN; torch (>= 2.x) saturates to +-448 like
        # retort. Check that this is the only disagreement.
        sat = np.isnan(ref_f) & ~in_nan
        assert np.all(np.abs(inputs[sat]) > 448), "ml_dtypes NaN for an in-range input"
        assert np.array_equal(other[sat], np.where(inputs[sat] > 0, 0x7E, 0xFE)), "torch does not saturate"
        keep = ~sat
        check_same_floats(ref_f[keep], other_f[keep], "encode")
    else:
        check_same_floats(ref_f, other_f, "encode")
    ok = ~np.isnan(ref_f)  # non-NaN results agree bit for bit, sign of zero included
    assert np.array_equal(ref[ok], other[ok]), "ml_dtypes and torch encodings differ"
    assert np.array_equal(np.isnan(ref_f)[in_nan], np.ones(in_nan.sum(), bool)), "NaN not kept"
    return ref


def main():
    for seed, (name, np_dtype, torch_dtype, bits) in enumerate(FORMATS):
        decoded = decode_table(np_dtype, torch_dtype, bits)
        # The C++ test encodes every decoded value and expects its own bit
        # pattern back; check the reference does the same.
        pats = np.arange(1 << bits, dtype=np.uint32).astype(uint_dtype(bits))
        not_nan = ~np.isnan(decoded)
        assert np.array_equal(encode(decoded[not_nan], np_dtype, torch_dtype, bits, name),
                              pats[not_nan]), "reference round trip is not the identity"
        mids = midpoint_inputs(decoded)
        mid_expected = encode(mids.reshape(-1), np_dtype, torch_dtype, bits, name)
        # The C++ test also checks -x for each midpoint input; check the
        # reference is sign-symmetric there.
        sign = np.array(1 << (bits - 1), dtype=uint_dtype(bits))
        assert np.array_equal(encode(-mids.reshape(-1), np_dtype, torch_dtype, bits, name),
                              mid_expected | sign), "reference not sign-symmetric"
        extra = extra_inputs(decoded, seed)
        extra_expected = encode(extra, np_dtype, torch_dtype, bits, name)
        w = "<u2" if bits == 16 else "u1"
        raw = b"".join([
            struct.pack("<I", len(decoded)), decoded.view(np.uint32).astype("<u4").tobytes(),
            struct.pack("<I", len(mids)), mid_expected.astype(w).tobytes(),
            struct.pack("<I", len(extra)), extra.view(np.uint32).astype("<u4").tobytes(),
            extra_expected.astype(w).tobytes(),
        ])
        out = os.path.join(HERE, f"{name}.bin.zst")
        with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
            tmp.write(raw)
            tmp.flush()
            subprocess.run(["zstd", "-19", "-q", "-f", "--no-progress", tmp.name, "-o", out], check=True)
        print(f"{name}: {len(decoded)} patterns, {len(mids)} midpoints x3, {len(extra)} extra "
              f"inputs; {len(raw)} bytes -> {os.path.getsize(out)} bytes")
    print(f"ml_dtypes {ml_dtypes.__version__}, numpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
