// The CPU fused LM-head loss (kernels/cpu/lm_head_loss.h) at the kernel
// level: CE and dense-teacher forward KL against a plain f64 loop with the
// logits materialised, the same bits on 1, 2 and 3 threads, and the
// ParseKdDivergence / KdDivergenceName round trip. The full matrix of
// divergences, top-k tails and PyTorch fixtures is tests/distill/loss_test.cc.
#include "kernels/cpu/lm_head_loss.h"

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

struct Reference {
  double ce = 0, kd = 0;
  std::vector<double> dh, dw;
};

std::vector<double> Logits(const std::vector<float>& h, int64_t row, int64_t d,
                           const std::vector<float>& w, int64_t vocab) {
  std::vector<double> z(vocab);
  for (int64_t j = 0; j < vocab; ++j) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += static_cast<double>(h[row * d + c]) * w[j * d + c];
    z[j] = s;
  }
  return z;
}

std::vector<double> Softmax(const std::vector<double>& z, double t) {
  const double mx = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t j = 0; j < z.size(); ++j) s += p[j] = std::exp((z[j] - mx) / t);
  for (double& x : p) x /= s;
  return p;
}

// CE (weight ce_w) plus kd_w * T^2 * KL(q || p) at temperature T, gradients
// scaled by grad_scale.
Reference F64Loss(const std::vector<float>& h, int64_t n, int64_t d, const std::vector<float>& w,
                  int64_t vocab, const std::vector<int32_t>& targets, const std::vector<float>& th,
                  int64_t td, const std::vector<float>& tw, double ce_w, double kd_w, double T,
                  double grad_scale) {
  Reference r;
  r.dh.assign(n * d, 0);
  r.dw.assign(vocab * d, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] < 0) continue;
    const auto z = Logits(h, i, d, w, vocab);
    const auto p1 = Softmax(z, 1);
    r.ce -= std::log(p1[targets[i]]);
    std::vector<double> dz(vocab);
    for (int64_t j = 0; j < vocab; ++j) dz[j] = ce_w * (p1[j] - (j == targets[i]));
    if (kd_w > 0) {
      const auto pt = Softmax(z, T), q = Softmax(Logits(th, i, td, tw, vocab), T);
      double D = 0;
      for (int64_t j = 0; j < vocab; ++j) {
        D += q[j] * (std::log(q[j]) - std::log(pt[j]));
        dz[j] += kd_w * T * (pt[j] - q[j]);
      }
      r.kd += T * T * D;
    }
    for (int64_t j = 0; j < vocab; ++j) {
      const double g = grad_scale * dz[j];
      for (int64_t c = 0; c < d; ++c) {
        r.dh[i * d + c] += g * w[j * d + c];
        r.dw[j * d + c] += g * h[i * d + c];
      }
    }
  }
  return r;
}

