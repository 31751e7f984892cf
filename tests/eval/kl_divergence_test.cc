#include "eval/kl_divergence.h"

#include <cmath>
#include <random>

#include "core/file.h"
#include "eval/perplexity.h"
#include "gtest/gtest.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {

// Plain f64 log-softmax, independent of the code under test.
std::vector<double> LogSoftmax(const float* x, int64_t vocab) {
  double m = x[0];
  for (int64_t i = 1; i < vocab; ++i) m = std::max(m, static_cast<double>(x[i]));
  double s = 0;
  for (int64_t i = 0; i < vocab; ++i) s += std::exp(x[i] - m);
  std::vector<double> out(vocab);
  for (int64_t i = 0; i < vocab; ++i) out[i] = x[i] - m - std::log(s);
  return out;
}

TEST(KlDivergenceTest, CompareDistributionsMatchesPlainF64) {
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0, 3);
  const int64_t vocab = 37;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> a(vocab), b(vocab);
    for (auto& v : a) v = normal(gen);
    for (auto& v : b) v = normal(gen);
    const int32_t target = trial % vocab;
    auto la = LogSoftmax(a.data(), vocab), lb = LogSoftmax(b.data(), vocab);
    double kld = 0;
    for (int64_t i = 0; i < vocab; ++i) kld += std::exp(lb[i]) * (lb[i] - la[i]);
    TokenComparison c = CompareDistributions(a.data(), b.data(), vocab, target);
    EXPECT_NEAR(c.kld, kld, 1e-12);
    EXPECT_GT(c.kld, 0);
    EXPECT_NEAR(c.nll, -la[target], 1e-12);
    EXPECT_NEAR(c.nll_ref, -lb[target], 1e-12);
    EXPECT_NEAR(c.p_diff, std::exp(la[target]) - std::exp(lb[target]), 1e-12);
    EXPECT_EQ(c.same_top, std::max_element(a.begin(), a.end()) - a.begin() ==
                              std::max_element(b.begin(), b.end()) - b.begin());
  }
}

TEST(KlDivergenceTest, SameTopTakesFirstIndexOnTies) {
  float a[4] = {1, 5, 5, 0}, b[4] = {1, 4, 6, 0};
  EXPECT_FALSE(CompareDistributions(a, b, 4, 0).same_top);  // a's argmax is 1, b's is 2
  float c[4] = {1, 6, 5, 0};
  EXPECT_TRUE(CompareDistributions(a, c, 4, 0).same_top);
}

TEST(KlDivergenceTest, PercentileIsNumpyLinear) {
  std::vector<double> v = {1, 2, 4, 8, 16};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 1), 16);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.5), 4);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.9), 8 + 0.6 * 8);  // position 3.6
  Quantiles q =
      ComputeQuantiles({10, 1, 3, 2});  // sorted 1 2 3 10: median of even n = mean of middles
  EXPECT_DOUBLE_EQ(q.median, 2.5);
  EXPECT_DOUBLE_EQ(q.min, 1);
  EXPECT_DOUBLE_EQ(q.max, 10);
}

