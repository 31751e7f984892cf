#include "model/train_model.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "core/convert.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/transformer.h"

namespace retort {
namespace {

using ::testing::HasSubstr;

// ||a - b|| / ||b|| in f64 (b all zero: ||a||).
double RelError(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

template <typename T>
std::vector<T> Read(const SafetensorsReader& r, const std::string& name) {
  auto t = r.Get(name);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return {};
  return std::vector<T>(t->data<T>(), t->data<T>() + t->numel());
}

// Sum-reduced next-token cross-entropy of logits = hidden · lm_head^T (in
// f64), for the rows with a target (-100: none). Adds d loss / d lm_head into
// `dlm_head` and writes d loss / d hidden. Returns the loss.
double CrossEntropy(const float* hidden, const float* lm_head, const std::vector<int32_t>& targets,
                    int64_t vocab, int64_t dim, float* dhidden, float* dlm_head) {
  const int64_t n = static_cast<int64_t>(targets.size());
  double loss = 0;
  std::vector<double> logits(vocab), dh(dim);
  for (int64_t i = 0; i < n; ++i) {
    float* dhi = dhidden + i * dim;
    std::fill(dhi, dhi + dim, 0.f);
    if (targets[i] < 0) continue;
    const float* h = hidden + i * dim;
    double max = -1e300;
    for (int64_t v = 0; v < vocab; ++v) {
      double s = 0;
      for (int64_t d = 0; d < dim; ++d) s += static_cast<double>(h[d]) * lm_head[v * dim + d];
      logits[v] = s;
      max = std::max(max, s);
    }
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(logits[v] - max);
    loss += max + std::log(sum) - logits[targets[i]];
    std::fill(dh.begin(), dh.end(), 0.0);
    for (int64_t v = 0; v < vocab; ++v) {
      const double g = std::exp(logits[v] - max) / sum - (v == targets[i] ? 1.0 : 0.0);
      for (int64_t d = 0; d < dim; ++d) {
        dh[d] += g * lm_head[v * dim + d];
        dlm_head[v * dim + d] += static_cast<float>(g * h[d]);
      }
    }
    for (int64_t d = 0; d < dim; ++d) dhi[d] = static_cast<float>(dh[d]);
  }
  return loss;
}

// ---- 1. gradients against transformers ------------------------------------

class GradFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GradFixtureTest, MatchesTransformers) {
  const std::string name = GetParam();
  auto inference = Transformer::Load("tests/reference/models/" + name);
  ASSERT_TRUE(inference.ok()) << inference.status();
  auto model_or = TrainModel::FromTransformer(**inference);
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  TrainModel& model = **model_or;
  const ModelConfig& c = model.config();

  auto reader = SafetensorsReader::Open("tests/reference/grads/" + name + ".safetensors");
  ASSERT_TRUE(reader.ok()) << reader.status();
  const SafetensorsReader& r = **reader;
  const auto tokens = Read<int32_t>(r, "tokens");
  const auto positions = Read<int32_t>(r, "positions");
  const auto doc_start = Read<int32_t>(r, "doc_start");
  const auto targets = Read<int32_t>(r, "targets");
  const auto ref_hidden = Read<float>(r, "hidden");
  const auto ref_dhidden = Read<float>(r, "dhidden");
  const float ref_loss = Read<float>(r, "loss").at(0);
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t H = c.hidden_size;

  std::vector<float> hidden(n * H), dhidden(n * H);
  ASSERT_TRUE(
      model.Forward(tokens.data(), positions.data(), doc_start.data(), n, hidden.data()).ok());
  const double hidden_err = RelError(hidden.data(), ref_hidden.data(), n * H);
  EXPECT_LT(hidden_err, 1e-4) << name << " hidden states";

  const double loss = CrossEntropy(hidden.data(), model.lm_head(), targets, c.vocab_size, H,
                                   dhidden.data(), model.lm_head_grad());
  EXPECT_NEAR(loss, ref_loss, 1e-4 * std::abs(ref_loss)) << name;
  EXPECT_LT(RelError(dhidden.data(), ref_dhidden.data(), n * H), 1e-4) << name << " dhidden";
  ASSERT_TRUE(model.Backward(dhidden.data()).ok());

