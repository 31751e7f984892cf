#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(PerplexityTest, NllMatchesPlainLogSoftmax) {
  float logits[4] = {1.0f, -2.0f, 0.5f, 3.0f};
  double z = std::exp(1.0) + std::exp(-2.0) + std::exp(0.5) + std::exp(3.0);
  EXPECT_NEAR(NegativeLogLikelihood(logits, 4, 2), -std::log(std::exp(0.5) / z), 1e-12);
}

// A "model" whose prediction for the next token depends on how much left
// context it was given: with full context it is confident, at the window start
// it is uniform. Lets the test check exactly which targets each window scores.
struct Recorder {
  int64_t vocab = 5;
  std::vector<std::vector<int32_t>> windows;
  absl::Status operator()(const int32_t* tokens, int64_t n, float* logits) {
    windows.emplace_back(tokens, tokens + n);
    for (int64_t i = 0; i < n * vocab; ++i) logits[i] = 0;
    return absl::OkStatus();
  }
};

TEST(PerplexityTest, UniformModelGivesVocabSize) {
  std::vector<int32_t> tokens(100);
  for (int i = 0; i < 100; ++i) tokens[i] = i % 5;
  Recorder rec;
  PerplexityOptions opt;
  opt.context = 32;
  opt.stride = 16;
  auto r = ComputePerplexity(tokens, 5, std::ref(rec), opt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->perplexity, 5.0, 1e-9);
  EXPECT_EQ(r->tokens_scored, 99);
  // windows start at 0,16,...,64 (64+32 = 96 < 100), then 80 reaches the end.
  EXPECT_EQ(r->windows, 6);
  EXPECT_EQ(rec.windows.back().size(), 20u);
}

TEST(PerplexityTest, EveryTargetScoredOnceWithStridedWindows) {
  // Bigram model that puts all mass on "previous token + 1": perfect for the
  // sequence 0,1,2,... so ppl == 1 exactly when each target is predicted from
  // the logits of its own predecessor.
  const int64_t vocab = 50;
  std::vector<int32_t> tokens(50);
  for (int i = 0; i < 50; ++i) tokens[i] = i;
  std::multiset<int32_t> scored_from;
  WindowLogitsFn fn = [&](const int32_t* t, int64_t n, float* logits) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t v = 0; v < vocab; ++v) logits[i * vocab + v] = (v == t[i] + 1) ? 100.f : -100.f;
    return absl::OkStatus();
  };
  for (int64_t stride : {1, 3, 7, 9}) {
    PerplexityOptions opt;
    opt.context = 10;
    opt.stride = stride;
    auto r = ComputePerplexity(tokens, vocab, fn, opt);
    ASSERT_TRUE(r.ok());
    EXPECT_NEAR(r->perplexity, 1.0, 1e-9) << stride;
    EXPECT_EQ(r->tokens_scored, 49) << stride;
  }
}

TEST(PerplexityTest, RejectsBadInput) {
  Recorder rec;
  PerplexityOptions opt;
  EXPECT_FALSE(ComputePerplexity({1}, 5, std::ref(rec), opt).ok());
  EXPECT_FALSE(ComputePerplexity({1, 9}, 5, std::ref(rec), opt).ok());
  opt.stride = 0;
  EXPECT_FALSE(ComputePerplexity({1, 2}, 5, std::ref(rec), opt).ok());
  opt.stride = opt.context;  // no overlap: window starts would go unscored
  EXPECT_FALSE(ComputePerplexity({1, 2}, 5, std::ref(rec), opt).ok());
}

TEST(PerplexityTest, StridedPlanScoresEachTargetOnceAndEndsAtTheEnd) {
  for (int64_t n : {2, 9, 10, 11, 50}) {
    for (int64_t stride : {1, 3, 9}) {
      absl::StatusOr<std::vector<ScoredWindow>> plan = PlanStridedWindows(n, 10, stride, "test");
      ASSERT_TRUE(plan.ok()) << plan.status();
      int64_t next_target = 1;
      for (size_t i = 0; i < plan->size(); ++i) {
        const ScoredWindow& w = (*plan)[i];
        EXPECT_EQ(w.begin, static_cast<int64_t>(i) * stride);
        EXPECT_EQ(w.length, std::min<int64_t>(10, n - w.begin));
        EXPECT_EQ(w.first_target, next_target) << "n " << n << " stride " << stride;
        next_target = w.begin + w.length;
      }
      EXPECT_EQ(next_target, n) << "n " << n << " stride " << stride;
    }
  }
  // Two windows of 4 every 2 over 6 tokens: the second scores only 4 and 5.
  absl::StatusOr<std::vector<ScoredWindow>> plan = PlanStridedWindows(6, 4, 2, "test");
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_EQ((*plan)[1].begin, 2);
  EXPECT_EQ((*plan)[1].first_target, 4);

  EXPECT_EQ(PlanStridedWindows(1, 10, 5, "KL divergence").status().message(),
            "KL divergence needs at least 2 tokens, the text has 1");
  EXPECT_FALSE(PlanStridedWindows(10, 1, 1, "test").ok());
  EXPECT_FALSE(PlanStridedWindows(10, 10, 0, "test").ok());
  EXPECT_FALSE(PlanStridedWindows(10, 10, 10, "test").ok());
}

}  // namespace
}  // namespace retort