// Every number against tests/reference/kld/stats.json (numpy f64).
TEST(KlDivergenceTest, StatisticsMatchNumpyFixture) {
  auto text = ReadFileToString("tests/reference/kld/stats.json");
  ASSERT_TRUE(text.ok()) << text.status();
  nlohmann::json j = nlohmann::json::parse(*text);
  const int64_t vocab = j["vocab"];
  const size_t n = j["targets"].size();
  std::vector<TokenComparison> positions;
  for (size_t i = 0; i < n; ++i) {
    std::vector<float> a, b;
    for (double v : j["logits"][i]) a.push_back(static_cast<float>(v));
    for (double v : j["ref_logits"][i]) b.push_back(static_cast<float>(v));
    TokenComparison c =
        CompareDistributions(a.data(), b.data(), vocab, j["targets"][i].get<int32_t>());
    EXPECT_NEAR(c.nll, j["nll"][i].get<double>(), 1e-12) << i;
    EXPECT_NEAR(c.nll_ref, j["nll_ref"][i].get<double>(), 1e-12) << i;
    EXPECT_NEAR(c.kld, j["kld"][i].get<double>(), 1e-12) << i;
    EXPECT_NEAR(c.p_diff, j["p_diff"][i].get<double>(), 1e-12) << i;
    EXPECT_EQ(c.same_top, j["same_top"][i].get<bool>()) << i;
    positions.push_back(c);
  }
  auto s = SummarizeComparisons(positions);
  ASSERT_TRUE(s.ok()) << s.status();
  const nlohmann::json& e = j["expected"];
  EXPECT_EQ(s->count, e["count"].get<int64_t>());
  auto expect_estimate = [&](const Estimate& got, const char* key) {
    EXPECT_NEAR(got.value, e[key][0].get<double>(), 1e-10 * (1 + std::fabs(got.value))) << key;
    EXPECT_NEAR(got.uncertainty, e[key][1].get<double>(), 1e-10 * (1 + got.uncertainty)) << key;
  };
  expect_estimate(s->ppl, "ppl");
  expect_estimate(s->ppl_ref, "ppl_ref");
  expect_estimate(s->ln_ppl_ratio, "ln_ppl_ratio");
  expect_estimate(s->ppl_ratio, "ppl_ratio");
  expect_estimate(s->ppl_diff, "ppl_diff");
  expect_estimate(s->kld, "kld");
  expect_estimate(s->p_diff, "p_diff");
  expect_estimate(s->rms_p_diff, "rms_p_diff");
  expect_estimate(s->same_top, "same_top");
  EXPECT_NEAR(s->ln_ppl_correlation, e["ln_ppl_correlation"].get<double>(), 1e-10);
  auto expect_quantiles = [&](const Quantiles& q, const char* key) {
    const nlohmann::json& x = e[key];
    EXPECT_NEAR(q.min, x["min"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p0_1, x["p0_1"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p1, x["p1"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p5, x["p5"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p10, x["p10"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p25, x["p25"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.median, x["median"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p75, x["p75"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p90, x["p90"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p95, x["p95"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p99, x["p99"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.p99_9, x["p99_9"].get<double>(), 1e-12) << key;
    EXPECT_NEAR(q.max, x["max"].get<double>(), 1e-12) << key;
  };
  expect_quantiles(s->kld_quantiles, "kld_quantiles");
  expect_quantiles(s->p_diff_quantiles, "p_diff_quantiles");
}

TEST(KlDivergenceTest, StridedPlanScoresWhatPerplexityScores) {
  for (int64_t n : {2, 10, 33, 100}) {
    for (auto [context, stride] :
         {std::pair<int64_t, int64_t>{10, 5}, {10, 1}, {8, 7}, {200, 100}}) {
      KlDivergenceOptions opt;
      opt.context = context;
      opt.stride = stride;
      auto plan = PlanWindows(n, opt);
      ASSERT_TRUE(plan.ok()) << plan.status();
      // Targets 1..n-1, each exactly once and in order, always with a predecessor in the window.
      int64_t next = 1;
      for (const ScoredWindow& w : *plan) {
        EXPECT_EQ(w.first_target, next);
        EXPECT_GT(w.first_target, w.begin);
        EXPECT_LE(w.length, context);
        next = w.begin + w.length;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(KlDivergenceTest, LlamaCppPlanScoresSecondHalfOfFullChunks) {
  KlDivergenceOptions opt;
  opt.scheme = WindowScheme::kLlamaCpp;
  opt.context = 32;
  auto plan = PlanWindows(100, opt);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 3u);  // the last 4 tokens are dropped
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*plan)[i].begin, 32 * static_cast<int64_t>(i));
    EXPECT_EQ((*plan)[i].length, 32);
    EXPECT_EQ((*plan)[i].first_target,
              32 * static_cast<int64_t>(i) + 17);  // 15 targets each, as llama.cpp
  }
  EXPECT_FALSE(PlanWindows(31, opt).ok());
  opt.context = 2;
  EXPECT_FALSE(PlanWindows(100, opt).ok());
}

// A deterministic fake model: logits depend on the token and its position in
// the window, so window boundaries and BOS replacement show in the numbers.
WindowLogitsFn FakeModel(int64_t vocab, uint32_t seed,
                         std::vector<std::vector<int32_t>>* seen = nullptr) {
  return [=](const int32_t* t, int64_t n, float* logits) -> absl::Status {
    if (seen) seen->emplace_back(t, t + n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t v = 0; v < vocab; ++v) {
        uint32_t h = seed * 2654435761u ^ static_cast<uint32_t>(t[i] * 40503 + v * 977 + i * 131);
        h ^= h >> 13;
        h *= 0x5bd1e995u;
        h ^= h >> 15;
        logits[i * vocab + v] = static_cast<float>(h % 1000) / 250.f;
      }
    }
    return absl::OkStatus();
  };
}

TEST(KlDivergenceTest, PplOfModelEqualsComputePerplexity) {
  const int64_t vocab = 19;
  std::vector<int32_t> tokens(77);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7 + 3) % vocab);
  KlDivergenceOptions opt;
  opt.context = 16;
  opt.stride = 6;
  auto r = ComputeKlDivergence(tokens, vocab, FakeModel(vocab, 1), vocab, FakeModel(vocab, 2), opt);
  ASSERT_TRUE(r.ok()) << r.status();
  PerplexityOptions popt;
  popt.context = 16;
  popt.stride = 6;
  auto q = ComputePerplexity(tokens, vocab, FakeModel(vocab, 1), popt);
  auto base = ComputePerplexity(tokens, vocab, FakeModel(vocab, 2), popt);
  ASSERT_TRUE(q.ok() && base.ok());
  EXPECT_EQ(r->stats.count, q->tokens_scored);
  EXPECT_EQ(r->windows, q->windows);
  EXPECT_EQ(r->tokens_evaluated, q->tokens_evaluated);
  EXPECT_NEAR(r->stats.ppl.value, q->perplexity, 1e-9 * q->perplexity);
  EXPECT_NEAR(r->stats.ppl_ref.value, base->perplexity, 1e-9 * base->perplexity);
  EXPECT_NEAR(r->stats.ln_ppl_ratio.value, q->mean_nll - base->mean_nll, 1e-12);
  EXPECT_GT(r->stats.kld.value, 0);
}

TEST(KlDivergenceTest, LlamaCppSchemeReplacesFirstTokenWithBos) {
  const int64_t vocab = 11;
  std::vector<int32_t> tokens(40);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(1 + i % 9);
  std::vector<std::vector<int32_t>> seen_q, seen_ref;
  KlDivergenceOptions opt;
  opt.scheme = WindowScheme::kLlamaCpp;
  opt.context = 12;
  opt.bos_id = 0;
  opt.keep_positions = true;
  auto r = ComputeKlDivergence(tokens, vocab, FakeModel(vocab, 1, &seen_q), vocab,
                               FakeModel(vocab, 2, &seen_ref), opt);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(seen_q.size(), 3u);
  EXPECT_EQ(seen_q, seen_ref);
  for (size_t w = 0; w < 3; ++w) {
    EXPECT_EQ(seen_q[w][0], 0);
    for (size_t i = 1; i < 12; ++i) EXPECT_EQ(seen_q[w][i], tokens[w * 12 + i]);
  }
  EXPECT_EQ(r->stats.count, 3 * (12 - 1 - 6));
  ASSERT_EQ(r->positions.size(), 15u);
  // The first scored target of window 1 is token 12+7, predicted from window row 6.
  std::vector<float> lq(12 * vocab), lr(12 * vocab);
  ASSERT_TRUE(FakeModel(vocab, 1)(seen_q[1].data(), 12, lq.data()).ok());
  ASSERT_TRUE(FakeModel(vocab, 2)(seen_q[1].data(), 12, lr.data()).ok());
  TokenComparison c =
      CompareDistributions(lq.data() + 6 * vocab, lr.data() + 6 * vocab, vocab, tokens[19]);
  EXPECT_DOUBLE_EQ(r->positions[5].kld, c.kld);
  EXPECT_DOUBLE_EQ(r->positions[5].nll, c.nll);
}

TEST(KlDivergenceTest, RejectsBadInput) {
  const int64_t vocab = 5;
  KlDivergenceOptions opt;
  opt.context = 4;
  opt.stride = 2;
  EXPECT_FALSE(
      ComputeKlDivergence({1, 2, 3}, vocab, FakeModel(vocab, 1), 6, FakeModel(6, 1), opt).ok());
  EXPECT_FALSE(
      ComputeKlDivergence({1, 7, 3}, vocab, FakeModel(vocab, 1), vocab, FakeModel(vocab, 1), opt)
          .ok());
  EXPECT_FALSE(
      ComputeKlDivergence({1}, vocab, FakeModel(vocab, 1), vocab, FakeModel(vocab, 1), opt).ok());
  opt.stride = 4;
  EXPECT_FALSE(
      ComputeKlDivergence({1, 2, 3}, vocab, FakeModel(vocab, 1), vocab, FakeModel(vocab, 1), opt)
          .ok());
  // A failing model's error comes back unchanged.
  opt.stride = 2;
  WindowLogitsFn broken = [](const int32_t*, int64_t, float*) {
    return absl::InternalError("engine broke");
  };
  auto r = ComputeKlDivergence({1, 2, 3}, vocab, FakeModel(vocab, 1), vocab, broken, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "engine broke");
  EXPECT_FALSE(SummarizeComparisons({}).ok());
}

// Real transformers (random init, two seeds) against a plain f64
// implementation written out here: run both on each window, log-softmax in
// f64, KL(ref || model) per scored target.
ModelConfig TinyLlama() {
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.architecture_name = ArchClassName(Arch::kLlama);
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 128;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

WindowLogitsFn EngineFn(const Transformer& engine) {
  return [&engine](const int32_t* t, int64_t n, float* logits) {
    KvCache cache = engine.NewCache(n);
    return engine.Forward(t, n, cache, logits, LogitsMode::kAll);
  };
}

TEST(KlDivergenceTest, RandomTransformersMatchPlainF64) {
  ModelConfig config = TinyLlama();
  config.initializer_range = 0.2;  // sharper distributions than the default 0.02
  auto q = Transformer::RandomInit(config, 7, DType::kF32);
  auto base = Transformer::RandomInit(config, 8, DType::kF32);
  ASSERT_TRUE(q.ok() && base.ok());
  const int64_t vocab = config.vocab_size;
  std::vector<int32_t> tokens(90);
  std::mt19937 gen(5);
  for (auto& t : tokens) t = static_cast<int32_t>(gen() % vocab);
  KlDivergenceOptions opt;
  opt.context = 32;
  opt.stride = 16;
  opt.keep_positions = true;
  auto r = ComputeKlDivergence(tokens, vocab, EngineFn(**q), vocab, EngineFn(**base), opt);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->positions.size(), tokens.size() - 1);

  double sum_kld = 0, sum_nll = 0, sum_nll_ref = 0;
  int64_t same = 0, count = 0, prev_end = 0;
  for (int64_t begin = 0;; begin += 16) {
    const int64_t end = std::min<int64_t>(begin + 32, tokens.size());
    std::vector<float> lq((end - begin) * vocab), lb((end - begin) * vocab);
    KvCache cq = (*q)->NewCache(end - begin), cb = (*base)->NewCache(end - begin);
    ASSERT_TRUE(
        (*q)->Forward(tokens.data() + begin, end - begin, cq, lq.data(), LogitsMode::kAll).ok());
    ASSERT_TRUE(
        (*base)->Forward(tokens.data() + begin, end - begin, cb, lb.data(), LogitsMode::kAll).ok());
    for (int64_t t = std::max(prev_end, begin + 1); t < end; ++t) {
      const float* a = lq.data() + (t - 1 - begin) * vocab;
      const float* b = lb.data() + (t - 1 - begin) * vocab;
      auto la = LogSoftmax(a, vocab), lr = LogSoftmax(b, vocab);
      double kld = 0;
      for (int64_t v = 0; v < vocab; ++v) kld += std::exp(lr[v]) * (lr[v] - la[v]);
      EXPECT_NEAR(r->positions[count].kld, kld, 1e-9) << t;
      sum_kld += kld;
      sum_nll -= la[tokens[t]];
      sum_nll_ref -= lr[tokens[t]];
      same += (std::max_element(a, a + vocab) - a) == (std::max_element(b, b + vocab) - b);
      ++count;
    }
    prev_end = end;
    if (end == static_cast<int64_t>(tokens.size())) break;
  }
  EXPECT_EQ(r->stats.count, count);
  EXPECT_NEAR(r->stats.kld.value, sum_kld / count, 1e-9);
  EXPECT_GT(r->stats.kld.value, 0.01);  // two different random models
  EXPECT_NEAR(r->stats.ppl.value, std::exp(sum_nll / count), 1e-6);
  EXPECT_NEAR(r->stats.ppl_ref.value, std::exp(sum_nll_ref / count), 1e-6);
  EXPECT_NEAR(r->stats.same_top.value, static_cast<double>(same) / count, 1e-12);

  // The reference against itself: zero divergence, full agreement, ratio 1.
  auto self = ComputeKlDivergence(tokens, vocab, EngineFn(**base), vocab, EngineFn(**base), opt);
  ASSERT_TRUE(self.ok()) << self.status();
  EXPECT_EQ(self->stats.kld.value, 0);
  EXPECT_EQ(self->stats.kld_quantiles.max, 0);
  EXPECT_EQ(self->stats.same_top.value, 1);
  EXPECT_EQ(self->stats.same_top.uncertainty, 0);
  EXPECT_EQ(self->stats.ppl_ratio.value, 1);
  EXPECT_EQ(self->stats.ln_ppl_ratio.value, 0);
  EXPECT_EQ(self->stats.rms_p_diff.value, 0);
  EXPECT_EQ(self->stats.p_diff_quantiles.min, 0);
  EXPECT_DOUBLE_EQ(self->stats.ln_ppl_correlation, 1);  // cov / sqrt(var * var): to rounding
  EXPECT_NEAR(self->stats.ppl.value, std::exp(sum_nll_ref / count), 1e-6);
}

}  // namespace
}  // namespace retort
