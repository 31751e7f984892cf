// kernels/cpu/linalg: Gram accumulation, Cholesky, triangular and SPD
// inverses and GPTQ's upper Cholesky factor of the inverse, each against a
// plain f64 loop (and sizes that are not multiples of the 64/128 tiles).
#include "kernels/cpu/linalg.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "gtest/gtest.h"

namespace retort::cpu {
namespace {

std::vector<float> RandomMatrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(rows * cols);
  for (auto& x : v) x = dist(rng);
  return v;
}

// x^T x / rows + eps I: a well-conditioned SPD matrix from random samples.
std::vector<double> RandomSpd(int64_t n, uint32_t seed, double eps = 0.1) {
  const int64_t rows = 2 * n + 3;
  std::vector<float> x = RandomMatrix(rows, n, seed);
  std::vector<double> a(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t r = 0; r < rows; ++r) s += double(x[r * n + i]) * x[r * n + j];
      a[i * n + j] = s / rows + (i == j ? eps : 0.0);
    }
  }
  return a;
}

std::vector<double> MatMulRef(const std::vector<double>& a, const std::vector<double>& b, int64_t n,
                              bool trans_a = false) {
  std::vector<double> c(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < n; ++p) {
      const double aip = trans_a ? a[p * n + i] : a[i * n + p];
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += aip * b[p * n + j];
    }
  }
  return c;
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(LinalgTest, AccumulateGramMatchesLoopBothPrecisions) {
  for (int64_t cols : {1, 5, 130, 300}) {
    const int64_t rows = 300;  // more than one 256-row widening chunk
    std::vector<float> x = RandomMatrix(rows, cols, 7 + cols);
    std::vector<double> h(cols * cols, 0.5);  // symmetric start value
    std::vector<float> hf(cols * cols, 0.5f);
    AccumulateGram(x.data(), 100, cols, h.data());
    AccumulateGram(x.data() + 100 * cols, rows - 100, cols, h.data());
    AccumulateGram(x.data(), rows, cols, hf.data());
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        double s = 0.5;
        for (int64_t r = 0; r < rows; ++r) s += double(x[r * cols + i]) * x[r * cols + j];
        ASSERT_NEAR(h[i * cols + j], s, 1e-10 * (1 + std::abs(s))) << cols << " " << i << "," << j;
        ASSERT_NEAR(hf[i * cols + j], s, 2e-4 * (1 + std::abs(s))) << cols << " " << i << "," << j;
        ASSERT_EQ(h[i * cols + j], h[j * cols + i]);
      }
    }
  }
}

TEST(LinalgTest, CholeskyLowerReproducesMatrix) {
  for (int64_t n : {1, 3, 64, 65, 200}) {
    std::vector<double> a = RandomSpd(n, 11 + n);
    std::vector<double> l = a;
    ASSERT_TRUE(CholeskyLower(l.data(), n).ok());
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_GT(l[i * n + i], 0);
      for (int64_t j = i + 1; j < n; ++j) ASSERT_EQ(l[i * n + j], 0.0);
    }
    // L L^T == a.
    std::vector<double> lt(n * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) lt[i * n + j] = l[j * n + i];
    EXPECT_LT(MaxAbsDiff(MatMulRef(l, lt, n), a), 1e-12) << n;
  }
}

TEST(LinalgTest, CholeskyMatchesTextbookLoop) {
  const int64_t n = 150;
  std::vector<double> a = RandomSpd(n, 5);
  std::vector<double> ref(n * n, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t p = 0; p < j; ++p) d -= ref[j * n + p] * ref[j * n + p];
    ref[j * n + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t p = 0; p < j; ++p) s -= ref[i * n + p] * ref[j * n + p];
      ref[i * n + j] = s / ref[j * n + j];
    }
  }
  std::vector<double> l = a;
  ASSERT_TRUE(CholeskyLower(l.data(), n).ok());
  EXPECT_LT(MaxAbsDiff(l, ref), 1e-12);
}

TEST(LinalgTest, CholeskyRejectsIndefiniteAndNonFinite) {
  // [[1, 2], [2, 1]] has eigenvalues 3 and -1: the second pivot is 1 - 4 = -3.
  std::vector<double> a = {1, 2, 2, 1};
  absl::Status s = CholeskyLower(a.data(), 2);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("pivot 1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("-3"), std::string::npos) << s;

  std::vector<double> b = RandomSpd(70, 3);
  b[66 * 70 + 66] = NAN;
  s = CholeskyLower(b.data(), 70);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("pivot 66"), std::string::npos) << s;

  // A rank-deficient Gram matrix (rows < cols) without dampening.
  std::vector<double> g = RandomSpd(80, 9, 0.0);
  std::vector<float> x = RandomMatrix(10, 80, 2);
  std::vector<double> low(80 * 80, 0.0);
  AccumulateGram(x.data(), 10, 80, low.data());
  EXPECT_FALSE(CholeskyInverse(low.data(), 80).ok());
}