  double max_err = 0;
  std::string worst;
  std::set<std::string> compared;
  for (const TrainModel::Parameter& p : model.parameters()) {
    const std::string key = "grad." + p.name;
    ASSERT_TRUE(r.Has(key)) << name << ": fixture lacks " << key;
    const auto ref = Read<float>(r, key);
    ASSERT_EQ(static_cast<int64_t>(ref.size()), p.size) << key;
    const double err = RelError(p.grad, ref.data(), p.size);
    EXPECT_LT(err, 1e-4) << name << " " << p.name;
    if (err > max_err) max_err = err, worst = p.name;
    compared.insert(key);
  }
  // Every parameter transformers has was compared (no missing op).
  for (const SafetensorsEntry& e : r.entries()) {
    if (e.name.rfind("grad.", 0) == 0) {
      EXPECT_TRUE(compared.count(e.name)) << e.name;
    }
  }
  std::printf("[%s] hidden rel err %.3g, max grad rel err %.3g (%s)\n", name.c_str(), hidden_err,
              max_err, worst.c_str());
}

INSTANTIATE_TEST_SUITE_P(Families, GradFixtureTest,
                         ::testing::Values("llama", "qwen2", "qwen3", "mistral"));

// ---- tiny random models ------------------------------------------------------

// Every option on: GQA, q/k/v/o and MLP biases, Qwen3 q/k norm, head_dim !=
// hidden / heads, sliding window on layer 1, llama3 rope scaling.
ModelConfig TinyConfig(bool tied) {
  ModelConfig c;
  c.arch = Arch::kQwen3;
  c.architecture_name = "Qwen3ForCausalLM";
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 6;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000;
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 4;
  c.rope_scaling.original_max_position_embeddings = 16;
  c.tie_word_embeddings = tied;
  c.attention_bias = true;
  c.attention_out_bias = true;
  c.mlp_bias = true;
  c.qk_norm = true;
  c.sliding_window = 4;
  c.sliding_layers = {false, true};
  return c;
}

// Random model with non-trivial norms and biases (the default init leaves
// them 1 and 0, which would hide a missing term).
std::unique_ptr<TrainModel> RandomModel(bool tied, uint64_t seed) {
  auto m = TrainModel::RandomInit(TinyConfig(tied), seed);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (TrainModel::Parameter& p : (*m)->parameters()) {
    const bool norm = p.name.find("norm.weight") != std::string::npos;
    const bool bias = p.name.find(".bias") != std::string::npos;
    for (int64_t i = 0; i < p.size; ++i)
      p.value[i] = norm ? 1.f + 0.2f * normal(rng) : (bias ? 0.3f : 0.25f) * normal(rng);
  }
  return std::move(*m);
}

struct Batch {
  std::vector<int32_t> tokens, positions, doc_start;
  int64_t n() const { return static_cast<int64_t>(tokens.size()); }
};

Batch Packed(const std::vector<int64_t>& lengths, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Batch b;
  for (int64_t len : lengths) {
    const int32_t start = static_cast<int32_t>(b.tokens.size());
    for (int64_t i = 0; i < len; ++i) {
      b.tokens.push_back(static_cast<int32_t>(rng() % vocab));
      b.positions.push_back(static_cast<int32_t>(i));
      b.doc_start.push_back(start);
    }
  }
  return b;
}

std::vector<float> RandomVector(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// ---- 2. finite differences ---------------------------------------------------

// Loss = sum(hidden * R) + cross-entropy through the LM head, in f64 from the
// f32 forward.
double Loss(TrainModel& model, const Batch& b, const std::vector<float>& r,
            const std::vector<int32_t>& targets, std::vector<float>* dhidden) {
  const int64_t H = model.config().hidden_size, n = b.n();
  std::vector<float> hidden(n * H), dh(n * H);
  EXPECT_TRUE(
      model.Forward(b.tokens.data(), b.positions.data(), b.doc_start.data(), n, hidden.data())
          .ok());
  std::vector<float> dlm(model.config().vocab_size * H, 0.f);
  double loss = CrossEntropy(hidden.data(), model.lm_head(), targets, model.config().vocab_size, H,
                             dh.data(), dhidden ? model.lm_head_grad() : dlm.data());
  for (int64_t i = 0; i < n * H; ++i) {
    loss += static_cast<double>(hidden[i]) * r[i];
    dh[i] += r[i];
  }
  if (dhidden) *dhidden = dh;
  return loss;
}

class FiniteDifferenceTest : public ::testing::TestWithParam<bool> {};

// For each parameter tensor, the directional derivative along a random unit
// direction equals the central difference of the loss.
TEST_P(FiniteDifferenceTest, DirectionalDerivatives) {
  const bool tied = GetParam();
  auto model = RandomModel(tied, 5);
  ASSERT_NE(model, nullptr);
  const Batch b = Packed({9, 6}, model->config().vocab_size, 17);
  const auto r = RandomVector(b.n() * model->config().hidden_size, 3);
  std::vector<int32_t> targets(b.n(), -100);
  for (int64_t i = 0; i + 1 < b.n(); ++i)
    if (b.doc_start[i + 1] == b.doc_start[i] && i % 3 != 0) targets[i] = b.tokens[i + 1];

  model->ZeroGrads();
  std::vector<float> dhidden;
  Loss(*model, b, r, targets, &dhidden);
  ASSERT_TRUE(model->Backward(dhidden.data()).ok());

  int64_t index = 0;
  double max_err = 0;
  for (TrainModel::Parameter& p : model->parameters()) {
    const auto u = RandomVector(p.size, 100 + index++);
    double norm = 0, analytic = 0;
    for (int64_t i = 0; i < p.size; ++i) norm += static_cast<double>(u[i]) * u[i];
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < p.size; ++i) analytic += p.grad[i] * (u[i] / norm);
    const std::vector<float> saved(p.value, p.value + p.size);
    auto loss_at = [&](double eps) {
      for (int64_t i = 0; i < p.size; ++i)
        p.value[i] = static_cast<float>(saved[i] + eps * u[i] / norm);
      return Loss(*model, b, r, targets, nullptr);
    };
    // Richardson-extrapolated central difference: O(eps^4) truncation.
    const double e = 1e-2;
    const double d1 = (loss_at(e) - loss_at(-e)) / (2 * e);
    const double d2 = (loss_at(2 * e) - loss_at(-2 * e)) / (4 * e);
    const double numeric = (4 * d1 - d2) / 3;
    std::copy(saved.begin(), saved.end(), p.value);
    const double tol = 2e-3 * std::max(1.0, std::abs(numeric));
    EXPECT_NEAR(analytic, numeric, tol) << p.name;
    max_err = std::max(max_err, std::abs(analytic - numeric) / std::max(1.0, std::abs(numeric)));
  }
  std::printf("[tied=%d] max directional-derivative error %.3g\n", tied, max_err);
}

INSTANTIATE_TEST_SUITE_P(TiedAndUntied, FiniteDifferenceTest, ::testing::Bool());

// ---- 3. packed == separate ---------------------------------------------------

// Documents long enough to span several attention blocks (64 queries, 256
// keys), the window of layer 1 (4) much shorter than them.
TEST(TrainModelTest, PackedEqualsSeparate) {
  auto model = RandomModel(/*tied=*/false, 9);
  ASSERT_NE(model, nullptr);
  const int64_t H = model->config().hidden_size;
  const std::vector<int64_t> lengths = {150, 7, 130};
  const Batch packed = Packed(lengths, model->config().vocab_size, 23);
  const auto dhidden = RandomVector(packed.n() * H, 4);

  std::vector<float> hidden(packed.n() * H);
  model->ZeroGrads();
  ASSERT_TRUE(model
                  ->Forward(packed.tokens.data(), packed.positions.data(), packed.doc_start.data(),
                            packed.n(), hidden.data())
                  .ok());
  ASSERT_TRUE(model->Backward(dhidden.data()).ok());
  const std::vector<float> packed_grads(model->grad_arena(),
                                        model->grad_arena() + model->num_parameters());

  model->ZeroGrads();
  std::vector<float> separate_hidden;
  int64_t begin = 0;
  for (int64_t len : lengths) {
    std::vector<int32_t> doc_start(len, 0);
    std::vector<float> h(len * H);
    ASSERT_TRUE(model
                    ->Forward(packed.tokens.data() + begin, packed.positions.data() + begin,
                              doc_start.data(), len, h.data())
                    .ok());
    ASSERT_TRUE(model->Backward(dhidden.data() + begin * H).ok());
    separate_hidden.insert(separate_hidden.end(), h.begin(), h.end());
    begin += len;
  }
  EXPECT_LT(RelError(hidden.data(), separate_hidden.data(), packed.n() * H), 1e-5);
  for (const TrainModel::Parameter& p : model->parameters()) {
    const int64_t off = p.grad - model->grad_arena();
    EXPECT_LT(RelError(packed_grads.data() + off, p.grad, p.size), 1e-5) << p.name;
  }
}

// Activation checkpointing recomputes each layer from its saved input with
// the same kernels: hidden states and gradients are bit-identical, with the
// activation arena much smaller; a forward-only model (a teacher) may
// release its gradients.
TEST(TrainModelTest, ActivationCheckpointingIsBitIdentical) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    auto model = RandomModel(tied, 13);
    ASSERT_NE(model, nullptr);
    const int64_t H = model->config().hidden_size;
    const Batch b = Packed({40, 9, 31}, model->config().vocab_size, 5);
    const auto dhidden = RandomVector(b.n() * H, 6);
    auto step = [&](std::vector<float>* hidden, std::vector<float>* grads) {
      hidden->assign(b.n() * H, 0.f);
      model->ZeroGrads();
      ASSERT_TRUE(model
                      ->Forward(b.tokens.data(), b.positions.data(), b.doc_start.data(), b.n(),
                                hidden->data())
                      .ok());
      ASSERT_TRUE(model->Backward(dhidden.data()).ok());
      grads->assign(model->grad_arena(), model->grad_arena() + model->num_parameters());
    };
    std::vector<float> h_full, g_full, h_ckpt, g_ckpt;
    const size_t full_bytes = model->ActivationBytes(b.n());
    step(&h_full, &g_full);
    model->SetActivationCheckpointing(true);
    EXPECT_TRUE(model->activation_checkpointing());
    EXPECT_LT(model->ActivationBytes(b.n()), full_bytes);
    step(&h_ckpt, &g_ckpt);
    EXPECT_EQ(h_ckpt, h_full);
    EXPECT_EQ(g_ckpt, g_full);
    // Twice in a row (the shared layer buffers are reused) and back again.
    step(&h_ckpt, &g_ckpt);
    EXPECT_EQ(g_ckpt, g_full);
    model->SetActivationCheckpointing(false);
    step(&h_full, &g_full);
    EXPECT_EQ(g_ckpt, g_full);

