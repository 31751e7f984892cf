// Dense symmetric linear algebra for second-order weight methods (GPTQ's
// Hessian, SparseGPT's pruning mask): the Gram matrix of calibration inputs,
// Cholesky factorisation, the inverse of a symmetric positive definite (SPD)
// matrix, and the upper Cholesky factor of that inverse.
//
// LAPACK(E) is not guaranteed on the machines we build on, so the
// factorisations are written here (blocked, right-looking) on top of the CBLAS
// level-3 routines OpenBLAS always provides. Everything is f64: the inverse of
// a dampened Hessian is ill-conditioned enough that f32 loses digits that
// GPTQ's error propagation then amplifies.
//
// Matrices are row-major n x n with leading dimension n. Work is split over
// core/thread_pool.h in fixed tiles, so results do not depend on the thread
// count. Like ParallelFor, call from one thread at a time.
#ifndef RETORT_KERNELS_CPU_LINALG_H_
#define RETORT_KERNELS_CPU_LINALG_H_

#include <cstdint>

#include "absl/status/status.h"

namespace retort::cpu {

// h[cols, cols] += x^T x for x [rows, cols] row-major. h must be symmetric on
// entry and stays symmetric (both triangles are updated). The f64 overload
// widens x before multiplying (exact products, f64 sums); the f32 one sums in
// f32 (for callers that cannot afford an f64 matrix).
void AccumulateGram(const float* x, int64_t rows, int64_t cols, double* h);
void AccumulateGram(const float* x, int64_t rows, int64_t cols, float* h);

// sq[j] += sum over rows r of x[r, j]^2 (f64 products and sums, rows in
// order: the same bits for any thread count).
void AccumulateColumnSquares(const float* x, int64_t rows, int64_t cols, double* sq);

// In place: the lower Cholesky factor L of SPD a (a = L L^T) in the lower
// triangle, zeros above the diagonal. Only the lower triangle of a is read.
// Error (FailedPrecondition) when a is not numerically positive definite:
// the message names the pivot index and value. a is clobbered then.
absl::Status CholeskyLower(double* a, int64_t n);

// In place: the inverse of lower-triangular l (diagonal non-zero); the result
// is lower-triangular, the strict upper triangle is zeroed.
void InvertLowerTriangular(double* l, int64_t n);

// In place: a^-1 of SPD a, via a = L L^T, a^-1 = L^-T L^-1 (symmetric result,
// both triangles). Errors as CholeskyLower.
absl::Status CholeskyInverse(double* a, int64_t n);

// In place: the upper-triangular U with positive diagonal such that
// U^T U = a^-1 (what GPTQ and SparseGPT use: cholesky(cholesky_inverse(
// cholesky(a)), upper=True) in the reference code). Computed without forming
// a^-1: with J the order-reversing permutation, J a J = L' L'^T gives
// U = J L'^-1 J. Errors as CholeskyLower.
absl::Status UpperCholeskyOfInverse(double* a, int64_t n);

// c = alpha * op(a) * op(b) + beta * c, row-major, op(a) [m, k], op(b)
// [k, n], op transposing when trans_a / trans_b. One single-threaded call
// (f64: OpenBLAS cblas_dgemm; f32: Sgemm, sgemm.h): for callers that split their own work over the
// thread pool (the tiles then give the same bits whatever the thread count).
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc);
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_LINALG_H_
