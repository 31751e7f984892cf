// BatchedGenerator on a tiny random model: finish reasons, cancellation,
// top-K delivery and concurrent requests sharing the batch.
#include "serve/scheduler.h"

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
  absl::StatusOr<std::string> finish = g.Generate(Greedy(5), collect);
  ASSERT_TRUE(finish.ok()) << finish.status();
  EXPECT_EQ(*finish, "length");
  ASSERT_EQ(ids.size(), 5u);
  const std::vector<int32_t> first = ids;

  // A stop id ends the sequence before it (not reported).
  SequenceRequest stop = Greedy(5);
  stop.stop_ids = {first[0]};
  ids.clear();
  finish = g.Generate(stop, collect);
  ASSERT_TRUE(finish.ok());
  EXPECT_EQ(*finish, "stop");
  EXPECT_TRUE(ids.empty());

  // The callback cancels.
  int seen = 0;
  finish = g.Generate(Greedy(5), [&seen](const GeneratedToken&) { return ++seen < 2; });
  ASSERT_TRUE(finish.ok());
  EXPECT_EQ(*finish, "cancelled");
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
    return finish.ok() && *finish == "length" ? count : -1;
  };
  std::vector<std::future<int64_t>> runs;
  for (int i = 0; i < 5; ++i) runs.push_back(std::async(std::launch::async, run, 3 + i));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(runs[i].get(), 3 + i);
}

}  // namespace
}  // namespace retort::serve
