// distill/optimizer.h against torch.optim.AdamW, torch's clip_grad_norm_ and
// transformers' schedules (tests/reference/losses/make_fixtures.py), plus
// bit-exact resume and the error paths.
#include "distill/optimizer.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
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

// max |got - ref| / max |ref|, and the largest elementwise relative error
// (against |ref| + 1e-3 * max |ref|, so values near 0 are judged on scale).
double RelErr(const float* got, const float* ref, int64_t n) {
  double den = 0;
  for (int64_t i = 0; i < n; ++i) den = std::max(den, std::abs(double(ref[i])));
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    worst = std::max(worst,
                     std::abs(double(got[i]) - ref[i]) / (std::abs(double(ref[i])) + 1e-3 * den));
  }
  return worst;
}

// max |got - ref| / max |ref| (for m, whose entries are sums of gradients
// of both signs: torch's own f32 m is 1e-6 off f64 elementwise there).
double MaxNormErr(const float* got, const float* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(double(got[i]) - ref[i]));
    den = std::max(den, std::abs(double(ref[i])));
  }
  return num / den;
}

class AdamWFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = SafetensorsReader::Open("tests/reference/losses/adamw.safetensors");
    ASSERT_TRUE(r.ok()) << r.status();
    reader_ = std::move(*r);
    std::ifstream f("tests/reference/losses/adamw.json");
    ASSERT_TRUE(f.good());
    meta_ = nlohmann::json::parse(f);
  }
  std::vector<float> F32(const std::string& name) {
    auto t = reader_->Get(name);
    EXPECT_TRUE(t.ok()) << t.status();
    return std::vector<float>(t->data<float>(), t->data<float>() + t->numel());
  }
  AdamW MakeOptimizer() {
    AdamWOptions o;
    o.beta1 = meta_["beta1"];
    o.beta2 = meta_["beta2"];
    o.eps = meta_["eps"];
    o.weight_decay = meta_["weight_decay"];
    std::vector<ParamGroup> groups;
    for (const auto& g : meta_["groups"]) groups.push_back({g[0], g[1], g[2]});
    auto opt = AdamW::Create(meta_["n"], o, groups);
    EXPECT_TRUE(opt.ok()) << opt.status();
    return std::move(*opt);
  }
  std::unique_ptr<SafetensorsReader> reader_;
  nlohmann::json meta_;
};

TEST_F(AdamWFixture, MatchesTorchAdamW) {
  const int64_t n = meta_["n"], steps = meta_["steps"];
  std::vector<float> p = F32("p0");
  const auto grads = F32("grads"), after = F32("after");
  AdamW opt = MakeOptimizer();
  for (int64_t s = 0; s < steps; ++s) {
    opt.Step(p.data(), grads.data() + s * n, meta_["lrs"][s].get<float>());
    EXPECT_LT(RelErr(p.data(), after.data() + s * n, n), 1e-6) << "step " << s;
  }
  EXPECT_EQ(opt.step(), steps);
  EXPECT_LT(MaxNormErr(opt.m().data(), F32("m").data(), n), 1e-6);
  EXPECT_LT(RelErr(opt.v().data(), F32("v").data(), n), 1e-6);
  // The no-decay group really did not decay: with wd = 0 everywhere the
  // middle group is unchanged and the others differ.
  std::vector<float> q = F32("p0");
  AdamWOptions o = opt.options();
  o.weight_decay = 0;
  auto plain = AdamW::Create(n, o, {});
  ASSERT_TRUE(plain.ok());
  for (int64_t s = 0; s < steps; ++s)
    plain->Step(q.data(), grads.data() + s * n, meta_["lrs"][s].get<float>());
  EXPECT_EQ(0, std::memcmp(p.data() + 40, q.data() + 40, 30 * 4));
  EXPECT_NE(p[0], q[0]);
}

TEST_F(AdamWFixture, ResumesBitExactly) {
  const int64_t n = meta_["n"], steps = meta_["steps"];
  const auto grads = F32("grads");
  std::vector<float> straight = F32("p0");
  AdamW a = MakeOptimizer();
  for (int64_t s = 0; s < steps; ++s) a.Step(straight.data(), grads.data() + s * n, 1e-2f);

  std::vector<float> resumed = F32("p0");
  AdamW b = MakeOptimizer();
  for (int64_t s = 0; s < 2; ++s) b.Step(resumed.data(), grads.data() + s * n, 1e-2f);
  const std::string path = ::testing::TempDir() + "/adamw_state.bin";
  ASSERT_TRUE(b.SaveState(path).ok());
  AdamW c = MakeOptimizer();
  ASSERT_TRUE(c.LoadState(path).ok());
  EXPECT_EQ(c.step(), 2);
  for (int64_t s = 2; s < steps; ++s) c.Step(resumed.data(), grads.data() + s * n, 1e-2f);
  EXPECT_EQ(0, std::memcmp(straight.data(), resumed.data(), n * 4));
  EXPECT_EQ(a.SerializeState(), c.SerializeState());
  std::remove(path.c_str());
}

