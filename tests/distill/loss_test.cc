// distill/loss.h: ComputeLoss against PyTorch autograd fixtures
// (tests/reference/losses/make_fixtures.py) and against a plain f64
// re-implementation here (full logits materialised) with gradients by central
// finite differences of that f64 loss. Tensor errors are
// max |got - ref| / max |ref|.
#include "distill/loss.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {

using ::testing::HasSubstr;

constexpr double kTol = 1e-4;

double RelErr(const float* got, const float* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(static_cast<double>(got[i]) - ref[i]));
    den = std::max(den, std::abs(static_cast<double>(ref[i])));
  }
  return den == 0 ? num : num / den;
}

double RelErrD(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num = std::max(num, std::abs(got[i] - ref[i]));
    den = std::max(den, std::abs(ref[i]));
  }
  return den == 0 ? num : num / den;
}

double Rel(double got, double ref) { return std::abs(got - ref) / std::max(std::abs(ref), 1e-12); }

std::vector<float> RandomVector(int64_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ----------------------------------------------------------------------------
// Plain f64 reference (materialises [n, vocab] logits; small problems only).

struct Problem {
  int64_t n, d, vocab, td = 0, k = 0;
  std::vector<float> h, w, th, tw, topk_lp;
  std::vector<int32_t> targets, topk_ids;
  TeacherSignal::Kind kind = TeacherSignal::Kind::kNone;

  TeacherSignal Teacher() const {
    switch (kind) {
      case TeacherSignal::Kind::kDense:
        return TeacherSignal::Dense(th.data(), td, tw.data(), vocab);
      case TeacherSignal::Kind::kTopK:
        return TeacherSignal::TopK(topk_ids.data(), topk_lp.data(), k);
      default:
        return TeacherSignal::None();
    }
  }
};

std::vector<double> LogSoftmax(const std::vector<double>& x) {
  double m = -INFINITY;
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  const double lse = m + std::log(s);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] - lse;
  return out;
}

double RefDivergence(const std::vector<double>& lq, const std::vector<double>& lp,
                     KdDivergence kind, double beta) {
  if (kind == KdDivergence::kJsd && beta == 0) kind = KdDivergence::kForwardKl;
  if (kind == KdDivergence::kJsd && beta == 1) kind = KdDivergence::kReverseKl;
  double D = 0;
  for (size_t i = 0; i < lq.size(); ++i) {
    const double q = std::exp(lq[i]), p = std::exp(lp[i]);
    switch (kind) {
      case KdDivergence::kForwardKl:
        if (q > 0) D += q * (lq[i] - lp[i]);
        break;
      case KdDivergence::kReverseKl:
        D += p * (lp[i] - lq[i]);
        break;
      case KdDivergence::kJsd: {
        const double m = beta * q + (1 - beta) * p;
        const double lm = std::log(m);
        if (q > 0) D += beta * q * (lq[i] - lm);
        if (p > 0) D += (1 - beta) * p * (lp[i] - lm);
        break;
      }
      case KdDivergence::kSampledReverseKl:  // not a divergence over a distribution
        break;
    }
  }
  return D;
}

struct RefResult {
  double loss, ce, kd;
};

