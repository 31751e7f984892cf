// Internals of Sgemm (sgemm.h): the blocking constants and the AVX-512 build
// of the blocked GEMM (sgemm_avx512.cc). Internal header of kernels/cpu.
#ifndef RETORT_KERNELS_CPU_SGEMM_KERNELS_H_
#define RETORT_KERNELS_CPU_SGEMM_KERNELS_H_

#include <cstddef>

namespace retort::cpu::sgemm_internal {

// Micro-tile: kMR rows x kNR columns of C held in 28 zmm accumulators (two
// per row), plus two zmm of B and the broadcast A operand: 31 of 32
// registers.
constexpr int kMR = 14;
constexpr int kNR = 32;
// Blocking of the loops around the micro-kernel (BLIS order): a KC x NR
// micro-panel of B (32 KiB) stays in L1 while the micro-kernel walks the
// MR x KC micro-panels of A (14 KiB each) of an MC x KC block (280 KiB) kept
// in L2; the KC x NC block of B (512 KiB) is reused by every MC block.
constexpr int kKC = 256;
constexpr int kMC = 20 * kMR;
constexpr int kNC = 512;

// Floats of the two packing buffers (64-byte aligned).
constexpr size_t kPackAFloats = static_cast<size_t>(kMC) * kKC;
constexpr size_t kPackBFloats = static_cast<size_t>(kNC) * kKC;

// C = alpha * op(A) · op(B) + beta * C with m, n, k > 0 and alpha != 0
// (Sgemm handles the degenerate cases). pack_a / pack_b: kPackAFloats /
// kPackBFloats floats, 64-byte aligned, owned by the calling thread.
// REQUIRES: the CPU has AVX-512 F.
void SgemmAvx512(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc, float* pack_a,
                 float* pack_b);

}  // namespace retort::cpu::sgemm_internal

#endif  // RETORT_KERNELS_CPU_SGEMM_KERNELS_H_