TEST_F(AdamWFixture, RejectsForeignState) {
  AdamW a = MakeOptimizer();
  const std::string good = a.SerializeState();
  EXPECT_EQ(good.size(), 8u + 8 + 8 + 16 + 8 * 100);
  AdamW b = MakeOptimizer();
  EXPECT_THAT(b.RestoreState("nonsense").message(), HasSubstr("magic"));
  EXPECT_THAT(b.RestoreState(good.substr(0, good.size() - 4)).message(),
              HasSubstr("bytes, expected 840"));
  AdamWOptions o = a.options();
  o.beta2 = 0.99f;
  auto other = AdamW::Create(100, o, {});
  ASSERT_TRUE(other.ok());
  EXPECT_THAT(other->RestoreState(good).message(), HasSubstr("beta2"));
  auto small = AdamW::Create(99, a.options(), {});
  ASSERT_TRUE(small.ok());
  EXPECT_THAT(small->RestoreState(good).message(), HasSubstr("holds 100 parameters"));
  EXPECT_THAT(b.LoadState("/nonexistent/state.bin").message(), HasSubstr("/nonexistent/state.bin"));
}

TEST(AdamWTest, GroupsMustTileTheArena) {
  AdamWOptions o;
  EXPECT_THAT(AdamW::Create(10, o, {{0, 4, true}, {5, 10, false}}).status().message(),
              HasSubstr("group 1 is [5, 10) but must start at 4"));
  EXPECT_THAT(AdamW::Create(10, o, {{0, 4, true}}).status().message(),
              HasSubstr("end at 4 but the arena has 10"));
  EXPECT_TRUE(AdamW::Create(10, o, {{0, 4, true}, {4, 10, false}}).ok());
  o.beta1 = 1.f;
  EXPECT_FALSE(AdamW::Create(10, o, {}).ok());
}

TEST_F(AdamWFixture, ClipMatchesTorch) {
  const auto in = F32("clip_in");
  for (const char* name : {"clip_small", "clip_large"}) {
    SCOPED_TRACE(name);
    std::vector<float> g = in;
    const double norm =
        ClipGradNorm(g.data(), g.size(), meta_["clip"][name]["max_norm"].get<double>());
    const double want = meta_["clip"][name]["norm"];
    EXPECT_LT(std::abs(norm - want) / want, 1e-6);
    EXPECT_LT(RelErr(g.data(), F32(name).data(), g.size()), 1e-6);
  }
}

TEST(ClipTest, DeterministicAndNonFinite) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  std::vector<float> g(300001);
  for (auto& x : g) x = dist(rng);
  SetNumThreads(1);
  std::vector<float> a = g;
  const double na = ClipGradNorm(a.data(), a.size(), 1.0);
  SetNumThreads(3);
  std::vector<float> b = g;
  const double nb = ClipGradNorm(b.data(), b.size(), 1.0);
  SetNumThreads(2);
  EXPECT_EQ(na, nb);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
  double ss = 0;
  for (float x : g) ss += double(x) * x;
  EXPECT_NEAR(na, std::sqrt(ss), 1e-9 * na);
  // Clipped norm is max_norm (up to the 1e-6 guard).
  double cs = 0;
  for (float x : a) cs += double(x) * x;
  EXPECT_NEAR(std::sqrt(cs), 1.0, 1e-5);
  // Non-finite: reported, gradients untouched.
  std::vector<float> bad = {1.f, NAN, 2.f};
  EXPECT_TRUE(std::isnan(ClipGradNorm(bad.data(), 3, 1.0)));
  EXPECT_EQ(bad[0], 1.f);
  EXPECT_EQ(bad[2], 2.f);
}

TEST(ScheduleTest, MatchesTransformers) {
  std::ifstream f("tests/reference/losses/adamw.json");
  ASSERT_TRUE(f.good());
  const auto meta = nlohmann::json::parse(f)["schedules"];
  const int64_t total = meta["total_steps"], warmup = meta["warmup_steps"];
  const double peak = meta["peak_lr"];
  auto check = [&](const char* name, double min_lr, const nlohmann::json& lrs) {
    SCOPED_TRACE(name);
    LrScheduleOptions o;
    auto kind = ParseLrSchedule(name);
    ASSERT_TRUE(kind.ok());
    o.kind = *kind;
    o.peak_lr = peak;
    o.min_lr = min_lr;
    o.warmup_steps = warmup;
    ASSERT_EQ(lrs.size(), size_t(total + 1));
    for (int64_t s = 0; s <= total; ++s) {
      const double want = lrs[s];
      EXPECT_NEAR(LearningRate(s, total, o), want, 1e-12 * peak) << "step " << s;
    }
  };
  check("cosine", 0, meta["cosine"]);
  check("linear", 0, meta["linear"]);
  check("constant", 0, meta["constant"]);
  check("cosine", meta["cosine_min_lr"]["min_lr"], meta["cosine_min_lr"]["lrs"]);
  // Past the end: stays at min_lr.
  LrScheduleOptions o;
  o.peak_lr = 1;
  o.min_lr = 0.1;
  EXPECT_EQ(LearningRate(500, 100, o), 0.1);
  o.kind = LrScheduleKind::kLinear;
  EXPECT_EQ(LearningRate(500, 100, o), 0.1);
  EXPECT_THAT(
      ParseLrSchedule("cosin").status().message(),
      HasSubstr("unknown learning-rate schedule \"cosin\" (expected cosine, linear or constant)"));
  EXPECT_STREQ(LrScheduleName(LrScheduleKind::kLinear), "linear");
}

}  // namespace
}  // namespace retort