// hd / wd: f64 copies of h / w (perturbed by the finite differences).
RefResult RefLoss(const Problem& p, const std::vector<double>& hd, const std::vector<double>& wd,
                  const LossOptions& o) {
  RefResult r{0, 0, 0};
  const double T = o.temperature;
  for (int64_t i = 0; i < p.n; ++i) {
    if (p.targets[i] < 0) continue;
    std::vector<double> z(p.vocab);
    for (int64_t v = 0; v < p.vocab; ++v) {
      double s = 0;
      for (int64_t j = 0; j < p.d; ++j) s += hd[i * p.d + j] * wd[v * p.d + j];
      z[v] = s;
    }
    const auto lp1 = LogSoftmax(z);
    r.ce -= lp1[p.targets[i]];
    if (o.kd_weight == 0) continue;
    std::vector<double> zt(p.vocab);
    for (int64_t v = 0; v < p.vocab; ++v) zt[v] = z[v] / T;
    const auto lpT = LogSoftmax(zt);
    if (p.kind == TeacherSignal::Kind::kDense) {
      std::vector<double> t(p.vocab);
      for (int64_t v = 0; v < p.vocab; ++v) {
        double s = 0;
        for (int64_t j = 0; j < p.td; ++j) s += double(p.th[i * p.td + j]) * p.tw[v * p.td + j];
        t[v] = s / T;
      }
      r.kd += T * T * RefDivergence(LogSoftmax(t), lpT, o.divergence, o.jsd_beta);
    } else {
      std::vector<int64_t> ids;
      std::vector<double> lps;
      for (int64_t j = 0; j < p.k; ++j) {
        if (p.topk_ids[i * p.k + j] < 0) continue;
        ids.push_back(p.topk_ids[i * p.k + j]);
        lps.push_back(p.topk_lp[i * p.k + j]);
      }
      std::vector<double> lP, lQ;
      if (o.topk_tail == TopKTail::kTailBucket) {
        std::vector<bool> in(p.vocab, false);
        for (auto id : ids) in[id] = true;
        double tail = 0, qsum = 0;
        for (int64_t v = 0; v < p.vocab; ++v)
          if (!in[v]) tail += std::exp(lpT[v]);
        for (double l : lps) qsum += std::exp(l);
        const double qt = std::max(1 - qsum, 0.0);
        const double nt = double(p.vocab - ids.size());
        lP.push_back(std::log(tail));
        lQ.push_back(nt > 0 ? std::log(nt) + (std::log(qt) - std::log(nt)) / T : -INFINITY);
        for (size_t j = 0; j < ids.size(); ++j) {
          lP.push_back(lpT[ids[j]]);
          lQ.push_back(lps[j] / T);
        }
        lQ = LogSoftmax(lQ);
      } else {
        for (size_t j = 0; j < ids.size(); ++j) {
          lP.push_back(z[ids[j]] / T);
          lQ.push_back(lps[j] / T);
        }
        lP = LogSoftmax(lP);
        lQ = LogSoftmax(lQ);
      }
      r.kd += T * T * RefDivergence(lQ, lP, o.divergence, o.jsd_beta);
    }
  }
  r.loss = o.ce_weight * r.ce + o.kd_weight * r.kd;
  return r;
}

// d(loss)/d(x[idx]) by central differences of the f64 reference.
double FiniteDiff(const Problem& p, std::vector<double> hd, std::vector<double> wd,
                  const LossOptions& o, bool wrt_w, int64_t idx) {
  std::vector<double>& x = wrt_w ? wd : hd;
  const double step = 1e-5 * std::max(1.0, std::abs(x[idx]));
  const double x0 = x[idx];
  x[idx] = x0 + step;
  const double up = RefLoss(p, hd, wd, o).loss;
  x[idx] = x0 - step;
  const double down = RefLoss(p, hd, wd, o).loss;
  return (up - down) / (2 * step);
}

Problem MakeProblem(int64_t n, int64_t d, int64_t vocab, TeacherSignal::Kind kind, uint32_t seed,
                    int64_t k = 8, bool empty_slot = true) {
  Problem p;
  p.n = n;
  p.d = d;
  p.vocab = vocab;
  p.kind = kind;
  p.h = RandomVector(n * d, 1.f, seed);
  p.w = RandomVector(vocab * d, 0.5f, seed + 1);
  std::mt19937 rng(seed + 2);
  p.targets.resize(n);
  for (int64_t i = 0; i < n; ++i) p.targets[i] = (i % 4 == 1) ? -1 : int32_t(rng() % vocab);
  p.td = d / 2 + 3;
  p.th = RandomVector(n * p.td, 1.f, seed + 3);
  p.tw = RandomVector(vocab * p.td, 0.7f, seed + 4);
  if (kind == TeacherSignal::Kind::kTopK) {
    // Top-k of the dense teacher (log-probs at T = 1), one empty slot.
    p.k = k;
    p.topk_ids.resize(n * k);
    p.topk_lp.resize(n * k);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> t(vocab);
      for (int64_t v = 0; v < vocab; ++v) {
        double s = 0;
        for (int64_t j = 0; j < p.td; ++j) s += double(p.th[i * p.td + j]) * p.tw[v * p.td + j];
        t[v] = s;
      }
      const auto lt = LogSoftmax(t);
      std::vector<int32_t> order(vocab);
      for (int64_t v = 0; v < vocab; ++v) order[v] = int32_t(v);
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t a, int32_t b) { return lt[a] > lt[b]; });
      for (int64_t j = 0; j < k; ++j) {
        p.topk_ids[i * k + j] = order[j];
        p.topk_lp[i * k + j] = float(lt[order[j]]);
      }
    }
    if (empty_slot) p.topk_ids[2 * k + 1] = -1;
  }
  return p;
}

struct Outcome {
  LossResult r;
  std::vector<float> dh, dw;
};

