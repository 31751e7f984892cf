#include "model/transformer.h"

#include <cmath>
#include <filesystem>

#include "core/convert.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/init.h"

namespace retort {
namespace {

using ::testing::HasSubstr;

const std::string kFixtures = "tests/reference/models/";

struct Expected {
  std::vector<int32_t> tokens;
  std::vector<float> logits;
};

Expected ReadExpected(const std::string& model, const std::string& suffix = "") {
  auto r = SafetensorsReader::Open(kFixtures + model + "/expected.safetensors");
  EXPECT_TRUE(r.ok()) << r.status();
  Expected e;
  auto tokens = (*r)->Get("tokens" + suffix);
  auto logits = (*r)->Get("logits" + suffix);
  EXPECT_TRUE(tokens.ok() && logits.ok());
  e.tokens.assign(tokens->data<int32_t>(), tokens->data<int32_t>() + tokens->numel());
  e.logits.assign(logits->data<float>(), logits->data<float>() + logits->numel());
  return e;
}

std::unique_ptr<Transformer> LoadFixture(const std::string& model) {
  auto m = Transformer::Load(kFixtures + model);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

class FixtureLogitsTest : public ::testing::TestWithParam<std::string> {};

// The acceptance criterion: logits equal transformers' within 1e-4 (f32).
TEST_P(FixtureLogitsTest, MatchesTransformers) {
  auto model = LoadFixture(GetParam());
  ASSERT_NE(model, nullptr);
  Expected e = ReadExpected(GetParam());
  auto logits = model->Logits(e.tokens);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LT(MaxAbsDiff(*logits, e.logits), 1e-4) << GetParam();
}

// Prefill in one call == token-by-token decode through the KV cache ==
// uneven chunks; kLast equals the last row of kAll.
TEST_P(FixtureLogitsTest, PrefillEqualsIncrementalDecode) {
  auto model = LoadFixture(GetParam());
  ASSERT_NE(model, nullptr);
  Expected e = ReadExpected(GetParam());
  const int64_t n = e.tokens.size(), vocab = model->config().vocab_size;
  std::vector<float> prefill(n * vocab);
  KvCache c1 = model->NewCache();
  ASSERT_TRUE(model->Forward(e.tokens.data(), n, c1, prefill.data(), LogitsMode::kAll).ok());
  EXPECT_EQ(c1.position(), n);

  std::vector<float> decode(n * vocab);
  KvCache c2 = model->NewCache();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(
        model->Forward(&e.tokens[i], 1, c2, decode.data() + i * vocab, LogitsMode::kLast).ok());
  }
  EXPECT_LT(MaxAbsDiff(prefill, decode), 2e-5);
  EXPECT_LT(MaxAbsDiff(decode, e.logits), 1e-4);

  std::vector<float> chunked(n * vocab);
  KvCache c3 = model->NewCache();
  ASSERT_TRUE(model->Forward(e.tokens.data(), 5, c3, chunked.data(), LogitsMode::kAll).ok());
  ASSERT_TRUE(
      model->Forward(e.tokens.data() + 5, n - 5, c3, chunked.data() + 5 * vocab, LogitsMode::kAll)
          .ok());
  EXPECT_LT(MaxAbsDiff(prefill, chunked), 2e-5);

  std::vector<float> last(vocab);
  KvCache c4 = model->NewCache();
  ASSERT_TRUE(model->Forward(e.tokens.data(), n, c4, last.data(), LogitsMode::kLast).ok());
  std::vector<float> last_row(prefill.end() - vocab, prefill.end());
  EXPECT_LT(MaxAbsDiff(last, last_row), 1e-5);  // GEMV vs GEMM summation order
}

INSTANTIATE_TEST_SUITE_P(Families, FixtureLogitsTest,
                         ::testing::Values("llama", "qwen2", "qwen3", "mistral", "llama_bf16",
                                           "qwen2_f16"));

TEST(TransformerTest, LlamaLongSequenceWithLlama3Rope) {
  auto model = LoadFixture("llama");
  ASSERT_NE(model, nullptr);
  Expected e = ReadExpected("llama", "_1");
  ASSERT_EQ(e.tokens.size(), 80u);
  auto logits = model->Logits(e.tokens);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LT(MaxAbsDiff(*logits, e.logits), 1e-4);
}

// bf16/f16 weights are used as stored: no f32 copy of the matrices.
TEST(TransformerTest, KeepsStoredDTypeWithoutCopies) {
  for (auto [name, dtype] :
       {std::pair<std::string, DType>{"llama_bf16", DType::kBF16}, {"qwen2_f16", DType::kF16}}) {
    auto dir = HfDirectory::Open(kFixtures + name);
    ASSERT_TRUE(dir.ok()) << dir.status();
    auto model = Transformer::Load(**dir);
    ASSERT_TRUE(model.ok()) << model.status();
    for (const auto& [tname, t] : (*model)->NamedWeights()) {
      EXPECT_EQ(t.dtype(), dtype) << tname;
      // Same bytes as the mapping: a view, not a copy.
      auto direct = (*dir)->Get(tname);
      ASSERT_TRUE(direct.ok());
      EXPECT_EQ(t.raw(), direct->raw()) << tname;
    }
    EXPECT_EQ((*model)->WeightBytes(),
              static_cast<size_t>((*model)->config().ParameterCount()) * 2);
  }
}

TEST(TransformerTest, TiedEmbeddingsAreNotSavedTwice) {
  auto model = LoadFixture("qwen2");
  ASSERT_NE(model, nullptr);
  for (const auto& [name, t] : model->NamedWeights()) EXPECT_NE(name, "lm_head.weight");
  EXPECT_EQ(static_cast<int64_t>(model->WeightBytes()), model->config().ParameterCount() * 4);
}

TEST(TransformerTest, FromNamedWeightsRebuildsTheSameModel) {
  auto model = LoadFixture("qwen3");
  ASSERT_NE(model, nullptr);
  auto copy = Transformer::FromNamedWeights(model->config(), model->NamedWeights());
  ASSERT_TRUE(copy.ok()) << copy.status();
  Expected e = ReadExpected("qwen3");
  EXPECT_EQ(*model->Logits(e.tokens), *(*copy)->Logits(e.tokens));

  auto weights = model->NamedWeights();
  weights.erase(weights.begin() + 3);
  auto missing = Transformer::FromNamedWeights(model->config(), weights, "pruned");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("pruned: missing tensor"));
}

// Prefill longer than one internal chunk (and than the cache's first
// allocation) equals decoding the tail token by token.
TEST(TransformerTest, LongPrefillAcrossChunksAndCacheGrowth) {
  auto config = PresetConfig("mistral", "tiny");
  ASSERT_TRUE(config.ok());
  config->sliding_window = 300;
  config->sliding_layers = {true, false};
  auto model = Transformer::RandomInit(*config, 5, DType::kBF16);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t n = Transformer::kPrefillChunk + 100, vocab = config->vocab_size;
  std::vector<int32_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>((i * 7919) % vocab);
  std::vector<float> all(n * vocab);
  KvCache cache = (*model)->NewCache();
  ASSERT_TRUE((*model)->Forward(tokens.data(), n, cache, all.data(), LogitsMode::kAll).ok());

  KvCache inc = (*model)->NewCache();
  const int64_t head = n - 4;
  ASSERT_TRUE((*model)->Forward(tokens.data(), head, inc, nullptr, LogitsMode::kNone).ok());
  std::vector<float> row(vocab);
  for (int64_t i = head; i < n; ++i) {
    ASSERT_TRUE((*model)->Forward(&tokens[i], 1, inc, row.data()).ok());
    std::vector<float> expected(all.begin() + i * vocab, all.begin() + (i + 1) * vocab);
    EXPECT_LT(MaxAbsDiff(row, expected), 2e-5) << i;
  }
  // Rewinding and re-running the last token gives the same logits.
  ASSERT_TRUE(inc.Truncate(n - 1).ok());
  ASSERT_TRUE((*model)->Forward(&tokens[n - 1], 1, inc, row.data()).ok());
  EXPECT_LT(MaxAbsDiff(row, std::vector<float>(all.end() - vocab, all.end())), 2e-5);
}

TEST(TransformerTest, RejectsBadTokensAndFullCache) {
  auto model = LoadFixture("llama");
  ASSERT_NE(model, nullptr);
  std::vector<float> logits(320);
  KvCache cache = model->NewCache(4);
  int32_t ok_tokens[3] = {1, 2, 3};
  ASSERT_TRUE(model->Forward(ok_tokens, 3, cache, logits.data()).ok());
  int32_t bad[2] = {5, 320};
  auto st = model->Forward(bad, 2, cache, logits.data());
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("token id 320"));
  EXPECT_EQ(cache.position(), 3);  // unchanged
  int32_t neg = -1;
  EXPECT_FALSE(model->Forward(&neg, 1, cache, logits.data()).ok());
  st = model->Forward(ok_tokens, 2, cache, logits.data());
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("KV cache full"));
  EXPECT_EQ(cache.position(), 3);
  EXPECT_TRUE(model->Forward(ok_tokens, 1, cache, logits.data()).ok());
}

class BrokenDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/retort_broken_model_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    auto model = LoadFixture("llama");
    ASSERT_NE(model, nullptr);
    weights_ = model->NamedWeights();
    config_ = model->config().ToJson();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string LoadError() {
    auto m = Transformer::Load(dir_);
    EXPECT_FALSE(m.ok());
    std::string msg(m.status().message());
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }

  std::string dir_;
  std::vector<std::pair<std::string, Tensor>> weights_;
  nlohmann::json config_;
};

TEST_F(BrokenDirTest, MissingTensorNamesFileAndTensor) {
  std::erase_if(weights_,
                [](const auto& p) { return p.first == "model.layers.1.mlp.up_proj.weight"; });
  ASSERT_TRUE(WriteHfDirectory(dir_, config_, weights_).ok());
  std::string msg = LoadError();
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
  EXPECT_THAT(msg, HasSubstr("missing tensor model.layers.1.mlp.up_proj.weight"));
}

TEST_F(BrokenDirTest, MisShapedTensorNamesFileTensorAndShapes) {
  for (auto& [name, t] : weights_) {
    if (name == "model.layers.0.self_attn.k_proj.weight") t = Tensor::Zeros(DType::kF32, {16, 64});
  }
  ASSERT_TRUE(WriteHfDirectory(dir_, config_, weights_).ok());
  std::string msg = LoadError();
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
  EXPECT_THAT(msg, HasSubstr("model.layers.0.self_attn.k_proj.weight"));
  EXPECT_THAT(msg, HasSubstr("[16, 64]"));
  EXPECT_THAT(msg, HasSubstr("[32, 64]"));
}

