// Optimizer kernels (kernels/cpu/optimizer_ops.h): AdamWStep against an f64
// loop of torch's formula and, bit for bit, against a scalar f32 loop of the
// same operations; GradSumSquares against an f64 sum and against its block
// order; ScaleInPlace exactly; and the same bits on 1, 2 and 3 threads.
#include "kernels/cpu/optimizer_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using testing::RandomVector;

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct State {
  std::vector<float> p, m, v;
};

State MakeState(int64_t n, uint32_t seed) {
  State s{RandomVector(n, seed), RandomVector(n, seed + 1, 0.1f), RandomVector(n, seed + 2, 0.01f)};
  for (float& x : s.v) x = std::abs(x);
  return s;
}

// torch.optim.AdamW's single-tensor step in f64.
void AdamWF64(std::vector<double>& p, const std::vector<float>& g, std::vector<double>& m,
              std::vector<double>& v, const AdamWStepParams& hp) {
  const double b1 = hp.beta1, b2 = hp.beta2, lr = hp.lr;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(hp.step));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(hp.step));
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] *= 1 - lr * hp.weight_decay;
    m[i] += (1 - b1) * (g[i] - m[i]);
    v[i] = b2 * v[i] + (1 - b2) * g[i] * static_cast<double>(g[i]);
    p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + hp.eps);
  }
}

// The f32 operations AdamWStep documents, one element at a time.
void AdamWScalar(State& s, const std::vector<float>& g, const AdamWStepParams& hp) {
  const double b1 = hp.beta1, b2 = hp.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(hp.step));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(hp.step));
  const float step_size = static_cast<float>(static_cast<double>(hp.lr) / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float w1 = static_cast<float>(1 - b1), w2 = static_cast<float>(1 - b2);
  const float decay = static_cast<float>(1 - static_cast<double>(hp.lr) * hp.weight_decay);
  for (size_t i = 0; i < s.p.size(); ++i) {
    float p = s.p[i];
    if (hp.weight_decay != 0) p *= decay;
    const float mi = std::fma(w1, g[i] - s.m[i], s.m[i]);
    const float vi = std::fma(s.v[i], hp.beta2, w2 * g[i] * g[i]);
    s.m[i] = mi;
    s.v[i] = vi;
    s.p[i] = p - (step_size * mi) / (std::sqrt(vi) / bc2_sqrt + hp.eps);
  }
}

double MaxRelErr(const std::vector<float>& got, const std::vector<double>& ref) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::abs(got[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return scale > 0 ? err / scale : err;
}

TEST(AdamWStepTest, MatchesF64AndScalarLoop) {
  // Sizes around the 8-wide vector loop and the 2^15-element blocks.
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{8}, int64_t{13}, int64_t{1} << 15,
                    (int64_t{1} << 16) + 5}) {
    for (float wd : {0.f, 0.1f}) {
      State s = MakeState(n, 1);
      State scalar = s;
      std::vector<double> p64(s.p.begin(), s.p.end()), m64(s.m.begin(), s.m.end()),
          v64(s.v.begin(), s.v.end());
      for (int64_t step = 1; step <= 3; ++step) {
        const auto g = RandomVector(n, 10 + static_cast<uint32_t>(step), 0.5f);
        AdamWStepParams hp;
        hp.lr = 1e-2f * step;
        hp.weight_decay = wd;
        hp.step = step;
        AdamWStep(s.p.data(), g.data(), s.m.data(), s.v.data(), n, hp);
        AdamWScalar(scalar, g, hp);
        AdamWF64(p64, g, m64, v64, hp);
        EXPECT_TRUE(SameBits(s.p, scalar.p)) << "n " << n << " wd " << wd << " step " << step;
        EXPECT_TRUE(SameBits(s.m, scalar.m)) << "n " << n << " wd " << wd << " step " << step;
        EXPECT_TRUE(SameBits(s.v, scalar.v)) << "n " << n << " wd " << wd << " step " << step;
        EXPECT_LT(MaxRelErr(s.p, p64), 1e-6) << "n " << n << " wd " << wd << " step " << step;
        EXPECT_LT(MaxRelErr(s.m, m64), 1e-6) << "n " << n << " wd " << wd << " step " << step;
        EXPECT_LT(MaxRelErr(s.v, v64), 1e-6) << "n " << n << " wd " << wd << " step " << step;
      }
    }
  }
}