Outcome RunLoss(const Problem& p, const LossOptions& o, float grad_scale) {
  Outcome run;
  run.dh.assign(p.n * p.d, 7.f);  // overwritten
  run.dw.assign(p.vocab * p.d, 0.f);
  auto r = ComputeLoss(p.h.data(), p.n, p.d, p.w.data(), p.vocab, p.targets.data(), p.Teacher(), o,
                       grad_scale, run.dh.data(), run.dw.data());
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) run.r = *r;
  return run;
}

// ----------------------------------------------------------------------------
// PyTorch fixtures.

class FixtureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = "tests/reference/losses/";
    auto reader = SafetensorsReader::Open(dir + "losses.safetensors");
    ASSERT_TRUE(reader.ok()) << reader.status();
    reader_ = std::move(*reader);
    std::ifstream f(dir + "losses.json");
    ASSERT_TRUE(f.good());
    meta_ = nlohmann::json::parse(f);
  }
  std::vector<float> F32(const std::string& name) {
    auto t = reader_->Get(name);
    EXPECT_TRUE(t.ok()) << t.status();
    const float* d = t->data<float>();
    return std::vector<float>(d, d + t->numel());
  }
  std::vector<int32_t> I32(const std::string& name) {
    auto t = reader_->Get(name);
    EXPECT_TRUE(t.ok()) << t.status();
    const int32_t* d = t->data<int32_t>();
    return std::vector<int32_t>(d, d + t->numel());
  }
  std::unique_ptr<SafetensorsReader> reader_;
  nlohmann::json meta_;
};

TEST_F(FixtureTest, MatchesTorchAutograd) {
  const int64_t n = meta_["n"], d = meta_["d"], vocab = meta_["vocab"], td = meta_["teacher_dim"],
                k = meta_["k"];
  const float grad_scale = meta_["grad_scale"];
  const auto h = F32("h"), w = F32("w"), th = F32("th"), tw = F32("tw"), lp = F32("topk_logprobs"),
             token_lp = F32("token_logprobs");
  const auto targets = I32("targets"), ids = I32("topk_ids");
  ASSERT_EQ(meta_["cases"].size(), 16u);
  for (const auto& c : meta_["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    LossOptions o;
    o.ce_weight = c["ce_weight"];
    o.kd_weight = c["kd_weight"];
    auto div = ParseKdDivergence(c["divergence"].get<std::string>());
    ASSERT_TRUE(div.ok());
    o.divergence = *div;
    o.jsd_beta = c["jsd_beta"];
    o.temperature = c["temperature"];
    o.topk_tail = c["topk_tail"] == "tail" ? TopKTail::kTailBucket : TopKTail::kRenormalize;
    o.row_chunk = 5;  // several chunks, the last one partial
    TeacherSignal teacher;
    if (c["teacher"] == "dense") teacher = TeacherSignal::Dense(th.data(), td, tw.data(), vocab);
    if (c["teacher"] == "topk") teacher = TeacherSignal::TopK(ids.data(), lp.data(), k);
    if (c["teacher"] == "tokens") teacher = TeacherSignal::TokenLogprobs(token_lp.data());
    std::vector<float> dh(n * d, 3.f), dw(vocab * d, 0.f);
    auto r = ComputeLoss(h.data(), n, d, w.data(), vocab, targets.data(), teacher, o, grad_scale,
                         dh.data(), dw.data());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->tokens, 11);
    EXPECT_LT(Rel(r->loss_sum, c["loss"]), kTol) << r->loss_sum << " vs " << c["loss"];
    EXPECT_LT(Rel(r->ce_sum, c["ce"]), kTol);
    if (o.kd_weight > 0) {
      EXPECT_LT(Rel(r->kd_sum, c["kd"]), kTol) << r->kd_sum << " vs " << c["kd"];
    }
    const auto edh = F32(name + ".dh"), edw = F32(name + ".dw");
    EXPECT_LT(RelErr(dh.data(), edh.data(), n * d), kTol);
    EXPECT_LT(RelErr(dw.data(), edw.data(), vocab * d), kTol);
  }
}

// ----------------------------------------------------------------------------
// f64 reference with finite-difference gradients, on a vocabulary of several
// GEMM blocks (the last one partial) and a hidden size of two dh blocks.

struct RefCase {
  const char* name;
  TeacherSignal::Kind kind;
  KdDivergence div;
  float beta, temperature, ce_weight, kd_weight;
  TopKTail tail = TopKTail::kTailBucket;
};

class ReferenceTest : public ::testing::TestWithParam<RefCase> {};

