// Products with ggml block-quantized weights (GGUF Q4_0 ... Q6_K), kept in
// their stored blocks: no dequantized copy of a weight matrix is ever made.
//
// MatMul (ops.h) dispatches here for block-typed weights; the functions below
// are exposed for tests and benchmarks.
//
// Decode (GEMV) does what llama.cpp does: each input row is quantized once to
// an 8-bit "activation" block type, and every weight row is dotted with it in
// integer arithmetic (AVX2 maddubs/madd, or AVX-512 VNNI vpdpbusd where the
// CPU has it, chosen at run time), one f32 multiply-add per block:
//   weights Q4_0, Q5_0, Q8_0   with activations Q8_0 (32 per block, f16 d)
//   weights Q4_1, Q5_1        with activations Q8_1 (adds s = d * sum(q), for the m term)
//   weights Q4_K, Q5_K, Q6_K  with activations Q8_K (256 per block, f32 d, 16-element sums)
//   Q4_0, Q8_0 in the kR8 layout (repacked 8 rows at a time, quant_repack.h)
//     with Q8_0, 8 rows per integer dot; QuantDot / QuantDotReference do not
//     take them
// Other block types (Q2_K, Q3_K) take a generic path: the input stays f32 and
// each weight row is dequantized into a small per-thread scratch, then dotted.
//
// Precision: the product computed is (x rounded to 8-bit blocks) · W, exactly
// as llama.cpp; its difference to x · W is the activation rounding, about
// |x|max/254 per element of each block (relative ~0.5% of a dot's magnitude
// in the worst case, far less on average). The vectorised dots agree with the
// scalar references below to f32 rounding (integer sums are exact, only the
// order of the per-block f32 accumulation differs).
#ifndef RETORT_KERNELS_CPU_QUANT_MATMUL_H_
#define RETORT_KERNELS_CPU_QUANT_MATMUL_H_

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace retort::cpu {

// MatMul calls with at most this many input rows and only block-quantized
// weights take the integer-dot GEMV path; more rows dequantize blocks of
// weight rows and run sgemm. (Measured on 2 threads, SmolLM2 FFN shapes: at
// m = 8 and 16 the integer dots run 1.2-8x the GFLOP/s of dequantize+sgemm
// for every type; at m = 64 sgemm wins for Q4_0.)
inline constexpr int64_t kQuantGemvMaxRows = 16;

// How a block-quantized weight's bytes are arranged. The dtype of a weight
// is always its stored (file) type; the layout is the CPU kernels' own
// business, never seen above kernels/cpu (the Backend's DeviceWeight hides
// it):
//   kRowMajor: as stored, row r at r * DTypeBytes(wt, k).
//   kR8: a Q4_0 or Q8_0 matrix repacked 8 rows at a time by
//     PrepareWeightForCpu (quant_repack.h; layouts in quant_dot_kernels.h).
//     Same bytes in all as the stored matrix, but rows are not contiguous.
//     REQUIRES: dtype kQ4_0 or kQ8_0, rows % 8 == 0, k % 32 == 0.
enum class WeightLayout : uint8_t { kRowMajor, kR8 };

// True if `layout` can hold a [rows, k] weight of type `wt` (kRowMajor:
// always; kR8: the REQUIRES above).
bool IsValidWeightLayout(DType wt, WeightLayout layout, int64_t rows, int64_t k);

// Block types MatMul accepts as weights.
bool IsQuantizedWeightDType(DType w);

// The activation type a weight type is dotted with: kQ8_0, kQ8_1, kQ8_K, or
// kF32 for the generic (dequantize-the-row) path.
DType QuantDotActivationType(DType w);

// Bytes of one input row of n elements in activation type `act`
// (n * 4 for kF32). REQUIRES: n a multiple of act's block size.
size_t ActivationRowBytes(DType act, int64_t n);

// Quantizes x[0, n) into activation blocks of type `act` (kQ8_0, kQ8_1 or
// kQ8_K; kF32 copies). Per block: d = max|x| / 127, q = round-half-even(x / d);
// Q8_1 also stores s = d * sum(q), Q8_K the sums of each 16 q's.
void QuantizeActivationRow(DType act, const float* x, void* dst, int64_t n);
// Scalar twin of QuantizeActivationRow (same bytes out).
void QuantizeActivationRowReference(DType act, const float* x, void* dst, int64_t n);

// sum over n elements of w[j] * a[j]: `w` is a row of weight blocks of type
// `wt`, `a` the row in QuantDotActivationType(wt). Vectorised (AVX2, or
// AVX-512 VNNI for the 32-element blocks: see QuantDotPath).
float QuantDot(DType wt, const void* w, const void* a, int64_t n);
// The same math in plain scalar code (reference for tests, and the portable
// definition of what QuantDot computes).
float QuantDotReference(DType wt, const void* w, const void* a, int64_t n);

// y[i * ldy + r] = dot(x_i, w[r]) (+ bias[r]) for rows r in [r0, r1) and the
// m input rows, whose activations `act` (row i at act + i * act_row_bytes)
// were made by QuantizeActivationRow. With layout kRowMajor weight row r
// starts at w + r * DTypeBytes(wt, k); with kR8, w is the repacked matrix
// (REQUIRES: IsValidWeightLayout). Streams each weight row once.
void QuantGemvRows(DType wt, WeightLayout layout, const void* w, int64_t k, const void* act,
                   size_t act_row_bytes, int64_t m, const float* bias, float* y, int64_t ldy,
                   int64_t r0, int64_t r1);

// Which build of the integer dots of the 32-element blocks (Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0) runs. Both give the same bits (quant_dot_kernels.h).
// The default is the fastest the CPU has, unless the environment variable
// RETORT_NO_AVX512 is set (non-empty, not "0"), which keeps AVX2.
enum class QuantDotPath { kAvx2, kAvx512Vnni };
// What the CPU and environment choose (read again on every call).
QuantDotPath DefaultQuantDotPath();
bool QuantDotPathSupported(QuantDotPath path);
// The path in use: DefaultQuantDotPath() at first use, or the last Set.
QuantDotPath ActiveQuantDotPath();
// For tests and benchmarks: switches the path for every thread. Returns false
// (and changes nothing) if the CPU lacks it. REQUIRES: no MatMul running.
bool SetQuantDotPath(QuantDotPath path);
const char* QuantDotPathName(QuantDotPath path);

// dst[0, rows * k) = weight rows [r0, r0 + rows) of `w` (in `layout`)
// dequantized to f32 (vectorised for the common types; ggml::DequantizeRow
// for the rest).
void DequantizeRows(DType wt, WeightLayout layout, const void* w, int64_t k, int64_t r0,
                    int64_t rows, float* dst);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_QUANT_MATMUL_H_
