// Load-time repacking of block-quantized weights into layouts the CPU GEMV
// runs faster on. Q4_0 weights get the kR8 layout (WeightLayout,
// quant_matmul.h): groups of 8 rows interleaved block by block (layout in
// quant_dot_kernels.h), so one integer dot instruction yields 8 rows' partial
// sums in 8 lanes and each block's f32 work (scale convert, multiply, FMA) is
// shared by 8 rows; no horizontal sums. Same bytes as the Q4_0 tensor, and
// the tensor keeps dtype kQ4_0: the layout travels beside it
// (PreparedWeight), private to kernels/cpu. MatMul takes kR8 weights like
// any block type (decode: integer dots against Q8_0 activations, the same
// math as Q4_0; prefill: blocks dequantized for sgemm). Q8_0 weights likewise
// get a kR8 layout (bytes stored as w + 128 for vpdpbusd; same math as Q8_0).
//
// Repacked tensors are for the CPU forward pass only: keep the original for
// saving, conversion and row lookups (embeddings). A repacked tensor's bytes
// mean nothing without its layout: never hand one to code that reads a
// Tensor by its dtype alone (core's conversions, MatMul without the layout,
// Embedding).
#ifndef RETORT_KERNELS_CPU_QUANT_REPACK_H_
#define RETORT_KERNELS_CPU_QUANT_REPACK_H_

#include <cstdint>

#include "core/tensor.h"
#include "kernels/cpu/quant_matmul.h"  // WeightLayout

namespace retort::cpu {

// True if PrepareWeightForCpu repacks `w`: rank 2 [n, k], Q4_0 or Q8_0,
// n % 8 == 0, k % 32 == 0.
bool CanRepackForCpu(const Tensor& w);

// A linear weight as the CPU MatMul reads it: `tensor` in its stored dtype,
// its bytes arranged as `layout` says.
struct PreparedWeight {
  Tensor tensor;
  WeightLayout layout = WeightLayout::kRowMajor;
};

// A repacked copy of `w` (owned buffer, same shape and dtype, layout kR8)
// when CanRepackForCpu(w), else `w` itself (layout kRowMajor). The
// environment variable RETORT_NO_REPACK (non-empty, not "0") turns
// repacking off (for A/B timing).
PreparedWeight PrepareWeightForCpu(const Tensor& w);

// dst = the n x k Q4_0 matrix `src` in the kR8 layout (DTypeBytes(kQ4_0,
// n * k) bytes). REQUIRES: n % 8 == 0, k % 32 == 0.
void RepackQ4_0ToR8(const void* src, int64_t n, int64_t k, void* dst);

// dst[0, rows * k) = rows [r0, r0 + rows) of a Q4_0 matrix in the kR8
// layout, as f32.
void DequantizeRowsQ4_0R8(const void* w, int64_t k, int64_t r0, int64_t rows, float* dst);

// dst = the n x k Q8_0 matrix `src` in the kR8 layout (DTypeBytes(kQ8_0,
// n * k) bytes). REQUIRES: n % 8 == 0, k % 32 == 0.
void RepackQ8_0ToR8(const void* src, int64_t n, int64_t k, void* dst);

// dst[0, rows * k) = rows [r0, r0 + rows) of a Q8_0 matrix in the kR8
// layout, as f32.
void DequantizeRowsQ8_0R8(const void* w, int64_t k, int64_t r0, int64_t rows, float* dst);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_QUANT_REPACK_H_
