#include "distill/generation.h"

#include <atomic>
#include <cmath>
#include <map>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/init.h"

namespace retort {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Transformer> TinyModel(DType dtype = DType::kF32) {
  auto c = PresetConfig("llama", "tiny");
  EXPECT_TRUE(c.ok());
  c->eos_token_ids = {2};
  auto m = Transformer::RandomInit(*c, 11, dtype);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

// TinyModel with its final norm scaled up, so next-token distributions are
// peaked rather than nearly flat over the 512 tokens. Batch size changes the
// kernels a row goes through (GEMV vs GEMM tiles, loop vs sgemm attention),
// so logits may differ in the last bits; on a flat distribution that reorders
// near-equal tokens in the sampler and changes the draw, on a peaked one the
// gaps between candidates dwarf the rounding.
std::unique_ptr<Transformer> PeakedTinyModel(DType dtype) {
  auto m = TinyModel(dtype);
  const int64_t hidden = m->config().hidden_size;
  Tensor norm = Tensor::Zeros(DType::kF32, {hidden});
  for (int64_t j = 0; j < hidden; ++j) norm.mutable_data<float>()[j] = 24.0f;
  EXPECT_TRUE(
      m->ReplaceWeight("model.norm.weight", dtype == DType::kF32 ? norm : norm.To(dtype)).ok());
  return m;
}

std::vector<int32_t> Prompt(int64_t n, int seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(3 + (i * 37 + seed * 101) % 500);
  return t;
}

// A mix of greedy and seeded sampling requests with prompts of many lengths.
std::vector<GenerationRequest> Requests(int count, int64_t max_new) {
  std::vector<GenerationRequest> out;
  for (int i = 0; i < count; ++i) {
    GenerationRequest r;
    r.id = "r" + std::to_string(i);
    r.prompt = Prompt(1 + (i * 13) % 40, i);
    r.max_new_tokens = max_new + i % 5;
    r.ignore_eos = true;
    r.top_logprobs = 4;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = 1000 + i;
    } else {
      r.sampling.temperature = 0;
    }
    out.push_back(r);
  }
  return out;
}

// Reference: the request run alone through Forward, decoded like the
// generator does (same sampler and seed).
std::vector<int32_t> GenerateAlone(const Transformer& model, const GenerationRequest& r) {
  const int64_t V = model.config().vocab_size;
  KvCache cache = model.NewCache();
  std::vector<float> logits(V);
  EXPECT_TRUE(model.Forward(r.prompt.data(), r.prompt.size(), cache, logits.data()).ok());
  Sampler sampler(r.sampling);
  std::vector<int32_t> history = r.prompt, out;
  for (int64_t i = 0; i < r.max_new_tokens; ++i) {
    int32_t t = sampler.Sample(logits.data(), V, history);
    out.push_back(t);
    history.push_back(t);
    EXPECT_TRUE(model.Forward(&t, 1, cache, logits.data()).ok());
  }
  return out;
}

TEST(BatchGenerator, OutputDoesNotDependOnBatchSize) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    auto model = PeakedTinyModel(dtype);
    std::vector<GenerationRequest> reqs = Requests(12, 16);
    std::map<int64_t, std::vector<GenerationResult>> by_batch;
    for (int64_t batch : {1, 3, 8}) {
      GeneratorOptions o;
      o.max_batch = batch;
      o.max_prefill_tokens_per_step = 16;  // prompts span steps, mixed with decoding
      BatchGenerator gen(*model, o);
      by_batch[batch] = gen.Generate(reqs);
      EXPECT_GT(gen.stats().steps, 0);
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
      const GenerationResult& one = by_batch[1][i];
      ASSERT_TRUE(one.status.ok()) << one.status;
      EXPECT_EQ(one.id, reqs[i].id);
      EXPECT_EQ(one.finish_reason, "length");
      EXPECT_EQ(one.completion_tokens, reqs[i].max_new_tokens);
      EXPECT_EQ(one.tokens, GenerateAlone(*model, reqs[i])) << reqs[i].id;
      for (int64_t batch : {3, 8}) {
        const GenerationResult& other = by_batch[batch][i];
        EXPECT_EQ(other.tokens, one.tokens) << reqs[i].id << " batch " << batch;
        EXPECT_EQ(other.topk_ids, one.topk_ids) << reqs[i].id << " batch " << batch;
        ASSERT_EQ(other.logprobs.size(), one.logprobs.size());
        for (size_t t = 0; t < one.logprobs.size(); ++t)
          EXPECT_NEAR(other.logprobs[t], one.logprobs[t], 1e-4);
      }
    }
  }
}