TEST_F(BrokenDirTest, UnsupportedDTypeNamesTensor) {
  for (auto& [name, t] : weights_) {
    if (name == "model.norm.weight") t = Tensor::Zeros(DType::kI32, {64});
  }
  ASSERT_TRUE(WriteHfDirectory(dir_, config_, weights_).ok());
  std::string msg = LoadError();
  EXPECT_THAT(msg, HasSubstr("model.norm.weight has dtype I32"));
}

TEST_F(BrokenDirTest, UnknownArchitectureNamesConfigJson) {
  config_["architectures"] = {"FalconForCausalLM"};
  ASSERT_TRUE(WriteHfDirectory(dir_, config_, weights_).ok());
  std::string msg = LoadError();
  EXPECT_THAT(msg, HasSubstr("config.json"));
  EXPECT_THAT(msg, HasSubstr("FalconForCausalLM"));
}

// Work is split by output rows and heads, never by the reduction axis, so
// the logits do not depend on the thread count.
TEST(TransformerTest, SameLogitsOnOneAndTwoThreads) {
  auto model = LoadFixture("qwen2_f16");
  ASSERT_NE(model, nullptr);
  std::vector<int32_t> tokens(40);
  for (int i = 0; i < 40; ++i) tokens[i] = (i * 37) % 320;
  SetNumThreads(1);
  auto one = model->Logits(tokens);
  SetNumThreads(2);
  auto two = model->Logits(tokens);
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_EQ(*one, *two);
}

TEST(TransformerTest, LinearShapesAndBiases) {
  auto preset = PresetConfig("llama", "tiny");  // hidden 64, I 128, 4 heads, 2 kv, head_dim 16
  ASSERT_TRUE(preset.ok());
  ModelConfig& c = *preset;
  EXPECT_EQ(LinearShape(c, LinearSlot::kQ), (Shape{64, 64}));
  EXPECT_EQ(LinearShape(c, LinearSlot::kK), (Shape{32, 64}));
  EXPECT_EQ(LinearShape(c, LinearSlot::kV), (Shape{32, 64}));
  EXPECT_EQ(LinearShape(c, LinearSlot::kO), (Shape{64, 64}));
  EXPECT_EQ(LinearShape(c, LinearSlot::kGate), (Shape{128, 64}));
  EXPECT_EQ(LinearShape(c, LinearSlot::kUp), (Shape{128, 64}));
  EXPECT_EQ(LinearShape(c, LinearSlot::kDown), (Shape{64, 128}));
  EXPECT_EQ(LinearBiasName(3, LinearSlot::kGate), "model.layers.3.mlp.gate_proj.bias");
  for (LinearSlot s : kLinearSlots) EXPECT_FALSE(LinearHasBias(c, s)) << LinearSlotName(s);
  c.attention_bias = true;
  EXPECT_TRUE(LinearHasBias(c, LinearSlot::kV));
  EXPECT_FALSE(LinearHasBias(c, LinearSlot::kO));
  EXPECT_FALSE(LinearHasBias(c, LinearSlot::kUp));
  c.attention_out_bias = true;
  c.mlp_bias = true;
  for (LinearSlot s : kLinearSlots) EXPECT_TRUE(LinearHasBias(c, s)) << LinearSlotName(s);

  c.mlp_bias = false;
  std::vector<std::string> names;
  for (const LinearTensor& t : LinearTensors(c, 2, {LinearSlot::kQ, LinearSlot::kO})) {
    names.push_back(t.name);
    EXPECT_EQ(t.shape, t.is_bias ? Shape{LinearShape(c, t.slot)[0]} : LinearShape(c, t.slot));
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{
                "model.layers.2.self_attn.q_proj.weight", "model.layers.2.self_attn.o_proj.weight",
                "model.layers.2.self_attn.q_proj.bias", "model.layers.2.self_attn.o_proj.bias"}));
  EXPECT_EQ(LinearTensors(c, 0, {LinearSlot::kUp, LinearSlot::kDown}).size(), 2u);
}