TEST_P(ReferenceTest, LossAndGradientsMatchF64) {
  const RefCase& c = GetParam();
  const Problem p = MakeProblem(7, 70, 1100, c.kind, 11);
  LossOptions o;
  o.ce_weight = c.ce_weight;
  o.kd_weight = c.kd_weight;
  o.divergence = c.div;
  o.jsd_beta = c.beta;
  o.temperature = c.temperature;
  o.topk_tail = c.tail;
  o.row_chunk = 2;
  const float gs = 0.5f;
  const Outcome run = RunLoss(p, o, gs);
  std::vector<double> hd(p.h.begin(), p.h.end()), wd(p.w.begin(), p.w.end());
  const RefResult ref = RefLoss(p, hd, wd, o);
  EXPECT_LT(Rel(run.r.loss_sum, ref.loss), 1e-5) << run.r.loss_sum << " vs " << ref.loss;
  EXPECT_LT(Rel(run.r.ce_sum, ref.ce), 1e-5);
  EXPECT_LT(Rel(run.r.kd_sum, ref.kd), 1e-5) << run.r.kd_sum << " vs " << ref.kd;
  EXPECT_EQ(run.r.tokens, 5);
  // Gradients at sampled entries (every masked row of dh must be 0).
  std::mt19937 rng(5);
  std::vector<double> got, want;
  for (int s = 0; s < 24; ++s) {
    const int64_t i = rng() % (p.n * p.d);
    got.push_back(run.dh[i]);
    want.push_back(gs * FiniteDiff(p, hd, wd, o, false, i));
  }
  EXPECT_LT(RelErrD(got, want), kTol) << "dh";
  got.clear();
  want.clear();
  for (int s = 0; s < 24; ++s) {
    // Half the samples on top-k ids / targets, where the KD gradient is not
    // the tail's.
    int64_t v = rng() % p.vocab;
    if (s % 2 == 0 && !p.topk_ids.empty()) v = std::max(0, p.topk_ids[rng() % p.topk_ids.size()]);
    if (s % 4 == 1) v = std::max(0, p.targets[rng() % p.n]);
    const int64_t idx = v * p.d + rng() % p.d;
    got.push_back(run.dw[idx]);
    want.push_back(gs * FiniteDiff(p, hd, wd, o, true, idx));
  }
  EXPECT_LT(RelErrD(got, want), kTol) << "dw";
}

using K = TeacherSignal::Kind;
INSTANTIATE_TEST_SUITE_P(
    All, ReferenceTest,
    ::testing::Values(
        RefCase{"ce", K::kNone, KdDivergence::kForwardKl, 0.5f, 1.f, 1.f, 0.f},
        RefCase{"dense_fkl", K::kDense, KdDivergence::kForwardKl, 0.5f, 1.f, 1.f, 1.f},
        RefCase{"dense_fkl_t3", K::kDense, KdDivergence::kForwardKl, 0.5f, 3.f, 0.f, 1.f},
        RefCase{"dense_rkl", K::kDense, KdDivergence::kReverseKl, 0.5f, 1.5f, 1.f, 0.5f},
        RefCase{"dense_jsd", K::kDense, KdDivergence::kJsd, 0.2f, 1.f, 1.f, 2.f},
        RefCase{"dense_jsd_t2", K::kDense, KdDivergence::kJsd, 0.9f, 2.f, 0.3f, 1.f},
        RefCase{"topk_tail_fkl", K::kTopK, KdDivergence::kForwardKl, 0.5f, 1.f, 1.f, 1.f},
        RefCase{"topk_tail_rkl_t2", K::kTopK, KdDivergence::kReverseKl, 0.5f, 2.f, 1.f, 1.f},
        RefCase{"topk_tail_jsd", K::kTopK, KdDivergence::kJsd, 0.4f, 1.f, 0.f, 1.f},
        RefCase{"topk_renorm_fkl", K::kTopK, KdDivergence::kForwardKl, 0.5f, 1.f, 1.f, 1.f,
                TopKTail::kRenormalize},
        RefCase{"topk_renorm_jsd_t2", K::kTopK, KdDivergence::kJsd, 0.5f, 2.f, 1.f, 1.f,
                TopKTail::kRenormalize}),
    [](const ::testing::TestParamInfo<RefCase>& info) { return std::string(info.param.name); });

// ----------------------------------------------------------------------------
// Properties.

LossOptions KdOptions(KdDivergence div, float beta, float t) {
  LossOptions o;
  o.kd_weight = 1.f;
  o.divergence = div;
  o.jsd_beta = beta;
  o.temperature = t;
  return o;
}