// Log-probs are log_softmax of the raw logits (kModel) or of logits / T
// (kTempered); top-k in rank order, the sampled token's log-prob among them
// when it is in the top k.
TEST(BatchGenerator, LogprobsAreTheModelDistribution) {
  auto model = TinyModel();
  const int64_t V = model->config().vocab_size;
  GenerationRequest r;
  r.prompt = Prompt(9, 3);
  r.max_new_tokens = 6;
  r.ignore_eos = true;
  r.top_logprobs = 5;
  r.sampling.temperature = 0.5f;
  r.sampling.seed = 4;
  for (LogprobSource source : {LogprobSource::kModel, LogprobSource::kTempered}) {
    GeneratorOptions o;
    o.logprobs = source;
    BatchGenerator gen(*model, o);
    GenerationResult res = gen.Generate({r})[0];
    ASSERT_TRUE(res.status.ok());
    ASSERT_EQ(res.tokens.size(), 6u);
    ASSERT_EQ(res.top_k, 5);
    ASSERT_EQ(res.topk_ids.size(), 30u);
    ASSERT_EQ(res.topk_logprobs.size(), 30u);
    // Recompute from the whole sequence's logits (f64 log-softmax).
    std::vector<int32_t> seq = r.prompt;
    seq.insert(seq.end(), res.tokens.begin(), res.tokens.end());
    auto all = model->Logits(seq);
    ASSERT_TRUE(all.ok());
    const double inv_t = source == LogprobSource::kTempered ? 1.0 / 0.5 : 1.0;
    for (size_t t = 0; t < res.tokens.size(); ++t) {
      const float* row = all->data() + (r.prompt.size() - 1 + t) * V;
      double mx = -1e30, sum = 0;
      for (int64_t i = 0; i < V; ++i) mx = std::max(mx, row[i] * inv_t);
      for (int64_t i = 0; i < V; ++i) sum += std::exp(row[i] * inv_t - mx);
      const double lse = mx + std::log(sum);
      EXPECT_NEAR(res.logprobs[t], row[res.tokens[t]] * inv_t - lse, 1e-4);
      std::vector<int32_t> order(V);
      for (int64_t i = 0; i < V; ++i) order[i] = static_cast<int32_t>(i);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      for (int k = 0; k < 5; ++k) {
        EXPECT_EQ(res.topk_ids[t * 5 + k], order[k]);
        EXPECT_NEAR(res.topk_logprobs[t * 5 + k], row[order[k]] * inv_t - lse, 1e-4);
        if (k > 0) {
          EXPECT_LE(res.topk_logprobs[t * 5 + k], res.topk_logprobs[t * 5 + k - 1]);
        }
      }
    }
  }
}

// Finds the token greedy decoding produces at step `step` for `prompt`.
int32_t GreedyToken(const Transformer& model, const std::vector<int32_t>& prompt, int step) {
  GenerationRequest r;
  r.prompt = prompt;
  r.max_new_tokens = step + 1;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  return GenerateAlone(model, r)[step];
}