    model->ReleaseGradients();
    std::vector<float> hidden(b.n() * H);
    ASSERT_TRUE(
        model
            ->Forward(b.tokens.data(), b.positions.data(), b.doc_start.data(), b.n(), hidden.data())
            .ok());
    EXPECT_EQ(hidden, h_full);
    EXPECT_THAT(model->Backward(dhidden.data()).message(), HasSubstr("released"));
  }
}

// ---- 4. NamedWeights / ToTransformer -----------------------------------------

class RoundTripTest : public ::testing::TestWithParam<bool> {};

TEST_P(RoundTripTest, InferenceLogitsEqualTrainingForward) {
  const bool tied = GetParam();
  auto model = RandomModel(tied, 13);
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config();
  const int64_t H = c.hidden_size, V = c.vocab_size;
  const Batch b = Packed({12}, V, 29);
  std::vector<float> hidden(b.n() * H);
  ASSERT_TRUE(
      model->Forward(b.tokens.data(), b.positions.data(), b.doc_start.data(), b.n(), hidden.data())
          .ok());
  auto inference = model->ToTransformer();
  ASSERT_TRUE(inference.ok()) << inference.status();
  auto logits = (*inference)->Logits(b.tokens);
  ASSERT_TRUE(logits.ok()) << logits.status();
  std::vector<float> expected(b.n() * V);
  for (int64_t i = 0; i < b.n(); ++i) {
    for (int64_t v = 0; v < V; ++v) {
      double s = 0;
      for (int64_t d = 0; d < H; ++d)
        s += static_cast<double>(hidden[i * H + d]) * model->lm_head()[v * H + d];
      expected[i * V + v] = static_cast<float>(s);
    }
  }
  EXPECT_LT(RelError(logits->data(), expected.data(), b.n() * V), 1e-5);

  // Names: HF names, the tied lm_head omitted; BF16 rounded to nearest even.
  const auto bf16 = model->NamedWeights(DType::kBF16);
  bool has_lm_head = false;
  for (const auto& [name, t] : bf16) {
    has_lm_head |= name == "lm_head.weight";
    EXPECT_EQ(t.dtype(), DType::kBF16) << name;
  }
  EXPECT_EQ(has_lm_head, !tied);
  EXPECT_EQ(bf16.size(), model->parameters().size());
  const TrainModel::Parameter& first = model->parameters()[0];
  EXPECT_EQ(bf16[0].first, first.name);
  for (int64_t i = 0; i < first.size; ++i) {
    uint16_t expected_bits;
    ConvertFromF32(DType::kBF16, first.value + i, &expected_bits, 1);
    ASSERT_EQ(bf16[0].second.data<uint16_t>()[i], expected_bits);
  }
  // FromTransformer(ToTransformer()) gives the same parameters back.
  auto again = TrainModel::FromTransformer(**inference);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ((*again)->num_parameters(), model->num_parameters());
  for (int64_t i = 0; i < model->num_parameters(); ++i)
    ASSERT_EQ((*again)->param_arena()[i], model->param_arena()[i]) << i;
}

