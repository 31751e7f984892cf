// Transformer::ForwardBatch against Forward run on each sequence alone.
#include <algorithm>
#include <cmath>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/init.h"
#include "model/transformer.h"
#include "quantize/gguf_quants.h"

namespace retort {
namespace {

using ::testing::HasSubstr;

// max |a - b| / max |b| over a row.
double RelDiff(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

ModelConfig Config(const std::string& family) {
  auto c = PresetConfig(family, "tiny");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// A tiny model with its linear weights in `dtype`: F32/BF16 straight from
// RandomInit, ggml block types quantized from the f32 model (GGUF-style).
std::unique_ptr<Transformer> MakeModel(const ModelConfig& config, DType dtype) {
  if (!IsBlockQuantized(dtype)) {
    auto m = Transformer::RandomInit(config, 7, dtype);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }
  auto f32 = Transformer::RandomInit(config, 7, DType::kF32);
  EXPECT_TRUE(f32.ok()) << f32.status();
  std::vector<std::pair<std::string, Tensor>> weights;
  for (const auto& [name, t] : (*f32)->NamedWeights()) {
    if (t.rank() == 2) {
      auto q = ggml::QuantizeTensor(t, dtype);
      EXPECT_TRUE(q.ok()) << name << ": " << q.status();
      weights.emplace_back(name, *q);
    } else {
      weights.emplace_back(name, t);
    }
  }
  auto m = Transformer::FromNamedWeights(config, weights, "quantized");
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

std::vector<int32_t> Tokens(int64_t n, int64_t vocab, int seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 131 + seed * 977 + 5) % vocab);
  return t;
}

struct Case {
  std::string family;
  DType dtype;
  double tolerance;  // relative, per logits row
};

class BatchVsAlone : public ::testing::TestWithParam<Case> {};

// Five sequences with prompts of different lengths are prefilled in one call
// (one longer than a pass, so the batch spans passes), then decode together
// while a sixth sequence joins and prefills in the middle; every logits row
// equals what Forward computes for that sequence alone.
TEST_P(BatchVsAlone, SameLogitsAsForwardAlone) {
  const Case& p = GetParam();
  ModelConfig config = Config(p.family);
  auto model = MakeModel(config, p.dtype);
  ASSERT_NE(model, nullptr);
  const int64_t V = config.vocab_size;
  const std::vector<int64_t> lengths = {1, 3, 7, 20, Transformer::kPrefillChunk + 37, 11};
  const int64_t S = static_cast<int64_t>(lengths.size());
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t s = 0; s < S; ++s) seqs.push_back(Tokens(lengths[s] + 6, V, static_cast<int>(s)));

  // Alone: prefill, then one Forward per decode token.
  std::map<std::pair<int64_t, int64_t>, std::vector<float>> alone;  // (seq, end) -> logits
  for (int64_t s = 0; s < S; ++s) {
    KvCache cache = model->NewCache();
    std::vector<float> logits(V);
    ASSERT_TRUE(model->Forward(seqs[s].data(), lengths[s], cache, logits.data()).ok());
    alone[{s, lengths[s]}] = logits;
    for (int64_t e = lengths[s]; e < static_cast<int64_t>(seqs[s].size()); ++e) {
      ASSERT_TRUE(model->Forward(&seqs[s][e], 1, cache, logits.data()).ok());
      alone[{s, e + 1}] = logits;
    }
  }

  // Batched: sequences 0..4 start together, 5 joins at step 3.
  std::vector<KvCache> caches;
  for (int64_t s = 0; s < S; ++s) caches.push_back(model->NewCache());
  std::vector<int64_t> done(S, 0);
  double worst = 0;
  int64_t rows = 0;
  for (int step = 0; step < 8; ++step) {
    std::vector<BatchSlot> slots;
    std::vector<int64_t> who;
    for (int64_t s = 0; s < S; ++s) {
      if (s == 5 && step < 3) continue;
      const int64_t take = done[s] == 0 ? lengths[s] : 1;
      if (done[s] + take > static_cast<int64_t>(seqs[s].size())) continue;
      slots.push_back({&caches[s], seqs[s].data() + done[s], take, true});
      who.push_back(s);
    }
    std::vector<float> logits(slots.size() * V, NAN);
    ASSERT_TRUE(model->ForwardBatch(slots, logits.data()).ok());
    for (size_t i = 0; i < who.size(); ++i) {
      const int64_t s = who[i];
      done[s] += slots[i].n;
      EXPECT_EQ(caches[s].position(), done[s]);
      const double d = RelDiff(logits.data() + i * V, alone[{s, done[s]}].data(), V);
      worst = std::max(worst, d);
      ++rows;
      EXPECT_LE(d, p.tolerance) << "seq " << s << " after " << done[s] << " tokens, step " << step;
    }
  }
  EXPECT_GT(rows, 30);
  std::cout << "[ observed ] " << p.family << " " << DTypeName(p.dtype)
            << ": max relative logits difference batch vs alone " << worst << "\n";
}

// Tolerances: f32/bf16 weights differ only in summation order (GEMV vs sgemm,
// ~1e-7 observed). Block-quantized weights: the batch's GEMM multiplies f32
// activations where a short sequence alone takes the GEMV that rounds them
// to 8 bits (as llama.cpp), so rows differ by that rounding (observed up to
// ~8e-3 relative on these tiny models).
INSTANTIATE_TEST_SUITE_P(
    Dtypes, BatchVsAlone,
    ::testing::Values(Case{"llama", DType::kF32, 1e-5}, Case{"llama", DType::kBF16, 1e-5},
                      Case{"qwen2", DType::kF32, 1e-5}, Case{"qwen3", DType::kBF16, 1e-5},
                      Case{"mistral", DType::kF32, 1e-5}, Case{"llama", DType::kQ8_0, 2e-2},
                      Case{"llama", DType::kQ4_0, 2e-2}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return info.param.family + "_" + std::string(DTypeName(info.param.dtype));
    });

// Decode-only steps of up to kQuantGemvMaxRows sequences take the same
// integer GEMV as a sequence alone: identical bits for quantized weights.
TEST(ForwardBatch, QuantizedDecodeMatchesAloneExactly) {
  ModelConfig config = Config("llama");
  auto model = MakeModel(config, DType::kQ4_0);
  ASSERT_NE(model, nullptr);
  const int64_t V = config.vocab_size, S = 6;
  std::vector<KvCache> caches, alone;
  std::vector<std::vector<int32_t>> seqs;
  std::vector<float> out(S * V), one(V);
  for (int64_t s = 0; s < S; ++s) {
    seqs.push_back(Tokens(8, V, static_cast<int>(s)));
    caches.push_back(model->NewCache());
    alone.push_back(model->NewCache());
    // Same prefill in both (one token: both take the GEMV).
    ASSERT_TRUE(model->Forward(seqs[s].data(), 1, caches[s], one.data()).ok());
    ASSERT_TRUE(model->Forward(seqs[s].data(), 1, alone[s], one.data()).ok());
  }
  for (int64_t t = 1; t < 8; ++t) {
    std::vector<BatchSlot> slots;
    for (int64_t s = 0; s < S; ++s) slots.push_back({&caches[s], &seqs[s][t], 1, true});
    ASSERT_TRUE(model->ForwardBatch(slots, out.data()).ok());
    for (int64_t s = 0; s < S; ++s) {
      ASSERT_TRUE(model->Forward(&seqs[s][t], 1, alone[s], one.data()).ok());
      EXPECT_EQ(RelDiff(out.data() + s * V, one.data(), V), 0.0) << "seq " << s << " token " << t;
    }
  }
}

TEST(ForwardBatch, RowsWithoutLogitsAreUntouched) {
  ModelConfig config = Config("llama");
  auto model = MakeModel(config, DType::kF32);
  ASSERT_NE(model, nullptr);
  const int64_t V = config.vocab_size;
  KvCache a = model->NewCache(), b = model->NewCache();
  std::vector<int32_t> ta = Tokens(5, V, 1), tb = Tokens(9, V, 2);
  std::vector<float> logits(2 * V, 123.f);
  ASSERT_TRUE(
      model->ForwardBatch({{&a, ta.data(), 5, false}, {&b, tb.data(), 9, true}}, logits.data())
          .ok());
  EXPECT_TRUE(std::all_of(logits.begin(), logits.begin() + V, [](float x) { return x == 123.f; }));
  EXPECT_NE(logits[V], 123.f);
  EXPECT_EQ(a.position(), 5);
  EXPECT_EQ(b.position(), 9);
  // No logits wanted at all: a null buffer is fine.
  EXPECT_TRUE(model->ForwardBatch({{&a, ta.data(), 1, false}}, nullptr).ok());
  EXPECT_EQ(a.position(), 6);
}

TEST(ForwardBatch, ErrorsLeaveEveryCacheUnchanged) {
  ModelConfig config = Config("llama");
  auto model = MakeModel(config, DType::kF32);
  ASSERT_NE(model, nullptr);
  const int64_t V = config.vocab_size;
  KvCache a = model->NewCache(), b = model->NewCache(16);
  std::vector<int32_t> good = Tokens(4, V, 1);
  std::vector<int32_t> bad = {1, 2, static_cast<int32_t>(V)};
  std::vector<float> logits(2 * V);

  absl::Status s = model->ForwardBatch({{&a, good.data(), 4}, {&b, bad.data(), 3}}, logits.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("slot 1"));

  s = model->ForwardBatch({{&a, good.data(), 4}, {&a, good.data(), 1}}, logits.data());
  EXPECT_THAT(std::string(s.message()), HasSubstr("share one KV cache"));

  std::vector<int32_t> long_seq = Tokens(17, V, 3);
  s = model->ForwardBatch({{&a, good.data(), 4}, {&b, long_seq.data(), 17}}, logits.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("overflow"));

  s = model->ForwardBatch({{&a, good.data(), 0}}, logits.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = model->ForwardBatch({{nullptr, good.data(), 1}}, logits.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = model->ForwardBatch({{&a, good.data(), 1, true}}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(a.position(), 0);
  EXPECT_EQ(b.position(), 0);
  // An empty batch does nothing.
  EXPECT_TRUE(model->ForwardBatch({}, nullptr).ok());
}

}  // namespace
}  // namespace retort
