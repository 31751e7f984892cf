// OnPolicySampler on the bundled arithmetic teacher (models/arith-teacher)
// and its prompts: the lambda draw, the rows it packs, determinism, the rank
// split and the verifier's counts.
#include "distill/on_policy.h"

#include <set>

#include "gtest/gtest.h"
#include "model/model_files.h"

namespace retort {
namespace {

constexpr char kModel[] = "models/arith-teacher";
constexpr char kPrompts[] = "data/arith/heldout.jsonl";

class OnPolicyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto engine = LoadEngine(kModel);
    ASSERT_TRUE(engine.ok()) << engine.status();
    model_ = engine->release();
    auto tok = LoadTokenizer(kModel);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
    auto tmpl = LoadChatTemplate(kModel);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    template_ = new ChatTemplate(*std::move(tmpl));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete template_;
  }
  static std::unique_ptr<OnPolicySampler> Make(OnPolicyOptions o, int rank = 0, int world = 1) {
    o.prompts = kPrompts;
    auto s = OnPolicySampler::Create(o, *tokenizer_, template_, 512, rank, world);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  static Transformer* model_;
  static Tokenizer* tokenizer_;
  static ChatTemplate* template_;
};
Transformer* OnPolicyTest::model_ = nullptr;
Tokenizer* OnPolicyTest::tokenizer_ = nullptr;
ChatTemplate* OnPolicyTest::template_ = nullptr;

TEST_F(OnPolicyTest, LambdaDrawsAreSeededAndAgreeAcrossRanks) {
  OnPolicyOptions o;
  o.lambda = 0.3;
  o.seed = 5;
  auto a = Make(o, 0, 2), b = Make(o, 1, 2);
  o.seed = 6;
  auto c = Make(o);
  int on = 0, same_as_other_seed = 0;
  for (int64_t step = 0; step < 1000; ++step) {
    for (int64_t micro = 0; micro < 2; ++micro) {
      const bool x = a->IsOnPolicy(step, micro, 2);
      EXPECT_EQ(x, b->IsOnPolicy(step, micro, 2));
      on += x;
      same_as_other_seed += x == c->IsOnPolicy(step, micro, 2);
    }
  }
  EXPECT_GT(on, 520);  // 2000 draws at 0.3: 600 +- 20.5 (sd)
  EXPECT_LT(on, 680);
  EXPECT_LT(same_as_other_seed, 1900);
  o.lambda = 0;
  EXPECT_FALSE(Make(o)->IsOnPolicy(3, 0, 1));
  o.lambda = 1;
  EXPECT_TRUE(Make(o)->IsOnPolicy(3, 0, 1));
}

TEST_F(OnPolicyTest, PacksPromptPlusCompletionWithTheCompletionAsTargets) {
  OnPolicyOptions o;
  o.prompts_per_batch = 4;
  o.max_new_tokens = 24;
  o.temperature = 1;
  o.seed = 3;
  auto s = Make(o);
  PackedBatch batch;
  OnPolicyStats stats;
  ASSERT_TRUE(s->Sample(*model_, 2, 1, 3, &batch, &stats).ok());
  EXPECT_EQ(batch.rows, 4);
  EXPECT_EQ(batch.tokens.size(), static_cast<size_t>(batch.rows * batch.seq_len));
  EXPECT_EQ(stats.samples, 4);
  EXPECT_EQ(stats.batches, 1);
  EXPECT_EQ(stats.stopped + stats.truncated, 4);
  EXPECT_EQ(batch.num_targets, static_cast<int64_t>(stats.completion_tokens));
  int64_t targets = 0;
  for (int64_t r = 0; r < batch.rows; ++r) {
    const int64_t row = r * batch.seq_len;
    // The prompt is masked; from its last token on, every target is the next
    // token, up to the end of the completion; padding is its own document.
    int64_t first = -1, last = -1;
    for (int64_t i = 0; i < batch.seq_len; ++i) {
      if (batch.targets[row + i] < 0) continue;
      if (first < 0) first = i;
      last = i;
      EXPECT_EQ(batch.targets[row + i], batch.tokens[row + i + 1]);
      EXPECT_EQ(batch.doc_start[row + i], row);
      EXPECT_EQ(batch.positions[row + i], i);
      ++targets;
    }
    ASSERT_GT(first, 0);
    EXPECT_LE(last - first + 1, 24);
    // The prompt ends with the assistant turn's "<think>\n" (auto).
    EXPECT_EQ(batch.tokens[row + first], tokenizer_->Encode("\n", false).back());
  }
  EXPECT_EQ(targets, batch.num_targets);

  // The same step and micro-batch draw the same samples; another differs.
  PackedBatch again, other;
  ASSERT_TRUE(s->Sample(*model_, 2, 1, 3, &again, &stats).ok());
  EXPECT_EQ(again.tokens, batch.tokens);
  EXPECT_EQ(again.targets, batch.targets);
  ASSERT_TRUE(s->Sample(*model_, 2, 2, 3, &other, &stats).ok());
  EXPECT_NE(other.tokens, batch.tokens);
  EXPECT_EQ(s->FirstSampleOfStep(2, 3), 2 * 3 * 4);
}

TEST_F(OnPolicyTest, RanksSplitThePromptsAndTheVerifierCountsCorrectSamples) {
  OnPolicyOptions o;
  o.prompts_per_batch = 5;
  o.max_new_tokens = 400;
  o.temperature = 0;  // the teacher's greedy traces: ~99% correct
  o.verifier = "math";
  o.think = ThinkPrefix::kAuto;
  auto r0 = Make(o, 0, 2), r1 = Make(o, 1, 2);
  PackedBatch b0, b1;
  OnPolicyStats s0, s1;
  ASSERT_TRUE(r0->Sample(*model_, 0, 0, 1, &b0, &s0).ok());
  ASSERT_TRUE(r1->Sample(*model_, 0, 0, 1, &b1, &s1).ok());
  EXPECT_EQ(s0.verified, 5);
  EXPECT_GE(s0.correct + s1.correct, 9);
  EXPECT_EQ(s0.stopped + s1.stopped, 10);
  // Different prompts on the two ranks (the first rows differ).
  EXPECT_NE(std::vector<int32_t>(b0.tokens.begin(), b0.tokens.begin() + 20),
            std::vector<int32_t>(b1.tokens.begin(), b1.tokens.begin() + 20));
}

TEST_F(OnPolicyTest, BadOptionsAreRefused) {
  OnPolicyOptions o;
  o.prompts = kPrompts;
  o.lambda = 1.5;
  EXPECT_FALSE(OnPolicySampler::Create(o, *tokenizer_, template_, 512, 0, 1).ok());
  o.lambda = 1;
  o.prompts_per_batch = 0;
  EXPECT_FALSE(OnPolicySampler::Create(o, *tokenizer_, template_, 512, 0, 1).ok());
  o.prompts_per_batch = 2;
  auto none = OnPolicySampler::Create(o, *tokenizer_, nullptr, 512, 0, 1);
  EXPECT_NE(std::string(none.status().message()).find("chat template"), std::string::npos);
  o.prompts = "no/such/prompts.jsonl";
  EXPECT_FALSE(OnPolicySampler::Create(o, *tokenizer_, template_, 512, 0, 1).ok());
  o.prompts = kPrompts;
  auto short_ctx = OnPolicySampler::Create(o, *tokenizer_, template_, 8, 0, 1);
  EXPECT_NE(std::string(short_ctx.status().message()).find("the context is 8"), std::string::npos);
}

}  // namespace
}  // namespace retort