INSTANTIATE_TEST_SUITE_P(TiedAndUntied, RoundTripTest, ::testing::Bool());

// ---- layout, loading, errors -------------------------------------------------

TEST(TrainModelTest, ArenaLayoutAndDecayFlags) {
  auto model = RandomModel(/*tied=*/false, 1);
  ASSERT_NE(model, nullptr);
  int64_t offset = 0;
  for (const TrainModel::Parameter& p : model->parameters()) {
    EXPECT_EQ(p.value - model->param_arena(), offset) << p.name;
    EXPECT_EQ(p.grad - model->grad_arena(), offset) << p.name;
    EXPECT_EQ(p.size, NumElements(p.shape)) << p.name;
    const bool linear_weight =
        p.name.find("_proj.weight") != std::string::npos || p.name == "lm_head.weight";
    EXPECT_EQ(p.decay, linear_weight) << p.name;
    offset += p.size;
  }
  EXPECT_EQ(offset, model->num_parameters());
  EXPECT_EQ(offset, model->config().ParameterCount());
  EXPECT_EQ(model->lm_head(), model->parameters().back().value);

  auto tied = RandomModel(/*tied=*/true, 1);
  ASSERT_NE(tied, nullptr);
  EXPECT_EQ(tied->lm_head(), tied->parameters()[0].value);  // the embedding table
  EXPECT_EQ(tied->lm_head_grad(), tied->parameters()[0].grad);
  EXPECT_EQ(tied->num_parameters(), tied->config().ParameterCount());
  EXPECT_GT(model->ActivationBytes(64), model->ActivationBytes(32));
}

