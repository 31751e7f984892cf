// Sgemm (kernels/cpu/sgemm.h) against a plain f64 loop: all four transpose
// combinations, every size 1..70 in each dimension (the micro-tile is 14 x 32,
// so this walks every edge tile), sizes past each cache block (MC, NC, KC),
// padded leading dimensions, alpha/beta special and odd values, beta == 0 on
// NaN-filled C, k == 0, and bit-for-bit determinism.
//
// Tolerance per element: (k + 4) * 2^-23 * (|alpha| * sum_p |a_ip||b_pj| +
// |beta * c_ij|), a bound on f32 accumulation error in any order.
#include "kernels/cpu/sgemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/sgemm_kernels.h"

namespace retort::cpu {
namespace {

struct Case {
  bool ta = false, tb = false;
  int m = 1, n = 1, k = 1;
  float alpha = 1.f, beta = 0.f;
  int pad_a = 0, pad_b = 0, pad_c = 0;  // extra floats per stored row
  bool nan_c = false;                   // fill C with NaN before the call

  std::string Name() const {
    return std::string(ta ? "T" : "N") + (tb ? "T" : "N") + " m=" + std::to_string(m) +
           " n=" + std::to_string(n) + " k=" + std::to_string(k) +
           " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta) +
           " pads=" + std::to_string(pad_a) + "," + std::to_string(pad_b) + "," +
           std::to_string(pad_c) + (nan_c ? " nan C" : "");
  }
};

constexpr float kSentinel = 12345.f;

struct Operands {
  int lda, ldb, ldc;
  std::vector<float> a, b, c;
};

Operands MakeOperands(const Case& t, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  Operands o;
  const int a_rows = t.ta ? t.k : t.m, a_cols = t.ta ? t.m : t.k;
  const int b_rows = t.tb ? t.n : t.k, b_cols = t.tb ? t.k : t.n;
  o.lda = a_cols + t.pad_a;
  o.ldb = b_cols + t.pad_b;
  o.ldc = t.n + t.pad_c;
  // Padding holds NaN: reading it would poison the result.
  o.a.assign(static_cast<size_t>(std::max(1, a_rows * o.lda)),
             std::numeric_limits<float>::quiet_NaN());
  o.b.assign(static_cast<size_t>(std::max(1, b_rows * o.ldb)),
             std::numeric_limits<float>::quiet_NaN());
  for (int i = 0; i < a_rows; ++i)
    for (int j = 0; j < a_cols; ++j) o.a[i * o.lda + j] = dist(rng);
  for (int i = 0; i < b_rows; ++i)
    for (int j = 0; j < b_cols; ++j) o.b[i * o.ldb + j] = dist(rng);
  o.c.assign(static_cast<size_t>(t.m * o.ldc), kSentinel);
  for (int i = 0; i < t.m; ++i)
    for (int j = 0; j < t.n; ++j)
      o.c[i * o.ldc + j] = t.nan_c ? std::numeric_limits<float>::quiet_NaN() : dist(rng);
  return o;
}

void RunSgemm(const Case& t, Operands& o) {
  Sgemm(t.ta, t.tb, t.m, t.n, t.k, t.alpha, o.a.data(), o.lda, o.b.data(), o.ldb, t.beta,
        o.c.data(), o.ldc);
}

// Runs one case and checks every element of C (and that C's padding is
// untouched). Returns false after the first failure (reported with the case).
bool Check(const Case& t, uint32_t seed = 1) {
  Operands o = MakeOperands(t, seed);
  const std::vector<float> c0 = o.c;
  RunSgemm(t, o);
  auto at_a = [&](int i, int p) { return t.ta ? o.a[p * o.lda + i] : o.a[i * o.lda + p]; };
  auto at_b = [&](int p, int j) { return t.tb ? o.b[j * o.ldb + p] : o.b[p * o.ldb + j]; };
  const double unit = std::ldexp(1.0, -23);
  for (int i = 0; i < t.m; ++i) {
    for (int j = 0; j < t.n; ++j) {
      double sum = 0, abs_sum = 0;
      for (int p = 0; p < t.k; ++p) {
        const double prod = static_cast<double>(at_a(i, p)) * at_b(p, j);
        sum += prod;
        abs_sum += std::abs(prod);
      }
      const double cin = c0[i * o.ldc + j];
      double ref = static_cast<double>(t.alpha) * sum;
      double scale = std::abs(static_cast<double>(t.alpha)) * abs_sum;
      if (t.beta != 0.f) {
        ref += static_cast<double>(t.beta) * cin;
        scale += std::abs(static_cast<double>(t.beta) * cin);
      }
      const double got = o.c[i * o.ldc + j];
      const double tol = (t.k + 4) * unit * scale + 1e-30;
      if (!(std::abs(got - ref) <= tol)) {
        ADD_FAILURE() << t.Name() << ": C[" << i << "," << j << "] = " << got << ", want " << ref
                      << " (tol " << tol << ")";
        return false;
      }
    }
    for (int j = t.n; j < o.ldc; ++j) {
      if (o.c[i * o.ldc + j] != kSentinel) {
        ADD_FAILURE() << t.Name() << ": padding C[" << i << "," << j << "] written";
        return false;
      }
    }
  }
  return true;
}

constexpr bool kTrans[2] = {false, true};

// Sizes that sit on and around the 14 x 32 micro-tile and 16-lane edges.
const int kEdgeSizes[] = {1, 2, 5, 13, 14, 15, 16, 17, 29, 31, 32, 33, 47, 48, 64, 67};

TEST(SgemmTest, UsesAvx512WhereTheCpuHasIt) {
  if (!SgemmPathSupported(SgemmPath::kAvx512)) GTEST_SKIP() << "CPU lacks AVX-512 F";
  const char* no = std::getenv("RETORT_NO_AVX512");
  if (no != nullptr && no[0] != '\0' && std::strcmp(no, "0") != 0) GTEST_SKIP();
  EXPECT_EQ(ActiveSgemmPath(), SgemmPath::kAvx512);
}

// Every m, n and k in 1..70 with the other two on edge sizes, all transposes.
TEST(SgemmTest, EverySizeUpTo70) {
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      for (int s = 1; s <= 70; ++s) {
        for (int other : {3, 17, 33}) {
          const int o2 = other == 17 ? 46 : other + 11;
          ASSERT_TRUE(Check({.ta = ta, .tb = tb, .m = s, .n = other, .k = o2}));
          ASSERT_TRUE(Check({.ta = ta, .tb = tb, .m = other, .n = s, .k = o2}));
          ASSERT_TRUE(Check({.ta = ta, .tb = tb, .m = o2, .n = other, .k = s}));
        }
      }
    }
  }
}