TEST(LossTest, ChunkSizeChangesOnlyRounding) {
  const Problem p = MakeProblem(23, 40, 700, K::kDense, 3);
  LossOptions o = KdOptions(KdDivergence::kJsd, 0.5f, 1.5f);
  o.row_chunk = 1;
  const Outcome a = RunLoss(p, o, 0.1f);
  for (int64_t chunk : {3, 8, 64}) {
    o.row_chunk = chunk;
    const Outcome b = RunLoss(p, o, 0.1f);
    EXPECT_LT(Rel(b.r.loss_sum, a.r.loss_sum), 1e-6) << chunk;
    EXPECT_LT(RelErr(b.dh.data(), a.dh.data(), a.dh.size()), 1e-5) << chunk;
    EXPECT_LT(RelErr(b.dw.data(), a.dw.data(), a.dw.size()), 1e-5) << chunk;
  }
}

TEST(LossTest, SameBitsOnAnyThreadCount) {
  for (K kind : {K::kNone, K::kDense, K::kTopK}) {
    const Problem p = MakeProblem(37, 80, 1300, kind, 4);
    LossOptions o = KdOptions(KdDivergence::kForwardKl, 0.5f, 2.f);
    if (kind == K::kNone) o.kd_weight = 0;
    o.row_chunk = 16;
    SetNumThreads(1);
    const Outcome a = RunLoss(p, o, 0.3f);
    for (int threads : {2, 3}) {
      SetNumThreads(threads);
      const Outcome b = RunLoss(p, o, 0.3f);
      EXPECT_EQ(a.r.loss_sum, b.r.loss_sum);
      EXPECT_EQ(0, std::memcmp(a.dh.data(), b.dh.data(), a.dh.size() * 4));
      EXPECT_EQ(0, std::memcmp(a.dw.data(), b.dw.data(), a.dw.size() * 4));
    }
  }
  SetNumThreads(2);
}

TEST(LossTest, MaskedPositionsContributeNothing) {
  Problem p = MakeProblem(12, 16, 300, K::kTopK, 5);
  LossOptions o = KdOptions(KdDivergence::kReverseKl, 0.5f, 1.f);
  o.ce_weight = 1;
  o.row_chunk = 4;
  const Outcome a = RunLoss(p, o, 1.f);
  // Poison every masked row: NaN hidden states and invalid top-k entries.
  for (int64_t i = 0; i < p.n; ++i) {
    if (p.targets[i] >= 0) continue;
    for (int64_t j = 0; j < p.d; ++j) p.h[i * p.d + j] = NAN;
    for (int64_t j = 0; j < p.k; ++j) {
      p.topk_ids[i * p.k + j] = 999999;
      p.topk_lp[i * p.k + j] = 5.f;
    }
  }
  const Outcome b = RunLoss(p, o, 1.f);
  EXPECT_EQ(a.r.loss_sum, b.r.loss_sum);
  EXPECT_EQ(a.r.tokens, 9);
  EXPECT_EQ(0, std::memcmp(a.dw.data(), b.dw.data(), a.dw.size() * 4));
  for (int64_t i = 0; i < p.n; ++i) {
    for (int64_t j = 0; j < p.d; ++j) {
      if (p.targets[i] < 0) {
        EXPECT_EQ(b.dh[i * p.d + j], 0.f);
      } else {
        EXPECT_EQ(a.dh[i * p.d + j], b.dh[i * p.d + j]);
      }
    }
  }
  // All masked: nothing at all.
  std::fill(p.targets.begin(), p.targets.end(), -1);
  const Outcome c = RunLoss(p, o, 1.f);
  EXPECT_EQ(c.r.tokens, 0);
  EXPECT_EQ(c.r.loss_sum, 0);
  for (float x : c.dw) EXPECT_EQ(x, 0.f);
  for (float x : c.dh) EXPECT_EQ(x, 0.f);
}