TEST(AdamWStepTest, ZeroDecayLeavesZeroGradientParamsAtRest) {
  // m = v = 0 and g = 0: the update is 0 / (0 + eps) = 0, and without decay
  // the parameters keep their bits.
  const int64_t n = 37;
  std::vector<float> p = RandomVector(n, 3), p0 = p, g(n, 0.f), m(n, 0.f), v(n, 0.f);
  AdamWStepParams hp;
  hp.lr = 0.5f;
  AdamWStep(p.data(), g.data(), m.data(), v.data(), n, hp);
  EXPECT_TRUE(SameBits(p, p0));
}

TEST(GradSumSquaresTest, MatchesF64AndBlockOrder) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{4}, int64_t{1001}, int64_t{1} << 15,
                    3 * (int64_t{1} << 15) + 17}) {
    const auto x = RandomVector(n, 5, 3.f);
    double ref = 0;
    for (float f : x) ref += static_cast<double>(f) * f;
    const double got = GradSumSquares(x.data(), n);
    EXPECT_NEAR(got, ref, 1e-12 * std::max(1.0, ref)) << n;
    // The documented order: four lanes per 2^15 block, blocks in order.
    constexpr int64_t kBlock = int64_t{1} << 15;
    double total = 0;
    for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
      const int64_t b1 = std::min(n, b0 + kBlock);
      double s[4] = {0, 0, 0, 0};
      int64_t i = b0;
      for (; i + 4 <= b1; i += 4) {
        for (int l = 0; l < 4; ++l) s[l] += static_cast<double>(x[i + l]) * x[i + l];
      }
      for (; i < b1; ++i) s[0] += static_cast<double>(x[i]) * x[i];
      total += (s[0] + s[1]) + (s[2] + s[3]);
    }
    EXPECT_EQ(std::memcmp(&got, &total, sizeof(double)), 0) << n;
  }
}

TEST(ScaleInPlaceTest, MultipliesEveryElement) {
  for (int64_t n : {int64_t{0}, int64_t{5}, (int64_t{1} << 15) + 3}) {
    auto x = RandomVector(n, 9, 4.f);
    auto want = x;
    for (float& f : want) f *= 0.3f;
    ScaleInPlace(x.data(), n, 0.3f);
    EXPECT_TRUE(SameBits(x, want)) << n;
  }
}

TEST(OptimizerOpsDeterminismTest, SameBitsForAnyThreadCount) {
  const int64_t n = 5 * (int64_t{1} << 15) + 11;
  auto run = [&] {
    State s = MakeState(n, 21);
    const auto g = RandomVector(n, 24, 0.5f);
    AdamWStepParams hp;
    hp.lr = 1e-3f;
    hp.weight_decay = 0.01f;
    hp.step = 4;
    AdamWStep(s.p.data(), g.data(), s.m.data(), s.v.data(), n, hp);
    ScaleInPlace(s.m.data(), n, 0.7f);
    const double ss = GradSumSquares(s.p.data(), n);
    return std::make_pair(s, ss);
  };
  SetNumThreads(1);
  const auto one = run();
  for (int threads : {2, 3}) {
    SetNumThreads(threads);
    const auto many = run();
    EXPECT_TRUE(SameBits(many.first.p, one.first.p)) << threads;
    EXPECT_TRUE(SameBits(many.first.m, one.first.m)) << threads;
    EXPECT_TRUE(SameBits(many.first.v, one.first.v)) << threads;
    EXPECT_EQ(std::memcmp(&many.second, &one.second, sizeof(double)), 0) << threads;
  }
  SetNumThreads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace
}  // namespace retort::cpu
