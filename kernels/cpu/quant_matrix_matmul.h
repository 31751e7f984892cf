// Products with QuantizedMatrix weights (core/quant_matrix.h: int4 / int8 /
// fp8 values with tensor, channel, group or block scales, optional zero
// points and g_idx), read in their stored form: no dequantized copy of the
// matrix is ever made.
//
// MatMul below (and MatMulGroup in ops.h, via MatMulOutput::quant) picks one
// of two paths by the number of input rows m, as the Tensor MatMul does:
//  * GEMV (m <= kQuantMatrixGemvMaxRows, decode): memory-bound. Each weight
//    row is streamed once, its packed values widened to f32 in AVX2 registers
//    (int4: a broadcast, a variable shift and an arithmetic shift per 8
//    values; fp8 e4m3/e5m2: moved into f16 bit patterns and widened with
//    F16C, exactly), multiplied with up to 4 input rows at once with FMAs.
//    Where quant_matmul.h's QuantDotPath is kAvx512Vnni (the CPU has
//    AVX-512, RETORT_NO_AVX512 unset) the same kernels run 16 lanes wide
//    (quant_matrix_kernels.h, quant_matrix_avx512.cc).
//    Per scale segment (group, block column, or the whole row) the sum
//    x . q is formed first and scaled once: for asymmetric weights
//    s * (x . q - z * sum(x)), the per-segment input sums precomputed once
//    per call.
//  * GEMM (prefill): compute-bound. Threads take blocks of weight rows;
//    each block is dequantized into a per-thread f32 scratch (bit-identical
//    to core's DequantizeRows) and multiplied with a single-threaded
//    Sgemm (sgemm.h).
// g_idx (act-order) matrices and group/block sizes that are not a multiple of
// 8 take a slower generic GEMV (each row dequantized with DequantizeRows into
// a scratch row, then dotted); their GEMM path is the same as the others'.
//
// Precision: everything is f32 with f32 accumulation; no input rounding
// (unlike the integer dots of quant_matmul.h). The GEMV result differs from
// x . DequantizeRows(w)^T only by f32 summation order and by where the scale
// is applied (once per segment instead of per element): within the usual
// (k + a few) * 2^-24 * sum|x * w| bound, and in practice far below it. The
// result for a given row does not depend on the thread count.
//
// Like ParallelFor, call from one thread at a time.
#ifndef RETORT_KERNELS_CPU_QUANT_MATRIX_MATMUL_H_
#define RETORT_KERNELS_CPU_QUANT_MATRIX_MATMUL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/quant_matrix.h"

namespace retort::cpu {

// y[m, w.rows] = x[m, w.cols] . w^T (+ bias[w.rows]); the contract of the
// Tensor MatMul in ops.h. `bias` may be null; y must not overlap x.
// Error (naming what is wrong) if w's tensors do not have the layout of
// core/quant_matrix.h (a cheap structural check: value ranges are not
// scanned, use ValidateQuantizedMatrix once at load time for that).
absl::Status MatMul(const float* x, int64_t m, const QuantizedMatrix& w, const float* bias,
                    float* y);

// Calls with at most this many input rows take the GEMV path.
inline constexpr int64_t kQuantMatrixGemvMaxRows = 4;

// The structural check MatMul runs: w's values/scales/zero points/g_idx have
// the dtypes and shapes of core/quant_matrix.h and w.cols == k.
absl::Status CheckQuantizedMatrixLayout(const QuantizedMatrix& w, int64_t k);

// The GEMV path for one weight matrix and one input x[m, w.cols], split so
// that the per-call work (the input's per-segment sums) is done once and the
// rows are shared out by the caller (exposed for MatMulGroup and tests).
// REQUIRES: CheckQuantizedMatrixLayout(w, w.cols) is OK; w and x outlive it.
class QuantMatrixGemv {
 public:
  QuantMatrixGemv(const QuantizedMatrix& w, const float* x, int64_t m);

  // y[i * ldy + r] = x_i . w[r] (+ bias[r]) for rows r in [r0, r1), i < m.
  // Safe to call from several threads on disjoint row ranges.
  void Rows(const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) const;

  // True when the rows take the register-decoding kernels (false: g_idx or
  // a group/block size that is not a multiple of 8: the generic path).
  bool fast() const { return fast_; }

 private:
  const QuantizedMatrix& w_;
  const float* x_;
  int64_t m_;
  int64_t segment_;  // columns per scale segment
  int64_t nseg_;
  bool fast_;
  std::vector<float> xsum_;  // asymmetric: [m, nseg] sums of x over each segment
};

// The GEMM path for weight rows [r0, r1): y[i * ldy + r] for i < m. Rows are
// dequantized into `scratch` (resized as needed) and multiplied with one
// single-threaded Sgemm (sgemm.h); safe to call from several threads.
void QuantMatrixGemmBlock(const float* x, int64_t m, const QuantizedMatrix& w, const float* bias,
                          float* y, int64_t ldy, int64_t r0, int64_t r1,
                          std::vector<float>& scratch);

// out[(r - r0) * cols + c] = w[r, c] for rows [r0, r1): the same bits as
// core's DequantizeRows, vectorised where the layout allows it.
void DequantizeRowsFast(const QuantizedMatrix& w, int64_t r0, int64_t r1, float* out);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_QUANT_MATRIX_MATMUL_H_