TEST(LossTest, JsdLimitsAreTheKls) {
  Problem p = MakeProblem(9, 24, 200, K::kDense, 6);
  // A teacher near the student: the expansion in beta below needs p / q
  // bounded (far apart distributions converge only for much smaller beta).
  p.td = p.d;
  p.th = p.h;
  p.tw = p.w;
  const auto noise = RandomVector(p.vocab * p.d, 0.1f, 66);
  for (size_t i = 0; i < p.tw.size(); ++i) p.tw[i] += noise[i];
  const Outcome fkl = RunLoss(p, KdOptions(KdDivergence::kForwardKl, 0, 1.5f), 1.f);
  const Outcome rkl = RunLoss(p, KdOptions(KdDivergence::kReverseKl, 0, 1.5f), 1.f);
  // TRL's endpoints: beta 0 is forward KL, beta 1 reverse KL (same bits).
  const Outcome j0 = RunLoss(p, KdOptions(KdDivergence::kJsd, 0.f, 1.5f), 1.f);
  const Outcome j1 = RunLoss(p, KdOptions(KdDivergence::kJsd, 1.f, 1.5f), 1.f);
  EXPECT_EQ(j0.r.kd_sum, fkl.r.kd_sum);
  EXPECT_EQ(j1.r.kd_sum, rkl.r.kd_sum);
  EXPECT_EQ(0, std::memcmp(j0.dw.data(), fkl.dw.data(), fkl.dw.size() * 4));
  EXPECT_EQ(0, std::memcmp(j1.dh.data(), rkl.dh.data(), rkl.dh.size() * 4));
  // Approaching the ends, the mixture formula scaled by 1/beta (1/(1-beta))
  // tends to forward (reverse) KL, gradients included; the gap is first
  // order in beta (JSD_b / b = KL(q||p) - b chi^2(q||p) / 2 + ...), so it
  // shrinks tenfold per decade.
  auto kd_only = [](float beta) {
    LossOptions o = KdOptions(KdDivergence::kJsd, beta, 1.5f);
    o.ce_weight = 0;
    return o;
  };
  LossOptions fo = KdOptions(KdDivergence::kForwardKl, 0, 1.5f), ro = fo;
  ro.divergence = KdDivergence::kReverseKl;
  fo.ce_weight = ro.ce_weight = 0;
  const Outcome f0 = RunLoss(p, fo, 1.f), r0 = RunLoss(p, ro, 1.f);
  double prev_f = 0, prev_r = 0;
  for (float eps : {1e-1f, 1e-2f, 1e-3f}) {
    SCOPED_TRACE(eps);
    const Outcome a = RunLoss(p, kd_only(eps), 1.f / eps);
    const Outcome b = RunLoss(p, kd_only(1 - eps), 1.f / eps);
    const double ef = Rel(a.r.kd_sum / eps, f0.r.kd_sum), er = Rel(b.r.kd_sum / eps, r0.r.kd_sum);
    if (prev_f > 0) {
      EXPECT_LT(ef, 0.2 * prev_f);
      EXPECT_LT(er, 0.2 * prev_r);
    }
    prev_f = ef;
    prev_r = er;
    if (eps == 1e-3f) {
      EXPECT_LT(ef, 2e-3);
      EXPECT_LT(er, 2e-3);
      EXPECT_LT(RelErr(a.dh.data(), f0.dh.data(), f0.dh.size()), 3e-3);
      EXPECT_LT(RelErr(b.dh.data(), r0.dh.data(), r0.dh.size()), 3e-3);
      EXPECT_LT(RelErr(a.dw.data(), f0.dw.data(), f0.dw.size()), 3e-3);
      EXPECT_LT(RelErr(b.dw.data(), r0.dw.data(), r0.dw.size()), 3e-3);
    }
    std::printf("beta %g: |JSD/b - KL(q||p)| %.3g, |JSD/(1-b) - KL(p||q)| %.3g (relative)\n", eps,
                ef, er);
  }
  // A JSD is bounded by log 2 per position (beta = 0.5) and is symmetric.
  const Outcome half = RunLoss(p, KdOptions(KdDivergence::kJsd, 0.5f, 1.f), 1.f);
  EXPECT_GT(half.r.kd_sum, 0);
  EXPECT_LT(half.r.kd_sum, std::log(2.0) * half.r.tokens);
}

TEST(LossTest, TopKOverWholeVocabularyEqualsDenseTeacher) {
  // k = vocab: no tail; both top-k modes are the dense teacher at T = 1,
  // and the renormalised mode is at any T.
  const Problem p = MakeProblem(6, 16, 64, K::kTopK, 7, 64, /*empty_slot=*/false);
  Problem dense = p;
  dense.kind = K::kDense;
  for (KdDivergence div :
       {KdDivergence::kForwardKl, KdDivergence::kReverseKl, KdDivergence::kJsd}) {
    for (TopKTail tail : {TopKTail::kTailBucket, TopKTail::kRenormalize}) {
      const float t = tail == TopKTail::kRenormalize ? 2.f : 1.f;
      LossOptions o = KdOptions(div, 0.3f, t);
      o.topk_tail = tail;
      const Outcome a = RunLoss(p, o, 1.f);
      const Outcome b = RunLoss(dense, o, 1.f);
      EXPECT_LT(Rel(a.r.kd_sum, b.r.kd_sum), 1e-4) << KdDivergenceName(div);
      EXPECT_LT(RelErr(a.dh.data(), b.dh.data(), a.dh.size()), 1e-4) << KdDivergenceName(div);
      EXPECT_LT(RelErr(a.dw.data(), b.dw.data(), a.dw.size()), 1e-4) << KdDivergenceName(div);
    }
  }
}

