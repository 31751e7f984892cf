// retort's own single-precision GEMM for the CPU kernels.
//
// Sgemm computes what cblas_sgemm(CblasRowMajor, ...) computes, without
// depending on how OpenBLAS picks its kernels (OPENBLAS_CORETYPE in the
// user's environment pinned it to AVX2 on AVX-512 machines). On a CPU with
// AVX-512 F it runs a BLIS-style blocked GEMM (sgemm_kernels.h,
// sgemm_avx512.cc): panels of B (KC x 32) and A (MC x KC) are packed into
// per-thread buffers that live as long as the thread, and a 14 x 32
// register-blocked micro-kernel multiplies them. Elsewhere (or with
// RETORT_NO_AVX512 set) it calls OpenBLAS's cblas_sgemm on one thread.
//
// Thread-safety: Sgemm is single-threaded and may run on any number of
// threads at once (callers split their work over core/thread_pool workers).
// Determinism: the same inputs give the same bits on every call, and every
// element of C gets the same bits whichever tile of a larger product it is
// computed in (sums over k run in order, in blocks of a fixed KC that only
// depends on k).
#ifndef RETORT_KERNELS_CPU_SGEMM_H_
#define RETORT_KERNELS_CPU_SGEMM_H_

namespace retort::cpu {

// C[m, n] = alpha * op(A) · op(B) + beta * C, row-major: op(A) is A[m, k]
// (row i at a + i * lda) or, with trans_a, A is stored [k, m] and used
// transposed; op(B) is B[k, n] or, with trans_b, B stored [n, k]. Exactly
// cblas_sgemm(CblasRowMajor, ...): beta == 0 overwrites C without reading
// it (NaN in C does not survive), k == 0 or alpha == 0 scale C by beta, and
// any lda/ldb/ldc at least the stored row width is accepted. m <= 0 or
// n <= 0 is a no-op.
void Sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc);

// Which implementation Sgemm runs. The default is kAvx512 on a CPU with
// AVX-512 F unless RETORT_NO_AVX512 is set (non-empty, not "0").
enum class SgemmPath { kOpenBlas, kAvx512 };
SgemmPath ActiveSgemmPath();
bool SgemmPathSupported(SgemmPath path);
// For tests and benchmarks: switches the path for every thread. Returns false
// (and changes nothing) if the CPU lacks it. REQUIRES: no Sgemm running.
bool SetSgemmPath(SgemmPath path);
const char* SgemmPathName(SgemmPath path);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_SGEMM_H_