TEST(LinalgTest, InvertLowerTriangular) {
  for (int64_t n : {1, 2, 63, 64, 129, 260}) {
    std::vector<double> l = RandomSpd(n, 21 + n);
    ASSERT_TRUE(CholeskyLower(l.data(), n).ok());
    std::vector<double> inv = l;
    InvertLowerTriangular(inv.data(), n);
    std::vector<double> prod = MatMulRef(l, inv, n);
    double err = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        err = std::max(err, std::abs(prod[i * n + j] - (i == j ? 1.0 : 0.0)));
        if (j > i) {
          ASSERT_EQ(inv[i * n + j], 0.0);
        }
      }
    }
    EXPECT_LT(err, 1e-11) << n;
  }
}

TEST(LinalgTest, CholeskyInverse) {
  for (int64_t n : {1, 7, 128, 190}) {
    std::vector<double> a = RandomSpd(n, 31 + n);
    std::vector<double> inv = a;
    ASSERT_TRUE(CholeskyInverse(inv.data(), n).ok());
    std::vector<double> prod = MatMulRef(a, inv, n);
    double err = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        err = std::max(err, std::abs(prod[i * n + j] - (i == j ? 1.0 : 0.0)));
        ASSERT_NEAR(inv[i * n + j], inv[j * n + i], 1e-12);
      }
    }
    EXPECT_LT(err, 1e-10) << n;
  }
}

// The reference route: cholesky -> cholesky_inverse -> cholesky(upper).
TEST(LinalgTest, UpperCholeskyOfInverseMatchesReferenceRoute) {
  for (int64_t n : {1, 2, 65, 257}) {
    std::vector<double> a = RandomSpd(n, 41 + n);
    std::vector<double> inv = a;
    ASSERT_TRUE(CholeskyInverse(inv.data(), n).ok());
    std::vector<double> l2 = inv;
    ASSERT_TRUE(CholeskyLower(l2.data(), n).ok());  // inv = L2 L2^T, U = L2^T
    std::vector<double> u = a;
    ASSERT_TRUE(UpperCholeskyOfInverse(u.data(), n).ok());
    double err = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (j < i) {
          ASSERT_EQ(u[i * n + j], 0.0);
        }
        err = std::max(err, std::abs(u[i * n + j] - l2[j * n + i]));
      }
    }
    EXPECT_LT(err, 1e-10) << n;
    // U^T U == a^-1.
    EXPECT_LT(MaxAbsDiff(MatMulRef(u, u, n, /*trans_a=*/true), inv), 1e-10) << n;
  }
  std::vector<double> bad = {1, 2, 2, 1};
  absl::Status s = UpperCholeskyOfInverse(bad.data(), 2);
  EXPECT_FALSE(s.ok());
}

TEST(LinalgTest, ResultsDoNotDependOnThreadCount) {
  const int64_t n = 300;
  std::vector<float> x = RandomMatrix(500, n, 77);
  std::vector<double> results[2];
  for (int threads : {1, 3}) {
    SetNumThreads(threads);
    std::vector<double> h(n * n, 0.0);
    AccumulateGram(x.data(), 500, n, h.data());
    for (int64_t i = 0; i < n; ++i) h[i * n + i] += 1.0;
    ASSERT_TRUE(UpperCholeskyOfInverse(h.data(), n).ok());
    results[threads == 1 ? 0 : 1] = h;
  }
  SetNumThreads(2);
  EXPECT_EQ(results[0], results[1]);
}

TEST(LinalgTest, GemmBothPrecisions) {
  // c[2x3] = 2 * a^T b - c with a [4x2], b [4x3].
  std::vector<double> a = {1, 2, 3, 4, 5, 6, 7, 8}, b = {1, 0, 1, 0, 1, 0, 1, 1, 1, 2, 0, 0};
  std::vector<double> c = {1, 1, 1, 1, 1, 1};
  Gemm(true, false, 2, 3, 4, 2.0, a.data(), 2, b.data(), 3, -1.0, c.data(), 3);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      double s = 0;
      for (int p = 0; p < 4; ++p) s += a[p * 2 + i] * b[p * 3 + j];
      EXPECT_EQ(c[i * 3 + j], 2 * s - 1);
    }
  }
  std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end()), cf(6, 0.f);
  Gemm(true, false, 2, 3, 4, 1.0f, af.data(), 2, bf.data(), 3, 0.0f, cf.data(), 3);
  EXPECT_EQ(cf[0], 1 * 1 + 3 * 0 + 5 * 1 + 7 * 2);
  EXPECT_EQ(cf[5], 2 * 1 + 4 * 0 + 6 * 1 + 8 * 0);
}

}  // namespace
}  // namespace retort::cpu