TEST(TransformerTest, LayerWeightsInLoadOrderWithEveryBias) {
  auto config = PresetConfig("qwen3", "tiny");
  ASSERT_TRUE(config.ok());
  config->attention_bias = config->attention_out_bias = config->mlp_bias = true;
  auto model = Transformer::RandomInit(*config, 1, DType::kF32);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<std::string> want = {
      "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
      "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.bias",
      "self_attn.k_proj.bias",   "self_attn.v_proj.bias",   "self_attn.o_proj.bias",
      "self_attn.q_norm.weight", "self_attn.k_norm.weight", "post_attention_layernorm.weight",
      "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight",
      "mlp.gate_proj.bias",      "mlp.up_proj.bias",        "mlp.down_proj.bias"};
  std::vector<std::string> layer0;
  for (const auto& [name, t] : (*model)->NamedWeights()) {
    const std::string prefix = "model.layers.0.";
    if (name.rfind(prefix, 0) != 0) continue;
    layer0.push_back(name.substr(prefix.size()));
    const std::string base = name.substr(0, name.rfind('.'));
    for (LinearSlot s : kLinearSlots) {
      if (base == prefix + LinearSlotName(s)) {
        const Shape shape = LinearShape(*config, s);
        EXPECT_EQ(t.shape(), name.ends_with(".bias") ? Shape{shape[0]} : shape) << name;
      }
    }
  }
  EXPECT_EQ(layer0, want);
}

TEST(RandomInitTest, DeterministicPerSeedAndDType) {
  auto config = PresetConfig("qwen2", "tiny");
  ASSERT_TRUE(config.ok());
  auto a = Transformer::RandomInit(*config, 42, DType::kBF16);
  auto b = Transformer::RandomInit(*config, 42, DType::kBF16);
  auto c = Transformer::RandomInit(*config, 43, DType::kBF16);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const auto& wa = (*a)->NamedWeights();
  const auto& wb = (*b)->NamedWeights();
  const auto& wc = (*c)->NamedWeights();
  ASSERT_EQ(wa.size(), wb.size());
  bool any_diff = false;
  for (size_t i = 0; i < wa.size(); ++i) {
    EXPECT_EQ(wa[i].first, wb[i].first);
    EXPECT_EQ(wa[i].second.dtype(), DType::kBF16);
    EXPECT_EQ(0, std::memcmp(wa[i].second.raw(), wb[i].second.raw(), wa[i].second.nbytes()))
        << wa[i].first;
    any_diff |= std::memcmp(wa[i].second.raw(), wc[i].second.raw(), wa[i].second.nbytes()) != 0;
  }
  EXPECT_TRUE(any_diff);
  EXPECT_EQ((*a)->config().torch_dtype, DType::kBF16);
  // Matrices ~ N(0, 0.02).
  const Tensor& emb = wa[0].second;
  ASSERT_EQ(wa[0].first, "model.embed_tokens.weight");
  std::vector<float> v(emb.numel());
  ConvertToF32(DType::kBF16, emb.raw(), v.data(), emb.numel());
  double sum = 0, sq = 0;
  for (float x : v) {
    sum += x;
    sq += double(x) * x;
  }
  EXPECT_NEAR(sum / v.size(), 0.0, 1e-3);
  EXPECT_NEAR(std::sqrt(sq / v.size()), 0.02, 1e-3);
  EXPECT_FALSE(Transformer::RandomInit(*config, 1, DType::kI8).ok());
}

}  // namespace
}  // namespace retort