TEST(TrainModelTest, LayerParametersInArenaOrder) {
  auto model = RandomModel(/*tied=*/false, 1);
  ASSERT_NE(model, nullptr);
  // H 16, I 24, head_dim 6, q 4 x 6, kv 2 x 6.
  const std::vector<std::pair<std::string, Shape>> want = {
      {"input_layernorm.weight", {16}},
      {"self_attn.q_proj.weight", {24, 16}},
      {"self_attn.k_proj.weight", {12, 16}},
      {"self_attn.v_proj.weight", {12, 16}},
      {"self_attn.q_proj.bias", {24}},
      {"self_attn.k_proj.bias", {12}},
      {"self_attn.v_proj.bias", {12}},
      {"self_attn.o_proj.weight", {16, 24}},
      {"self_attn.o_proj.bias", {16}},
      {"self_attn.q_norm.weight", {6}},
      {"self_attn.k_norm.weight", {6}},
      {"post_attention_layernorm.weight", {16}},
      {"mlp.gate_proj.weight", {24, 16}},
      {"mlp.up_proj.weight", {24, 16}},
      {"mlp.down_proj.weight", {16, 24}},
      {"mlp.gate_proj.bias", {24}},
      {"mlp.up_proj.bias", {24}},
      {"mlp.down_proj.bias", {16}},
  };
  std::vector<std::pair<std::string, Shape>> layer1;
  for (const TrainModel::Parameter& p : model->parameters()) {
    const std::string prefix = "model.layers.1.";
    if (p.name.rfind(prefix, 0) == 0) layer1.emplace_back(p.name.substr(prefix.size()), p.shape);
  }
  EXPECT_EQ(layer1, want);
}

