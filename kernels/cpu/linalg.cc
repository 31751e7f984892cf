#include "kernels/cpu/linalg.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/thread_pool.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/sgemm.h"

namespace retort::cpu {
namespace {

// Tile edge of the level-3 updates and panel width of the factorisations.
constexpr int64_t kTile = 128;
constexpr int64_t kPanel = 64;
// Rows of x widened to f64 at a time in AccumulateGram.
constexpr int64_t kGramRows = 256;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs fn(t) for each tile t in [0, n) on the pool, one BLAS call per tile
// whatever the chunking, so the bits do not depend on the thread count.
template <typename Fn>
void ForEachTile(int64_t n, const Fn& fn) {
  ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) fn(t);
  });
}

// Runs fn(t) for t in [0, n) where the cost of tile t falls (or rises) with
// t: task i takes tiles i and n - 1 - i, so each task has about the same
// work and a contiguous ParallelFor split stays balanced.
template <typename Fn>
void ParallelTriangularTiles(int64_t n, const Fn& fn) {
  const int64_t pairs = CeilDiv(n, 2);
  ParallelFor(pairs, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      fn(p);
      if (n - 1 - p != p) fn(n - 1 - p);
    }
  });
}

template <typename T>
void MirrorUpperToLower(T* h, int64_t n) {
  for (int64_t i = 1; i < n; ++i) {
    for (int64_t j = 0; j < i; ++j) h[i * n + j] = h[j * n + i];
  }
}

// h[0:j1, j0:j1] += x[:, 0:j1]^T x[:, j0:j1] for each column tile [j0, j1):
// the upper triangle (and the diagonal tiles whole).
template <typename T>
void GramUpperTiles(const T* x, int64_t rows, int64_t cols, T* h) {
  const int64_t tiles = CeilDiv(cols, kTile);
  ParallelTriangularTiles(tiles, [&](int64_t t) {
    const int64_t j0 = t * kTile, j1 = std::min(cols, j0 + kTile);
    Gemm(true, false, j1, j1 - j0, rows, T(1), x, cols, x + j0, cols, T(1), h + j0, cols);
  });
}

// Unblocked Cholesky of the diagonal block a[k0:k1, k0:k1] (trailing updates
// from earlier panels already applied). Returns the failing pivot or -1.
int64_t FactorDiagonalBlock(double* a, int64_t n, int64_t k0, int64_t k1, double* bad_value) {
  for (int64_t j = k0; j < k1; ++j) {
    double* aj = a + j * n;
    double d = aj[j];
    for (int64_t p = k0; p < j; ++p) d -= aj[p] * aj[p];
    if (!(d > 0) || !std::isfinite(d)) {
      *bad_value = d;
      return j;
    }
    const double l = std::sqrt(d);
    aj[j] = l;
    for (int64_t i = j + 1; i < k1; ++i) {
      double* ai = a + i * n;
      double s = ai[j];
      for (int64_t p = k0; p < j; ++p) s -= ai[p] * aj[p];
      ai[j] = s / l;
    }
  }
  return -1;
}

// Blocked right-looking Cholesky; returns the failing pivot or -1.
int64_t CholeskyLowerImpl(double* a, int64_t n, double* bad_value) {
  EnsureBlasSingleThreaded();
  for (int64_t k0 = 0; k0 < n; k0 += kPanel) {
    const int64_t k1 = std::min(n, k0 + kPanel), kb = k1 - k0;
    if (int64_t bad = FactorDiagonalBlock(a, n, k0, k1, bad_value); bad >= 0) return bad;
    if (k1 == n) break;
    // Panel: a[k1:n, k0:k1] <- a[k1:n, k0:k1] L11^-T, independent rows.
    const int64_t below = n - k1;
    ForEachTile(CeilDiv(below, kTile), [&](int64_t t) {
      const int64_t r0 = k1 + t * kTile, r1 = std::min(n, r0 + kTile);
      cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, r1 - r0, kb, 1.0,
                  a + k0 * n + k0, n, a + r0 * n + k0, n);
    });
    // Trailing update of the lower triangle: a22 -= L21 L21^T, by column tile.
    const int64_t tiles = CeilDiv(below, kTile);
    ParallelTriangularTiles(tiles, [&](int64_t t) {
      const int64_t j0 = k1 + t * kTile, j1 = std::min(n, j0 + kTile);
      Gemm(false, true, n - j0, j1 - j0, kb, -1.0, a + j0 * n + k0, n, a + j0 * n + k0, n, 1.0,
           a + j0 * n + j0, n);
    });
  }
  for (int64_t i = 0; i < n; ++i) std::fill(a + i * n + i + 1, a + (i + 1) * n, 0.0);
  return -1;
}

absl::Status NotPositiveDefinite(int64_t pivot, double value, int64_t n) {
  return absl::FailedPreconditionError(absl::StrCat("matrix [", n, " x ", n,
                                                    "] is not positive definite: Cholesky pivot ",
                                                    pivot, " is ", value));
}