TEST(LossTest, TinyTailIsAccurate) {
  // The student's tail is summed directly, not as 1 - (top-k mass): with a
  // tail of ~1e-9 the forward-KL tail term still matches f64.
  Problem p = MakeProblem(4, 8, 500, K::kTopK, 8, 4);
  for (int64_t v = 0; v < p.vocab; ++v) {
    for (int64_t j = 0; j < p.d; ++j) p.w[v * p.d + j] = v < 4 ? 4.f * (j == v) : 0.f;
  }
  for (int64_t i = 0; i < p.n; ++i) {
    p.targets[i] = 0;
    for (int64_t j = 0; j < p.d; ++j) p.h[i * p.d + j] = j < 4 ? 6.f : 0.f;
    for (int64_t j = 0; j < 4; ++j) {
      p.topk_ids[i * 4 + j] = int32_t(j);
      p.topk_lp[i * 4 + j] = std::log(0.25f * (1 - 1e-5f));
    }
  }
  LossOptions o = KdOptions(KdDivergence::kForwardKl, 0, 1.f);
  const Outcome run = RunLoss(p, o, 1.f);
  std::vector<double> hd(p.h.begin(), p.h.end()), wd(p.w.begin(), p.w.end());
  const RefResult ref = RefLoss(p, hd, wd, o);
  EXPECT_LT(Rel(run.r.kd_sum, ref.kd), 1e-4) << run.r.kd_sum << " vs " << ref.kd;
}

TEST(LossTest, LargeVocabularyUsesChunkScratch) {
  // vocab 150000, n 256, d 64: scratch stays O(row_chunk * vocab), far below
  // the n * vocab logits, and the loss matches a row-at-a-time f64 loop.
  const int64_t n = 256, d = 64, vocab = 150000, k = 16;
  Problem p;
  p.n = n;
  p.d = d;
  p.vocab = vocab;
  p.h = RandomVector(n * d, 1.f, 21);
  p.w = RandomVector(vocab * d, 0.3f, 22);
  p.targets.resize(n);
  std::mt19937 rng(23);
  for (int64_t i = 0; i < n; ++i) p.targets[i] = i % 5 == 0 ? -1 : int32_t(rng() % vocab);
  p.kind = K::kTopK;
  p.k = k;
  p.topk_ids.resize(n * k);
  p.topk_lp.resize(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    p.topk_ids[i] = int32_t((i * 7919) % vocab);
    p.topk_lp[i] = std::log(0.05f);
  }
  LossOptions o;
  o.kd_weight = 0.5f;
  const int64_t scratch = LossScratchBytes(n, d, vocab, p.targets.data(), p.Teacher(), o);
  EXPECT_LE(scratch, 4 * (o.row_chunk * vocab + 2 * o.row_chunk * d + 4 * o.row_chunk));
  EXPECT_LT(scratch, n * vocab * 4 / 3);

  const Outcome run = RunLoss(p, o, 1.f / 205);
  EXPECT_EQ(run.r.tokens, 204);
  // CE by a row-at-a-time f64 loop.
  double ce = 0;
  std::vector<double> z(vocab);
  for (int64_t i = 0; i < n; ++i) {
    if (p.targets[i] < 0) continue;
    for (int64_t v = 0; v < vocab; ++v) {
      double s = 0;
      for (int64_t j = 0; j < d; ++j) s += double(p.h[i * d + j]) * p.w[v * d + j];
      z[v] = s;
    }
    ce -= LogSoftmax(z)[p.targets[i]];
  }
  EXPECT_LT(Rel(run.r.ce_sum, ce), 1e-5);
  EXPECT_TRUE(std::isfinite(run.r.kd_sum));
  EXPECT_GT(run.r.kd_sum, 0);
}

TEST(LossTest, AccumulatesDwAndAllowsNullGradients) {
  const Problem p = MakeProblem(5, 12, 90, K::kNone, 9);
  LossOptions o;
  const Outcome a = RunLoss(p, o, 1.f);
  std::vector<float> dh(p.n * p.d), dw = a.dw;
  auto r = ComputeLoss(p.h.data(), p.n, p.d, p.w.data(), p.vocab, p.targets.data(),
                       TeacherSignal::None(), o, 1.f, dh.data(), dw.data());
  ASSERT_TRUE(r.ok());
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_EQ(dw[i], 2 * a.dw[i]);
  auto only = ComputeLoss(p.h.data(), p.n, p.d, p.w.data(), p.vocab, p.targets.data(),
                          TeacherSignal::None(), o, 1.f, nullptr, nullptr);
  ASSERT_TRUE(only.ok());
  EXPECT_EQ(only->loss_sum, a.r.loss_sum);
}