TEST(BatchGenerator, StopTokenIsKeptUnlessAskedAndLengthAndContext) {
  auto model = TinyModel();
  const std::vector<int32_t> prompt = Prompt(5, 9);
  const int32_t third = GreedyToken(*model, prompt, 2);
  GenerationRequest r;
  r.prompt = prompt;
  r.max_new_tokens = 50;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  r.stop_token_ids = {third};
  BatchGenerator gen(*model, {});
  auto res = gen.Generate({r})[0];
  EXPECT_EQ(res.finish_reason, "stop");
  // The first occurrence of `third` ends it (it may appear before step 2).
  ASSERT_FALSE(res.tokens.empty());
  EXPECT_EQ(res.tokens.back(), third);
  EXPECT_LE(res.tokens.size(), 3u);
  EXPECT_EQ(res.logprobs.size(), res.tokens.size());

  r.include_stop_token = false;
  auto res2 = gen.Generate({r})[0];
  EXPECT_EQ(res2.finish_reason, "stop");
  EXPECT_EQ(res2.tokens.size() + 1, res.tokens.size());

  // No stop id produced: "length" at max_new_tokens.
  r.stop_token_ids.clear();
  r.include_stop_token = true;
  r.max_new_tokens = 7;
  auto res3 = gen.Generate({r})[0];
  EXPECT_EQ(res3.finish_reason, "length");
  EXPECT_EQ(res3.completion_tokens, 7);
  EXPECT_EQ(res3.prompt_tokens, 5);

  // Context full: prompt + completion == max_context.
  GeneratorOptions small;
  small.max_context = 9;
  BatchGenerator gen2(*model, small);
  r.max_new_tokens = 100;
  auto res4 = gen2.Generate({r})[0];
  EXPECT_EQ(res4.finish_reason, "length");
  EXPECT_EQ(res4.completion_tokens, 4);
}

// The model's EOS ids stop a request unless it sets ignore_eos.
TEST(BatchGenerator, StopsAtModelEosUnlessIgnored) {
  auto plain = TinyModel();
  const std::vector<int32_t> prompt = Prompt(5, 9);
  const int32_t first = GreedyToken(*plain, prompt, 0);
  auto c = PresetConfig("llama", "tiny");
  ASSERT_TRUE(c.ok());
  c->eos_token_ids = {first};
  auto model = Transformer::RandomInit(*c, 11, DType::kF32);  // same weights, other EOS
  ASSERT_TRUE(model.ok());
  GenerationRequest r;
  r.prompt = prompt;
  r.max_new_tokens = 4;
  r.sampling.temperature = 0;
  BatchGenerator gen(**model, {});
  auto res = gen.Generate({r})[0];
  EXPECT_EQ(res.finish_reason, "stop");
  EXPECT_EQ(res.tokens, std::vector<int32_t>{first});
  r.ignore_eos = true;
  res = gen.Generate({r})[0];
  EXPECT_EQ(res.finish_reason, "length");
  EXPECT_EQ(res.completion_tokens, 4);
}

TEST(BatchGenerator, StopStrings) {
  auto model = TinyModel();
  const std::vector<int32_t> prompt = Prompt(6, 2);
  // Text of a token = "<id>," so a stop string can name a token pair.
  GeneratorOptions o;
  o.detokenize = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += std::to_string(id) + ",";
    return s;
  };
  GenerationRequest r;
  r.prompt = prompt;
  r.max_new_tokens = 20;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  std::vector<int32_t> greedy = GenerateAlone(*model, r);
  r.stop_strings = {"," + std::to_string(greedy[3]) + "," + std::to_string(greedy[4]) + ","};
  BatchGenerator gen(*model, o);
  auto res = gen.Generate({r})[0];
  EXPECT_EQ(res.finish_reason, "stop");
  EXPECT_EQ(res.stop_string, r.stop_strings[0]);
  ASSERT_LE(res.tokens.size(), 5u);
  EXPECT_EQ(res.tokens, std::vector<int32_t>(greedy.begin(), greedy.begin() + res.tokens.size()));

  // Without a detokenizer, stop strings are refused.
  BatchGenerator plain(*model, {});
  auto bad = plain.Generate({r})[0];
  EXPECT_EQ(bad.finish_reason, "error");
  EXPECT_THAT(std::string(bad.status.message()), HasSubstr("detokenize"));
}