// In-place inverse of the unit block a[j0:j1, j0:j1] of a lower-triangular
// matrix (LAPACK's dtrti2 order: last column first, each column multiplied by
// the already inverted trailing block).
void InvertDiagonalBlock(double* a, int64_t n, int64_t j0, int64_t j1) {
  for (int64_t j = j1 - 1; j >= j0; --j) {
    double* aj = a + j * n;
    aj[j] = 1.0 / aj[j];
    const double ajj = -aj[j];
    // x = a[j+1:j1, j]; x <- T x with T = a[j+1:j1, j+1:j1] (inverted);
    // bottom-up so each x[p], p <= i, is still the old value when read.
    for (int64_t i = j1 - 1; i > j; --i) {
      const double* ai = a + i * n;
      double s = 0;
      for (int64_t p = j + 1; p <= i; ++p) s += ai[p] * a[p * n + j];
      a[i * n + j] = s * ajj;
    }
  }
}

}  // namespace

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  EnsureBlasSingleThreaded();
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  Sgemm(trans_a, trans_b, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
        static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

void AccumulateGram(const float* x, int64_t rows, int64_t cols, double* h) {
  if (rows <= 0 || cols <= 0) return;
  std::vector<double> wide(std::min(rows, kGramRows) * cols);
  for (int64_t r0 = 0; r0 < rows; r0 += kGramRows) {
    const int64_t r1 = std::min(rows, r0 + kGramRows);
    std::copy(x + r0 * cols, x + r1 * cols, wide.begin());
    GramUpperTiles(wide.data(), r1 - r0, cols, h);
  }
  MirrorUpperToLower(h, cols);
}

void AccumulateGram(const float* x, int64_t rows, int64_t cols, float* h) {
  if (rows <= 0 || cols <= 0) return;
  GramUpperTiles(x, rows, cols, h);
  MirrorUpperToLower(h, cols);
}

void AccumulateColumnSquares(const float* x, int64_t rows, int64_t cols, double* sq) {
  // Columns are split over the pool; each column's sum runs over the rows in order.
  ParallelFor(cols, 256, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * cols;
      for (int64_t j = c0; j < c1; ++j) sq[j] += static_cast<double>(row[j]) * row[j];
    }
  });
}

absl::Status CholeskyLower(double* a, int64_t n) {
  double bad_value = 0;
  if (int64_t bad = CholeskyLowerImpl(a, n, &bad_value); bad >= 0) {
    return NotPositiveDefinite(bad, bad_value, n);
  }
  return absl::OkStatus();
}

void InvertLowerTriangular(double* a, int64_t n) {
  EnsureBlasSingleThreaded();
  // LAPACK's blocked dtrtri (lower): panels from the last to the first; the
  // rows below a panel become -inv(L22) L21 inv(L11) using the already
  // inverted trailing part.
  const int64_t last = (n - 1) / kPanel * kPanel;
  for (int64_t j0 = last; j0 >= 0; j0 -= kPanel) {
    const int64_t j1 = std::min(n, j0 + kPanel), jb = j1 - j0;
    if (j1 < n) {
      const int64_t below = n - j1;
      // Column strips of the panel are independent under a left multiply.
      constexpr int64_t kStrip = 16;
      ForEachTile(CeilDiv(jb, kStrip), [&](int64_t s) {
        const int64_t c0 = j0 + s * kStrip, c1 = std::min(j1, c0 + kStrip);
        cblas_dtrmm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, below,
                    c1 - c0, 1.0, a + j1 * n + j1, n, a + j1 * n + c0, n);
      });
      // Rows are independent under a right solve.
      ForEachTile(CeilDiv(below, kTile), [&](int64_t t) {
        const int64_t r0 = j1 + t * kTile, r1 = std::min(n, r0 + kTile);
        cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, r1 - r0, jb,
                    -1.0, a + j0 * n + j0, n, a + r0 * n + j0, n);
      });
    }
    InvertDiagonalBlock(a, n, j0, j1);
  }
  for (int64_t i = 0; i < n; ++i) std::fill(a + i * n + i + 1, a + (i + 1) * n, 0.0);
}

absl::Status CholeskyInverse(double* a, int64_t n) {
  if (absl::Status s = CholeskyLower(a, n); !s.ok()) return s;
  InvertLowerTriangular(a, n);
  // a^-1 = Linv^T Linv; column tiles of the product from a copy of Linv.
  std::vector<double> linv(a, a + n * n);
  const int64_t tiles = CeilDiv(n, kTile);
  ForEachTile(tiles, [&](int64_t t) {
    const int64_t j0 = t * kTile, j1 = std::min(n, j0 + kTile);
    // Rows p < j0 of Linv[:, j0:j1] are zero: start the sum at j0.
    Gemm(true, false, n, j1 - j0, n - j0, 1.0, linv.data() + j0 * n, n, linv.data() + j0 * n + j0,
         n, 0.0, a + j0, n);
  });
  return absl::OkStatus();
}

absl::Status UpperCholeskyOfInverse(double* a, int64_t n) {
  // Reversing the flat array reverses both indices: a[i][j] <- a[n-1-i][n-1-j].
  std::reverse(a, a + n * n);
  double bad_value = 0;
  if (int64_t bad = CholeskyLowerImpl(a, n, &bad_value); bad >= 0) {
    return NotPositiveDefinite(n - 1 - bad, bad_value, n);
  }
  InvertLowerTriangular(a, n);
  std::reverse(a, a + n * n);
  return absl::OkStatus();
}

}  // namespace retort::cpu