TEST(LossTest, RejectsBadInputWithoutWriting) {
  Problem p = MakeProblem(6, 8, 50, K::kTopK, 10, 4);
  LossOptions o = KdOptions(KdDivergence::kForwardKl, 0, 1.f);
  auto call = [&](const Problem& q, const TeacherSignal& t, const LossOptions& opt) {
    std::vector<float> dh(q.n * q.d, 5.f), dw(q.vocab * q.d, 5.f);
    auto r = ComputeLoss(q.h.data(), q.n, q.d, q.w.data(), q.vocab, q.targets.data(), t, opt, 1.f,
                         dh.data(), dw.data());
    for (float x : dh) EXPECT_EQ(x, 5.f);
    for (float x : dw) EXPECT_EQ(x, 5.f);
    return r.status();
  };
  {
    Problem q = p;
    q.targets[3] = 50;
    EXPECT_THAT(call(q, q.Teacher(), o).message(),
                HasSubstr("target 50 at position 3 is outside the vocabulary [0, 50)"));
  }
  {
    Problem q = p;
    q.topk_ids[4 * q.k + 2] = 77;
    EXPECT_THAT(call(q, q.Teacher(), o).message(), HasSubstr("top-k id 77 at position 4 slot 2"));
  }
  {
    Problem q = p;
    q.topk_ids[4 * q.k + 2] = q.topk_ids[4 * q.k];
    EXPECT_THAT(call(q, q.Teacher(), o).message(), HasSubstr("appears twice at position 4"));
  }
  {
    Problem q = p;
    q.topk_lp[3 * q.k] = 0.f;
    EXPECT_THAT(call(q, q.Teacher(), o).message(), HasSubstr("at position 3 sum to"));
  }
  {
    // Quantized log-probs from a trace shard may sum slightly above 1: accepted.
    Problem q = p;
    double mass = 0;
    for (int64_t j = 0; j < q.k; ++j) mass += std::exp(double(q.topk_lp[3 * q.k + j]));
    for (int64_t j = 0; j < q.k; ++j) q.topk_lp[3 * q.k + j] += float(std::log(1.008 / mass));
    std::vector<float> dh(q.n * q.d), dw(q.vocab * q.d);
    auto r = ComputeLoss(q.h.data(), q.n, q.d, q.w.data(), q.vocab, q.targets.data(), q.Teacher(),
                         o, 1.f, dh.data(), dw.data());
    EXPECT_TRUE(r.ok()) << r.status();
  }
  {
    Problem q = MakeProblem(6, 8, 50, K::kDense, 10);
    const TeacherSignal t = TeacherSignal::Dense(q.th.data(), q.td, q.tw.data(), 49);
    EXPECT_THAT(call(q, t, o).message(),
                HasSubstr("teacher LM head has 49 rows but the student vocabulary has 50"));
  }
  EXPECT_THAT(call(p, TeacherSignal::None(), o).message(), HasSubstr("no teacher signal"));
  LossOptions bad = o;
  bad.jsd_beta = 1.5f;
  EXPECT_THAT(call(p, p.Teacher(), bad).message(), HasSubstr("jsd_beta"));
  bad = o;
  bad.temperature = 0;
  EXPECT_THAT(call(p, p.Teacher(), bad).message(), HasSubstr("temperature"));
  EXPECT_FALSE(ParseKdDivergence("kl").ok());
  EXPECT_EQ(*ParseKdDivergence("reverse_kl"), KdDivergence::kReverseKl);

  // The sampled-token reverse KL needs log q(y): a dense teacher or token
  // log-probs, at temperature 1; token log-probs serve nothing else.
  std::vector<float> token_lp(p.n, -1.f);
  const TeacherSignal tokens = TeacherSignal::TokenLogprobs(token_lp.data());
  LossOptions sampled = o;
  sampled.divergence = KdDivergence::kSampledReverseKl;
  EXPECT_THAT(call(p, p.Teacher(), sampled).message(),
              HasSubstr("needs a dense teacher or the teacher's token log-probs"));
  EXPECT_THAT(call(p, tokens, o).message(), HasSubstr("token log-probs only serve"));
  bad = sampled;
  bad.temperature = 2;
  EXPECT_THAT(call(p, tokens, bad).message(), HasSubstr("needs temperature 1"));
  for (int64_t i = 0; i < p.n; ++i) {
    if (p.targets[i] >= 0) {
      token_lp[i] = std::nanf("");
      break;
    }
  }
  EXPECT_THAT(call(p, tokens, sampled).message(), HasSubstr("is not a log-probability"));
}

}  // namespace
}  // namespace retort