// Continuous batching: with 2 slots and 6 requests of different lengths,
// a finished request's slot is refilled at the next step, so the number of
// steps is well below running them two by two in lockstep; results come
// through the callback as they finish, tokens stream in order.
TEST(BatchGenerator, RefillsFreedSlotsAndCallsBack) {
  auto model = TinyModel();
  GeneratorOptions o;
  o.max_batch = 2;
  std::vector<std::string> finished;
  std::map<std::string, int64_t> streamed;
  std::map<std::string, std::vector<int32_t>> streamed_topk;
  o.on_token = [&](const TokenEvent& e) {
    EXPECT_EQ(e.position, streamed[*e.id]);
    ++streamed[*e.id];
    ASSERT_EQ(e.top_k, 2);
    streamed_topk[*e.id].insert(streamed_topk[*e.id].end(), e.topk_ids, e.topk_ids + 2);
  };
  std::map<std::string, std::vector<int32_t>> final_topk;
  o.on_finished = [&](GenerationResult&& r) {
    finished.push_back(r.id);
    final_topk[r.id] = r.topk_ids;
  };
  BatchGenerator gen(*model, o);
  const std::vector<int64_t> lengths = {30, 2, 2, 2, 2, 30};
  for (size_t i = 0; i < lengths.size(); ++i) {
    GenerationRequest r;
    r.id = "q" + std::to_string(i);
    r.prompt = Prompt(4, static_cast<int>(i));
    r.max_new_tokens = lengths[i];
    r.ignore_eos = true;
    r.top_logprobs = 2;
    r.sampling.temperature = 0;
    EXPECT_EQ(gen.Submit(r), static_cast<int64_t>(i));
  }
  ASSERT_TRUE(gen.RunUntilIdle().ok());
  ASSERT_EQ(finished.size(), 6u);
  // q1..q4 finish while q0 is still running in the other slot.
  EXPECT_EQ(finished[0], "q1");
  EXPECT_EQ(finished[3], "q4");
  for (size_t i = 0; i < lengths.size(); ++i)
    EXPECT_EQ(streamed["q" + std::to_string(i)], lengths[i]);
  // Lockstep pairs would take 30 + 2 + 30 steps; continuous batching ~ 30 + 30 / 2.
  EXPECT_LE(gen.stats().steps, 45);
  EXPECT_EQ(gen.stats().generated_tokens, 68);
  EXPECT_EQ(gen.Pending(), 0);
}

// A long prompt is prefilled max_prefill_tokens_per_step at a time while
// the decoding sequence keeps getting one token every step.
TEST(BatchGenerator, LongPromptDoesNotStallDecoding) {
  auto model = TinyModel();
  GeneratorOptions o;
  o.max_prefill_tokens_per_step = 8;
  std::map<std::string, int64_t> tokens;
  o.on_token = [&](const TokenEvent& e) { ++tokens[*e.id]; };
  BatchGenerator gen(*model, o);
  GenerationRequest a;
  a.id = "a";
  a.prompt = Prompt(4, 1);
  a.max_new_tokens = 40;
  a.ignore_eos = true;
  gen.Submit(a);
  ASSERT_TRUE(gen.Step().ok());
  EXPECT_EQ(tokens["a"], 1);
  GenerationRequest b = a;
  b.id = "b";
  b.prompt = Prompt(64, 2);
  gen.Submit(b);
  for (int step = 1; step <= 8; ++step) {
    ASSERT_TRUE(gen.Step().ok());
    EXPECT_EQ(tokens["a"], 1 + step);
    EXPECT_EQ(tokens["b"], step == 8 ? 1 : 0) << step;  // 64 / 8 steps of prefill
  }
  EXPECT_EQ(gen.stats().prompt_tokens, 4 + 64);
}