TEST(TrainModelTest, FromBf16TransformerWidensExactly) {
  auto inference = Transformer::Load("tests/reference/models/llama_bf16");
  ASSERT_TRUE(inference.ok()) << inference.status();
  auto model = TrainModel::FromTransformer(**inference);
  ASSERT_TRUE(model.ok()) << model.status();
  std::map<std::string, Tensor> stored((*inference)->NamedWeights().begin(),
                                       (*inference)->NamedWeights().end());
  for (const TrainModel::Parameter& p : (*model)->parameters()) {
    const Tensor& t = stored.at(p.name);
    ASSERT_EQ(t.dtype(), DType::kBF16);
    for (int64_t i = 0; i < p.size; ++i)
      ASSERT_EQ(p.value[i], BF16ToF32(t.data<uint16_t>()[i])) << p.name;
  }
}

// A ggml block weight (GGUF models) is dequantized: Q8_0 = f16 scale d and
// 32 int8 q per block, value d * q.
TEST(TrainModelTest, FromQ8_0WeightDequantizes) {
  auto inference = Transformer::Load("tests/reference/models/llama");
  ASSERT_TRUE(inference.ok()) << inference.status();
  std::vector<std::pair<std::string, Tensor>> weights = (*inference)->NamedWeights();
  const std::string target = "model.layers.0.mlp.up_proj.weight";  // [128, 64]
  Tensor q8 = Tensor::Zeros(DType::kQ8_0, {128, 64});
  auto* bytes = q8.mutable_data<uint8_t>();
  std::vector<float> expected(128 * 64);
  for (int64_t b = 0; b < 128 * 64 / 32; ++b) {
    uint8_t* block = bytes + b * 34;
    const uint16_t d = F32ToF16(0.001f * static_cast<float>(1 + b % 7));
    std::memcpy(block, &d, 2);
    for (int j = 0; j < 32; ++j) {
      const int8_t q = static_cast<int8_t>((b * 31 + j * 17) % 255 - 127);
      block[2 + j] = static_cast<uint8_t>(q);
      expected[b * 32 + j] = F16ToF32(d) * q;
    }
  }
  for (auto& [name, t] : weights)
    if (name == target) t = q8;
  auto quantized = Transformer::FromNamedWeights((*inference)->config(), weights);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  auto model = TrainModel::FromTransformer(**quantized);
  ASSERT_TRUE(model.ok()) << model.status();
  bool found = false;
  for (const TrainModel::Parameter& p : (*model)->parameters()) {
    if (p.name != target) continue;
    found = true;
    for (int64_t i = 0; i < p.size; ++i) ASSERT_EQ(p.value[i], expected[i]) << i;
  }
  EXPECT_TRUE(found);
}

TEST(TrainModelTest, Errors) {
  auto model = RandomModel(/*tied=*/true, 2);
  ASSERT_NE(model, nullptr);
  const int64_t H = model->config().hidden_size;
  std::vector<float> hidden(3 * H), dhidden(3 * H, 0.f);
  EXPECT_THAT(model->Backward(dhidden.data()).message(), HasSubstr("Forward"));

  std::vector<int32_t> tokens = {1, 40, 2}, positions = {0, 1, 2}, doc_start = {0, 0, 0};
  absl::Status s =
      model->Forward(tokens.data(), positions.data(), doc_start.data(), 3, hidden.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(s.message(), HasSubstr("token id 40"));
  tokens[1] = -1;
  EXPECT_THAT(
      model->Forward(tokens.data(), positions.data(), doc_start.data(), 3, hidden.data()).message(),
      HasSubstr("token id -1"));
  tokens[1] = 5;
  doc_start = {0, 0, 1};
  EXPECT_THAT(
      model->Forward(tokens.data(), positions.data(), doc_start.data(), 3, hidden.data()).message(),
      HasSubstr("doc_start[2]"));
  doc_start = {0, 0, 2};
  EXPECT_TRUE(
      model->Forward(tokens.data(), positions.data(), doc_start.data(), 3, hidden.data()).ok());
  EXPECT_TRUE(model->Backward(dhidden.data()).ok());
  EXPECT_FALSE(model->Backward(dhidden.data()).ok());  // one Backward per Forward
}

}  // namespace
}  // namespace retort