TEST(SgemmTest, EdgeSizeGrid) {
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      for (int m : kEdgeSizes) {
        for (int n : kEdgeSizes) {
          for (int k : {1, 7, 16, 23, 61}) {
            ASSERT_TRUE(Check({.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .beta = 1.f}));
          }
        }
      }
    }
  }
}

// Past every cache block: m > MC, n > NC, k > KC (two and three k blocks),
// with padded leading dimensions.
TEST(SgemmTest, LargeAndStrided) {
  static_assert(sgemm_internal::kMC < 300 && sgemm_internal::kNC < 517);
  static_assert(sgemm_internal::kKC < 300 && 2 * sgemm_internal::kKC < 601);
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      ASSERT_TRUE(Check({.ta = ta, .tb = tb, .m = 300, .n = 517, .k = 129}));
      ASSERT_TRUE(Check({.ta = ta, .tb = tb, .m = 97, .n = 131, .k = 601, .beta = 1.f}));
      ASSERT_TRUE(Check({.ta = ta,
                         .tb = tb,
                         .m = 283,
                         .n = 529,
                         .k = 300,
                         .alpha = 0.5f,
                         .beta = -1.5f,
                         .pad_a = 3,
                         .pad_b = 17,
                         .pad_c = 5}));
    }
  }
}

TEST(SgemmTest, LeadingDimensionsWiderThanRows) {
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      for (int pad : {1, 7, 16, 64}) {
        ASSERT_TRUE(Check({.ta = ta,
                           .tb = tb,
                           .m = 29,
                           .n = 45,
                           .k = 37,
                           .beta = 1.f,
                           .pad_a = pad,
                           .pad_b = pad + 3,
                           .pad_c = pad + 1}));
      }
    }
  }
}

TEST(SgemmTest, AlphaBetaValues) {
  const float alphas[] = {1.f, 0.f, -0.75f, 2.5f};
  const float betas[] = {0.f, 1.f, 0.5f, -1.25f};
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      for (float alpha : alphas) {
        for (float beta : betas) {
          ASSERT_TRUE(Check({.ta = ta,
                             .tb = tb,
                             .m = 31,
                             .n = 50,
                             .k = 27,
                             .alpha = alpha,
                             .beta = beta,
                             .pad_c = 2}));
          ASSERT_TRUE(Check(
              {.ta = ta, .tb = tb, .m = 20, .n = 40, .k = 280, .alpha = alpha, .beta = beta}));
        }
      }
    }
  }
}

// beta == 0 must overwrite C without reading it, as cblas_sgemm does.
TEST(SgemmTest, BetaZeroOverwritesNaN) {
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      for (float alpha : {1.f, -2.f, 0.f}) {
        ASSERT_TRUE(Check({.ta = ta,
                           .tb = tb,
                           .m = 33,
                           .n = 35,
                           .k = 300,
                           .alpha = alpha,
                           .beta = 0.f,
                           .pad_c = 3,
                           .nan_c = true}));
        ASSERT_TRUE(Check({.ta = ta,
                           .tb = tb,
                           .m = 5,
                           .n = 7,
                           .k = 3,
                           .alpha = alpha,
                           .beta = 0.f,
                           .nan_c = true}));
      }
    }
  }
}