double RelErr(const std::vector<float>& got, const std::vector<double>& ref) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::abs(got[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return scale > 0 ? err / scale : err;
}

struct Case {
  int64_t n = 23, d = 40, vocab = 1100, td = 24;
  std::vector<float> h, w, th, tw;
  std::vector<int32_t> targets;
  Case() {
    h = RandomVector(n * d, 1);
    w = RandomVector(vocab * d, 2, 0.3f);
    th = RandomVector(n * td, 3);
    tw = RandomVector(vocab * td, 4, 0.4f);
    for (int64_t i = 0; i < n; ++i) {
      targets.push_back(i % 5 == 2 ? -1 : static_cast<int32_t>((i * 7919) % vocab));
    }
  }
};

TEST(LmHeadLossTest, CeAndDenseForwardKlMatchF64) {
  const Case c;
  for (const bool kd : {false, true}) {
    LossOptions o;
    o.row_chunk = 8;  // several chunks
    o.ce_weight = kd ? 0.5f : 1.f;
    o.kd_weight = kd ? 0.8f : 0.f;
    o.temperature = kd ? 2.f : 1.f;
    const TeacherSignal t =
        kd ? TeacherSignal::Dense(c.th.data(), c.td, c.tw.data(), c.vocab) : TeacherSignal::None();
    const float grad_scale = 1.f / 17;
    std::vector<float> dh(c.n * c.d, 5.f), dw(c.vocab * c.d, 0.f);
    auto got = LmHeadLoss(c.h.data(), c.n, c.d, c.w.data(), c.vocab, c.targets.data(), t, o,
                          grad_scale, dh.data(), dw.data());
    ASSERT_TRUE(got.ok()) << got.status();
    const Reference ref = F64Loss(c.h, c.n, c.d, c.w, c.vocab, c.targets, c.th, c.td, c.tw,
                                  o.ce_weight, o.kd_weight, o.temperature, grad_scale);
    int64_t tokens = 0;
    for (int32_t y : c.targets) tokens += y >= 0;
    EXPECT_EQ(got->tokens, tokens);
    EXPECT_NEAR(got->ce_sum, ref.ce, 1e-4 * ref.ce) << kd;
    EXPECT_NEAR(got->kd_sum, ref.kd, 1e-4 * std::max(ref.kd, 1e-6)) << kd;
    EXPECT_NEAR(got->loss_sum, o.ce_weight * ref.ce + o.kd_weight * ref.kd,
                1e-4 * (ref.ce + ref.kd))
        << kd;
    EXPECT_LT(RelErr(dh, ref.dh), 1e-4) << kd;
    EXPECT_LT(RelErr(dw, ref.dw), 1e-4) << kd;
  }
}

TEST(LmHeadLossTest, RejectsBadTargetWritingNothing) {
  const Case c;
  std::vector<int32_t> bad = c.targets;
  bad[4] = static_cast<int32_t>(c.vocab);
  std::vector<float> dh(c.n * c.d, 5.f);
  auto got = LmHeadLoss(c.h.data(), c.n, c.d, c.w.data(), c.vocab, bad.data(),
                        TeacherSignal::None(), LossOptions(), 1.f, dh.data(), nullptr);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(std::all_of(dh.begin(), dh.end(), [](float x) { return x == 5.f; }));
}

TEST(LmHeadLossTest, SameBitsForAnyThreadCount) {
  const Case c;
  LossOptions o;
  o.row_chunk = 8;
  o.kd_weight = 1.f;
  o.divergence = KdDivergence::kJsd;
  o.temperature = 1.5f;
  const TeacherSignal t = TeacherSignal::Dense(c.th.data(), c.td, c.tw.data(), c.vocab);
  auto run = [&] {
    std::vector<float> dh(c.n * c.d), dw(c.vocab * c.d, 0.f);
    auto r = LmHeadLoss(c.h.data(), c.n, c.d, c.w.data(), c.vocab, c.targets.data(), t, o, 0.1f,
                        dh.data(), dw.data());
    EXPECT_TRUE(r.ok()) << r.status();
    return std::make_tuple(r.ok() ? *r : LossResult(), dh, dw);
  };
  SetNumThreads(1);
  const auto one = run();
  for (int threads : {2, 3}) {
    SetNumThreads(threads);
    const auto many = run();
    EXPECT_EQ(std::get<0>(many).loss_sum, std::get<0>(one).loss_sum) << threads;
    EXPECT_EQ(std::get<1>(many), std::get<1>(one)) << threads;
    EXPECT_EQ(std::get<2>(many), std::get<2>(one)) << threads;
  }
  SetNumThreads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

TEST(KdDivergenceTest, NamesRoundTrip) {
  for (KdDivergence d : {KdDivergence::kForwardKl, KdDivergence::kReverseKl, KdDivergence::kJsd,
                         KdDivergence::kSampledReverseKl}) {
    auto parsed = ParseKdDivergence(KdDivergenceName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(ParseKdDivergence("kl").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace retort::cpu
