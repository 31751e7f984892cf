// Layer-wise passes (Transformer::Embed/ForwardLayer, LayerwiseRunner),
// weight replacement and calibration samples.
#include "model/calibration.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/convert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "model/init.h"
#include "model/transformer.h"
#include "quantize/scheme.h"
#include "tests/fixture_util.h"

namespace retort {
namespace {

using ::testing::HasSubstr;
using testing_util::ReadOrDie;
using testing_util::Unzstd;

std::unique_ptr<Transformer> Tiny(const std::string& family, DType dtype = DType::kF32) {
  auto c = PresetConfig(family, "tiny");
  EXPECT_TRUE(c.ok()) << c.status();
  auto m = Transformer::RandomInit(*c, 11, dtype);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

std::vector<int32_t> Tokens(int64_t n, int64_t vocab, int seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 131 + seed * 977 + 5) % vocab);
  return t;
}

double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

// Logits from the hidden states after the last layer: final norm + lm_head.
std::vector<float> HeadLogits(const Transformer& m, const std::vector<float>& hidden) {
  const ModelConfig& c = m.config();
  const int64_t H = c.hidden_size, n = static_cast<int64_t>(hidden.size()) / H;
  const Tensor* norm = m.FindWeight("model.norm.weight");
  const Tensor* head =
      m.FindWeight(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  EXPECT_NE(norm, nullptr);
  EXPECT_NE(head, nullptr);
  std::vector<float> w(H), h(hidden.size()), logits(n * c.vocab_size);
  ConvertToF32(norm->dtype(), norm->raw(), w.data(), H);
  Backend& be = DefaultBackend();
  EXPECT_TRUE(
      be.RmsNorm(hidden.data(), n, H, w.data(), static_cast<float>(c.rms_norm_eps), h.data()).ok());
  absl::StatusOr<std::shared_ptr<const DeviceWeight>> dw =
      be.PrepareWeight(*head, WeightUse::kLinear);
  EXPECT_TRUE(dw.ok());
  EXPECT_TRUE(be.MatMul(h.data(), n, **dw, nullptr, logits.data()).ok());
  return logits;
}

class LayerwiseFamilies : public ::testing::TestWithParam<std::string> {};

// Embed + every ForwardLayer + head == Forward, for each family's quirks
// (qkv bias, q/k norm, sliding window).
TEST_P(LayerwiseFamilies, LayersComposeToForward) {
  auto model = Tiny(GetParam());
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = Tokens(37, c.vocab_size, 3);
  auto want = model->Logits(tokens);
  ASSERT_TRUE(want.ok()) << want.status();

  auto runner = LayerwiseRunner::Start(*model, {tokens});
  ASSERT_TRUE(runner.ok()) << runner.status();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    ASSERT_EQ(runner->layer(), l);
    auto cos = runner->Advance();
    ASSERT_TRUE(cos.ok()) << cos.status();
    EXPECT_GT(*cos, -1.0 - 1e-9);
    EXPECT_LT(*cos, 1.0 + 1e-9);
  }
  EXPECT_EQ(runner->layer(), c.num_layers);
  EXPECT_FALSE(runner->Advance().ok());
  EXPECT_LT(MaxRelDiff(HeadLogits(*model, runner->hidden(0)), *want), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Families, LayerwiseFamilies,
                         ::testing::Values("llama", "qwen2", "qwen3", "mistral"));

TEST(Layerwise, ObserverSeesEachLinearInputOnce) {
  auto model = Tiny("qwen2");
  const ModelConfig& c = model->config();
  auto runner =
      LayerwiseRunner::Start(*model, {Tokens(9, c.vocab_size, 1), Tokens(5, c.vocab_size, 2)});
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::map<LinearSlot, std::pair<int64_t, int64_t>> seen;  // rows summed, cols
  ASSERT_TRUE(runner
                  ->Observe([&](LinearSlot s, const float* x, int64_t rows, int64_t cols) {
                    ASSERT_NE(x, nullptr);
                    seen[s].first += rows;
                    seen[s].second = cols;
                  })
                  .ok());
  EXPECT_EQ(runner->layer(), 0);  // Observe does not advance
  ASSERT_EQ(seen.size(), 4u);
  const int64_t qdim = c.num_heads * c.head_dim;
  EXPECT_EQ(seen[LinearSlot::kQ], std::make_pair(int64_t{14}, c.hidden_size));
  EXPECT_EQ(seen[LinearSlot::kO], std::make_pair(int64_t{14}, qdim));
  EXPECT_EQ(seen[LinearSlot::kGate], std::make_pair(int64_t{14}, c.hidden_size));
  EXPECT_EQ(seen[LinearSlot::kDown], std::make_pair(int64_t{14}, c.intermediate_size));
  // Observe leaves the hidden states as they were: advancing twice from the
  // same start gives the same states.
  const std::vector<float> before = runner->hidden(1);
  ASSERT_TRUE(runner->Observe([](LinearSlot, const float*, int64_t, int64_t) {}).ok());
  EXPECT_EQ(runner->hidden(1), before);
}

TEST(Layerwise, ReplaceWeightTakesEffectAndChecksShape) {
  auto model = Tiny("llama");
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = Tokens(12, c.vocab_size, 5);
  const std::string name = LinearWeightName(1, LinearSlot::kDown);
  const Tensor* old = model->FindWeight(name);
  ASSERT_NE(old, nullptr);
  Tensor zeros = Tensor::Zeros(DType::kF32, old->shape());

  // The reference: a model built with the zero tensor in place.
  std::vector<std::pair<std::string, Tensor>> weights = model->NamedWeights();
  for (auto& [n, t] : weights) {
    if (n == name) t = zeros;
  }
  auto ref = Transformer::FromNamedWeights(c, weights);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto want = (*ref)->Logits(tokens);
  auto before = model->Logits(tokens);
  ASSERT_TRUE(model->ReplaceWeight(name, zeros).ok());
  auto got = model->Logits(tokens);
  ASSERT_TRUE(want.ok() && got.ok() && before.ok());
  EXPECT_EQ(*got, *want);
  EXPECT_NE(*got, *before);

  EXPECT_THAT(model->ReplaceWeight(name, Tensor::Zeros(DType::kF32, {3, 3})).message(),
              HasSubstr("shape"));
  EXPECT_THAT(model->ReplaceWeight("model.layers.9.nope.weight", zeros).message(),
              HasSubstr("no weight"));
}

// A quantized linear runs directly and computes what its dequantized copy does.
TEST(Layerwise, SetQuantizedWeightMatchesDequantizedModel) {
  auto model = Tiny("qwen3");
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = Tokens(20, c.vocab_size, 9);
  std::vector<std::pair<std::string, Tensor>> weights = model->NamedWeights();
  auto scheme = quant::ParseQuantScheme("int4-g32-asym");
  ASSERT_TRUE(scheme.ok());
  for (LinearSlot slot : {LinearSlot::kQ, LinearSlot::kDown}) {
    const std::string name = LinearWeightName(0, slot);
    const Tensor* w = model->FindWeight(name);
    ASSERT_NE(w, nullptr);
    auto q = quant::QuantizeRtn(w->data<float>(), w->dim(0), w->dim(1), *scheme, name);
    ASSERT_TRUE(q.ok()) << q.status();
    for (auto& [n, t] : weights) {
      if (n == name) t = Dequantize(*q);
    }
    ASSERT_TRUE(
        model->SetQuantizedWeight(name, std::make_shared<const QuantizedMatrix>(std::move(*q)))
            .ok());
    EXPECT_EQ(model->FindWeight(name), nullptr);
    EXPECT_EQ(model->QuantizedWeights().count(name), 1u);
  }
  auto ref = Transformer::FromNamedWeights(c, weights);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto want = (*ref)->Logits(tokens);
  auto got = model->Logits(tokens);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_LT(MaxRelDiff(*got, *want), 1e-4);
  // Still replaceable by a dense tensor.
  const std::string q0 = LinearWeightName(0, LinearSlot::kQ);
  ASSERT_TRUE(model->ReplaceWeight(q0, *(*ref)->FindWeight(q0)).ok());
  EXPECT_EQ(model->QuantizedWeights().count(q0), 0u);
  EXPECT_THAT(
      model->SetQuantizedWeight("model.norm.weight", std::make_shared<const QuantizedMatrix>())
          .message(),
      HasSubstr("not a linear"));
}

std::unique_ptr<Tokenizer> SmolTokenizer() {
  const std::string json =
      Unzstd(ReadOrDie("tests/reference/tokenizers/smollm2.tokenizer.json.zst"));
  auto t = Tokenizer::FromJsonString(json, "smollm2");
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

class CalibrationFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("retort_calib_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  std::filesystem::path dir_;
};

TEST_F(CalibrationFiles, TextIsCutIntoConsecutiveChunks) {
  auto tok = SmolTokenizer();
  const std::string text = ReadOrDie("tests/reference/tokenizers/corpus.txt");
  const std::string path = Write("a.txt", text);
  auto samples = LoadCalibrationSamples({path}, *tok, 49152, {.samples = 3, .seq_len = 24});
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 3u);
  const std::vector<int32_t> all = tok->Encode(text, false);
  const std::vector<int32_t> bos = tok->Encode("", true);
  const size_t body = 24 - bos.size();
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_EQ((*samples)[i].size(), 24u);
    std::vector<int32_t> want = bos;
    want.insert(want.end(), all.begin() + i * body, all.begin() + (i + 1) * body);
    EXPECT_EQ((*samples)[i], want) << i;
  }
  EXPECT_EQ(CountTokens(*samples), 72);

  auto too_long = LoadCalibrationSamples({path}, *tok, 49152, {.samples = 1, .seq_len = 1 << 20});
  EXPECT_THAT(too_long.status().message(), HasSubstr("fewer than one sample"));
  EXPECT_FALSE(LoadCalibrationSamples({}, *tok, 49152, {}).ok());
  EXPECT_FALSE(LoadCalibrationSamples({(dir_ / "missing.txt").string()}, *tok, 49152, {}).ok());
}

TEST_F(CalibrationFiles, JsonlRecordsAreSamples) {
  auto tok = SmolTokenizer();
  const std::string path = Write(
      "t.jsonl",
      R"({"messages":[{"role":"user","content":"What is two plus three? Please answer with care and show the steps."},{"role":"assistant","content":"Two plus three is five, because counting three on from two gives five."}]})"
      "\n"
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]})"
      "\n");
  auto samples = LoadCalibrationSamples({path}, *tok, 49152, {.samples = 10, .seq_len = 8});
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 1u);  // the second record is too short
  EXPECT_EQ((*samples)[0].size(), 8u);
}

}  // namespace
}  // namespace retort