// k == 0: C = beta * C (zeros for beta == 0, even over NaN).
TEST(SgemmTest, EmptyInnerDimensionScalesC) {
  for (float beta : {0.f, 1.f, 0.5f}) {
    ASSERT_TRUE(Check({.m = 9, .n = 21, .k = 0, .beta = beta, .pad_c = 4}));
    ASSERT_TRUE(Check({.ta = true, .tb = true, .m = 9, .n = 21, .k = 0, .beta = beta}));
  }
  ASSERT_TRUE(Check({.m = 9, .n = 21, .k = 0, .beta = 0.f, .nan_c = true}));
}

TEST(SgemmTest, EmptyOutputIsANoOp) {
  float c = 7.f;
  const float a = 1.f, b = 1.f;
  Sgemm(false, false, 0, 1, 1, 1.f, &a, 1, &b, 1, 0.f, &c, 1);
  Sgemm(false, false, 1, 0, 1, 1.f, &a, 1, &b, 1, 0.f, &c, 1);
  EXPECT_EQ(c, 7.f);
}

TEST(SgemmTest, RandomShapes) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> dim(1, 150), pad(0, 9), flag(0, 1);
  for (int t = 0; t < 60; ++t) {
    Case c{.ta = flag(rng) == 1,
           .tb = flag(rng) == 1,
           .m = dim(rng),
           .n = dim(rng),
           .k = dim(rng) * 3,
           .alpha = flag(rng) ? 1.f : 0.37f,
           .beta = flag(rng) ? 0.f : 1.f,
           .pad_a = pad(rng),
           .pad_b = pad(rng),
           .pad_c = pad(rng)};
    ASSERT_TRUE(Check(c, 100 + t));
  }
}

std::vector<float> Result(const Case& t, uint32_t seed) {
  Operands o = MakeOperands(t, seed);
  RunSgemm(t, o);
  return o.c;
}

bool SameBits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

TEST(SgemmTest, Deterministic) {
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      const Case t{.ta = ta, .tb = tb, .m = 123, .n = 77, .k = 555, .beta = 1.f, .pad_c = 1};
      EXPECT_TRUE(SameBits(Result(t, 3), Result(t, 3))) << t.Name();
    }
  }
}

// An element's bits do not depend on which tile of C it is computed in, so
// callers may split C into any tiles (train_ops.cc does).
TEST(SgemmTest, TilesGiveTheSameBitsAsTheWhole) {
  if (ActiveSgemmPath() != SgemmPath::kAvx512) GTEST_SKIP() << "a property of our kernel only";
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      const Case t{.ta = ta, .tb = tb, .m = 90, .n = 100, .k = 700};
      Operands whole = MakeOperands(t, 5);
      Operands tiled = whole;
      RunSgemm(t, whole);
      const int i0 = 13, i1 = 61, j0 = 37, j1 = 88;
      const float* a = ta ? tiled.a.data() + i0 : tiled.a.data() + i0 * tiled.lda;
      const float* b = tb ? tiled.b.data() + j0 * tiled.ldb : tiled.b.data() + j0;
      Sgemm(ta, tb, i1 - i0, j1 - j0, t.k, 1.f, a, tiled.lda, b, tiled.ldb, 0.f,
            tiled.c.data() + i0 * tiled.ldc + j0, tiled.ldc);
      for (int i = i0; i < i1; ++i) {
        ASSERT_EQ(std::memcmp(&whole.c[i * whole.ldc + j0], &tiled.c[i * tiled.ldc + j0],
                              (j1 - j0) * sizeof(float)),
                  0)
            << t.Name() << " row " << i;
      }
    }
  }
}

// The per-thread packing buffers: concurrent calls give the sequential bits.
TEST(SgemmTest, ConcurrentCallsMatchSequential) {
  std::vector<Case> cases;
  for (int i = 0; i < 4; ++i) {
    cases.push_back({.ta = (i & 1) != 0,
                     .tb = (i & 2) != 0,
                     .m = 150 + i,
                     .n = 530,
                     .k = 270 + 9 * i,
                     .beta = 1.f});
  }
  std::vector<std::vector<float>> sequential, concurrent(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) sequential.push_back(Result(cases[i], 11 + i));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cases.size(); ++i) {
    threads.emplace_back([&, i] { concurrent[i] = Result(cases[i], 11 + i); });
  }
  for (auto& th : threads) th.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_TRUE(SameBits(sequential[i], concurrent[i])) << cases[i].Name();
  }
}

// The OpenBLAS fallback meets the same contract.
TEST(SgemmTest, OpenBlasPath) {
  const SgemmPath before = ActiveSgemmPath();
  ASSERT_TRUE(SetSgemmPath(SgemmPath::kOpenBlas));
  for (bool ta : kTrans) {
    for (bool tb : kTrans) {
      EXPECT_TRUE(Check({.ta = ta,
                         .tb = tb,
                         .m = 37,
                         .n = 45,
                         .k = 61,
                         .alpha = 0.5f,
                         .beta = 0.f,
                         .pad_a = 2,
                         .pad_c = 1,
                         .nan_c = true}));
      EXPECT_TRUE(Check({.ta = ta, .tb = tb, .m = 9, .n = 21, .k = 0, .beta = 0.5f}));
    }
  }
  ASSERT_TRUE(SetSgemmPath(before));
}

}  // namespace
}  // namespace retort::cpu