TEST(BatchGenerator, RejectsBadRequestsWithoutStoppingOthers) {
  auto model = TinyModel();
  GeneratorOptions o;
  o.max_context = 64;
  BatchGenerator gen(*model, o);
  GenerationRequest good;
  good.id = "good";
  good.prompt = Prompt(3, 1);
  good.max_new_tokens = 3;
  GenerationRequest empty = good, oov = good, too_long = good, zero = good, bad_opt = good;
  empty.id = "empty";
  empty.prompt.clear();
  oov.id = "oov";
  oov.prompt.push_back(512);
  too_long.id = "long";
  too_long.prompt = Prompt(64, 1);
  zero.id = "zero";
  zero.max_new_tokens = 0;
  bad_opt.id = "opt";
  bad_opt.sampling.top_p = 2;
  auto res = gen.Generate({empty, good, oov, too_long, zero, bad_opt});
  ASSERT_EQ(res.size(), 6u);
  EXPECT_TRUE(res[1].status.ok());
  EXPECT_EQ(res[1].completion_tokens, 3);
  for (int i : {0, 2, 3, 4, 5}) {
    EXPECT_FALSE(res[i].status.ok()) << i;
    EXPECT_EQ(res[i].finish_reason, "error");
    EXPECT_THAT(std::string(res[i].status.message()), HasSubstr("'" + res[i].id + "'"));
  }
  EXPECT_THAT(std::string(res[2].status.message()), HasSubstr("512"));
  EXPECT_THAT(std::string(res[3].status.message()), HasSubstr("context"));
}

// Submit from other threads while Run() serves on the owning thread; Cancel
// finishes a long request early.
TEST(BatchGenerator, SubmitFromOtherThreadsAndCancel) {
  auto model = TinyModel();
  GeneratorOptions o;
  o.max_batch = 4;
  std::mutex mu;
  std::map<std::string, GenerationResult> results;
  o.on_finished = [&](GenerationResult&& r) {
    std::lock_guard<std::mutex> lock(mu);
    results[r.id] = std::move(r);
  };
  BatchGenerator gen(*model, o);
  std::atomic<int64_t> long_index{-1};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 4; ++i) {
        GenerationRequest r;
        r.id = "c" + std::to_string(c) + "_" + std::to_string(i);
        r.prompt = Prompt(5, c * 10 + i);
        r.max_new_tokens = 5;
        r.ignore_eos = true;
        gen.Submit(r);
      }
    });
  }
  GenerationRequest endless;
  endless.id = "endless";
  endless.prompt = Prompt(3, 99);
  endless.max_new_tokens = 1000000;
  endless.ignore_eos = true;
  long_index = gen.Submit(endless);
  std::thread canceller([&] {
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (results.size() >= 12) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    gen.Cancel(long_index);
    gen.Close();
  });
  for (auto& t : clients) t.join();
  ASSERT_TRUE(gen.Run().ok());
  canceller.join();
  ASSERT_EQ(results.size(), 13u);
  EXPECT_EQ(results["endless"].finish_reason, "cancelled");
  EXPECT_GT(results["endless"].completion_tokens, 0);
  for (auto& [id, r] : results) {
    if (id != "endless") {
      EXPECT_EQ(r.completion_tokens, 5) << id;
    }
  }
}

TEST(LogSumExpAndTopK, HandleTiesAndNaN) {
  const float l[] = {1.f, NAN, 3.f, 3.f, -INFINITY, 0.5f};
  std::vector<int32_t> ids;
  TopKIds(l, 6, 3, &ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 3, 0}));
  TopKIds(l, 6, 10, &ids);
  EXPECT_EQ(ids.size(), 6u);
  EXPECT_EQ(ids[4], 1);  // NaN and -inf last, by id
  const double lse = LogSumExp(l, 6, 1.f);
  EXPECT_NEAR(lse, std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(0.5)), 1e-6);
}

}  // namespace
}  // namespace retort
