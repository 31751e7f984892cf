// BatchedGenerator on a tiny random model: finish reasons, cancellation,
// top-K delivery, concurrent requests sharing the batch, and prompt scoring
// (PromptLogprobs) against the logits of one whole-sequence forward.
#include "serve/scheduler.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <vector>

#include "gtest/gtest.h"
#include "model/init.h"

namespace retort::serve {
namespace {

std::unique_ptr<Transformer> TinyModel() {
  auto c = PresetConfig("llama", "tiny");
  EXPECT_TRUE(c.ok());
  auto m = Transformer::RandomInit(*c, 11, DType::kF32);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

SequenceRequest Greedy(int64_t max_new_tokens) {
  SequenceRequest r;
  r.prompt = {1, 5, 9};
  r.max_new_tokens = max_new_tokens;
  r.sampler.temperature = 0;
  return r;
}

TEST(BatchedGeneratorTest, LengthStopAndCancel) {
  auto model = TinyModel();
  BatchedGenerator g(*model, 2);
  std::vector<int32_t> ids;
  auto collect = [&ids](const GeneratedToken& t) {
    ids.push_back(t.id);
    return true;
  };
  absl::StatusOr<SequenceEnd> finish = g.Generate(Greedy(5), collect);
  ASSERT_TRUE(finish.ok()) << finish.status();
  EXPECT_EQ(finish->finish_reason, "length");
  EXPECT_EQ(finish->stop_id, -1);
  ASSERT_EQ(ids.size(), 5u);
  const std::vector<int32_t> first = ids;

  // A stop id ends the sequence: not a token, named in stop_id.
  SequenceRequest stop = Greedy(5);
  stop.stop_ids = {first[0]};
  ids.clear();
  finish = g.Generate(stop, collect);
  ASSERT_TRUE(finish.ok());
  EXPECT_EQ(finish->finish_reason, "stop");
  EXPECT_EQ(finish->stop_id, first[0]);
  EXPECT_TRUE(ids.empty());
  // The same with top-K (tokens handed over at the end), after the tokens
  // before it: seeded sampling (greedy repeats one token on this model),
  // stopped at its first token not seen before.
  SequenceRequest sampled = Greedy(8);
  sampled.sampler.temperature = 1;
  sampled.sampler.seed = 3;
  ids.clear();
  ASSERT_TRUE(g.Generate(sampled, collect).ok());
  const std::vector<int32_t> seq = ids;
  size_t k = 1;
  while (k < seq.size() && std::find(seq.begin(), seq.begin() + k, seq[k]) != seq.begin() + k) ++k;
  ASSERT_LT(k, seq.size()) << "no new token in the sample";
  sampled.stop_ids = {seq[k]};
  sampled.top_logprobs = 1;
  ids.clear();
  finish = g.Generate(sampled, collect);
  ASSERT_TRUE(finish.ok());
  EXPECT_EQ(finish->finish_reason, "stop");
  EXPECT_EQ(finish->stop_id, seq[k]);
  EXPECT_EQ(ids, std::vector<int32_t>(seq.begin(), seq.begin() + k));

  // The callback cancels.
  int seen = 0;
  finish = g.Generate(Greedy(5), [&seen](const GeneratedToken&) { return ++seen < 2; });
  ASSERT_TRUE(finish.ok());
  EXPECT_EQ(finish->finish_reason, "cancelled");
  EXPECT_EQ(seen, 2);
}

TEST(BatchedGeneratorTest, TopLogprobsArriveWithTheTokens) {
  auto model = TinyModel();
  BatchedGenerator g(*model, 2);
  SequenceRequest r = Greedy(3);
  r.top_logprobs = 2;
  std::vector<GeneratedToken> tokens;
  auto finish = g.Generate(r, [&tokens](const GeneratedToken& t) {
    tokens.push_back(t);
    return true;
  });
  ASSERT_TRUE(finish.ok());
  ASSERT_EQ(tokens.size(), 3u);
  for (const GeneratedToken& t : tokens) {
    ASSERT_EQ(t.top.size(), 2u);
    EXPECT_EQ(t.top[0].first, t.id);  // greedy: the chosen token is the most likely
    EXPECT_LE(t.logprob, 0);
  }
}

TEST(BatchedGeneratorTest, ConcurrentRequestsAllFinish) {
  auto model = TinyModel();
  BatchedGenerator g(*model, 2);
  auto run = [&g](int64_t n) {
    int64_t count = 0;
    auto finish = g.Generate(Greedy(n), [&count](const GeneratedToken&) {
      ++count;
      return true;
    });
    EXPECT_TRUE(finish.ok());
    return finish.ok() && finish->finish_reason == "length" ? count : -1;
  };
  std::vector<std::future<int64_t>> runs;
  for (int i = 0; i < 5; ++i) runs.push_back(std::async(std::launch::async, run, 3 + i));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(runs[i].get(), 3 + i);
}

// log_softmax(logits[t - 1])[prompt[t]] from one Forward over the whole
// sequence (what `retort eval --dump-logits` writes), in f64.
std::vector<double> ReferenceLogprobs(const Transformer& model,
                                      const std::vector<int32_t>& prompt) {
  absl::StatusOr<std::vector<float>> logits = model.Logits(prompt);
  EXPECT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = model.config().vocab_size;
  std::vector<double> out;
  for (size_t t = 1; t < prompt.size(); ++t) {
    const float* row = logits->data() + (t - 1) * vocab;
    double max = row[0], sum = 0;
    for (int64_t v = 0; v < vocab; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    out.push_back(row[prompt[t]] - max - std::log(sum));
  }
  return out;
}

TEST(PromptLogprobsTest, MatchesOneWholeSequenceForward) {
  auto model = TinyModel();
  // Longer than one prefill chunk, so the pieces must join up.
  std::vector<int32_t> prompt;
  for (int64_t i = 0; i < Transformer::kPrefillChunk + 40; ++i) {
    prompt.push_back(static_cast<int32_t>((i * 37 + 11) % model->config().vocab_size));
  }
  absl::StatusOr<std::vector<GeneratedToken>> scored = PromptLogprobs(*model, prompt, 3);
  ASSERT_TRUE(scored.ok()) << scored.status();
  const std::vector<double> reference = ReferenceLogprobs(*model, prompt);
  ASSERT_EQ(scored->size(), prompt.size() - 1);
  for (size_t t = 1; t < prompt.size(); ++t) {
    const GeneratedToken& g = (*scored)[t - 1];
    EXPECT_EQ(g.id, prompt[t]);
    EXPECT_NEAR(g.logprob, reference[t - 1], 1e-5) << "token " << t;
    ASSERT_EQ(g.top.size(), 3u);
    EXPECT_GE(g.top[0].second, g.top[1].second);
    EXPECT_GE(g.top[0].second, g.logprob);
  }
  // The rank (vLLM's): 1 + the number of tokens with larger logits.
  absl::StatusOr<std::vector<float>> logits = model->Logits(prompt);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = model->config().vocab_size;
  int top_ranked = 0;
  for (size_t t = 1; t < prompt.size(); ++t) {
    const float* row = logits->data() + (t - 1) * vocab;
    const int64_t above =
        std::count_if(row, row + vocab, [&](float v) { return v > row[prompt[t]]; });
    const GeneratedToken& g = (*scored)[t - 1];
    EXPECT_EQ(g.rank, 1 + above) << "token " << t;
    EXPECT_EQ(g.rank == 1, g.top[0].first == g.id) << "token " << t;
    top_ranked += g.rank == 1;
  }
  EXPECT_LT(top_ranked, static_cast<int>(prompt.size()) - 1);
  // One token scores nothing; an id outside the vocabulary is an error.
  EXPECT_TRUE(PromptLogprobs(*model, {5}, 1)->empty());
  EXPECT_FALSE(
      PromptLogprobs(*model, {5, static_cast<int32_t>(model->config().vocab_size)}, 0).ok());
}

TEST(BatchedGeneratorTest, ScoresPromptsWhileGenerating) {
  auto model = TinyModel();
  BatchedGenerator g(*model, 2);
  const std::vector<int32_t> prompt = {1, 5, 9, 14, 2, 7};
  const std::vector<double> reference = ReferenceLogprobs(*model, prompt);
  auto generating = std::async(std::launch::async, [&g] {
    return g.Generate(Greedy(40), [](const GeneratedToken&) { return true; });
  });
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::vector<GeneratedToken>> scored = g.ScorePrompt(prompt, 1);
    ASSERT_TRUE(scored.ok()) << scored.status();
    ASSERT_EQ(scored->size(), prompt.size() - 1);
    for (size_t t = 0; t < scored->size(); ++t) {
      EXPECT_NEAR((*scored)[t].logprob, reference[t], 1e-5);
      EXPECT_EQ((*scored)[t].top.size(), 1u);
    }
  }
  absl::StatusOr<SequenceEnd> end = generating.get();
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(end->finish_reason, "length");
}

}  // namespace
}  // namespace retort::serve
