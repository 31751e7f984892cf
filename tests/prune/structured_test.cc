// prune/structured: pruned tiny models equal transformers' logits for the
// same slicing (tests/reference/prune/structured_*), importance aggregation
// against plain loops, GQA-aware plans, the target_params rule, a bf16
// random model round trip through FromNamedWeights and config.json, and every
// error named in the header.
#include "prune/structured.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "formats/hf_dir.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/init.h"
#include "model/transformer.h"

namespace retort::prune {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<int64_t> I64(const SafetensorsReader& r, const std::string& name) {
  auto t = r.Get(name);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return {};
  return std::vector<int64_t>(t->data<int64_t>(), t->data<int64_t>() + t->numel());
}

void ExpectPrunedMatchesTransformers(const std::string& name, const std::string& source) {
  SCOPED_TRACE(name);
  auto model = Transformer::Load("tests/reference/models/" + source);
  ASSERT_TRUE(model.ok()) << model.status();
  auto reader =
      SafetensorsReader::Open("tests/reference/prune/structured_" + name + "/expected.safetensors");
  ASSERT_TRUE(reader.ok()) << reader.status();
  const SafetensorsReader& r = **reader;
  StructuredPlan plan;
  plan.layers = I64(r, "layers");
  plan.hidden = I64(r, "hidden");
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    plan.heads.push_back(I64(r, "heads_" + std::to_string(i)));
    plan.kv_heads.push_back(I64(r, "kv_heads_" + std::to_string(i)));
    plan.mlp.push_back(I64(r, "mlp_" + std::to_string(i)));
  }
  const ModelConfig& config = (*model)->config();
  auto pruned = ApplyStructuredPlan(config, (*model)->NamedWeights(), plan);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  const auto& [new_config, weights] = *pruned;
  EXPECT_EQ(new_config.num_layers, static_cast<int64_t>(plan.layers.size()));
  EXPECT_EQ(new_config.hidden_size, static_cast<int64_t>(plan.hidden.size()));
  EXPECT_EQ(new_config.head_dim, config.head_dim);
  int64_t numel = 0;
  for (const auto& [n, t] : weights) numel += t.numel();
  EXPECT_EQ(numel, new_config.ParameterCount());

  // config.json round trip, then our engine on the pruned weights.
  auto reparsed = ModelConfig::FromJson(new_config.ToJson(), "pruned config.json");
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->head_dim, new_config.head_dim);
  EXPECT_EQ(reparsed->num_heads, new_config.num_heads);
  EXPECT_EQ(reparsed->num_kv_heads, new_config.num_kv_heads);
  auto small = Transformer::FromNamedWeights(*reparsed, weights, name);
  ASSERT_TRUE(small.ok()) << small.status();
  auto tokens = r.Get("tokens");
  auto expected = r.Get("logits");
  ASSERT_TRUE(tokens.ok() && expected.ok());
  std::vector<int32_t> ids(tokens->data<int32_t>(), tokens->data<int32_t>() + tokens->numel());
  auto logits = (*small)->Logits(ids);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(static_cast<int64_t>(logits->size()), expected->numel());
  float max_diff = 0;
  for (int64_t i = 0; i < expected->numel(); ++i) {
    max_diff = std::max(max_diff, std::fabs((*logits)[i] - expected->data<float>()[i]));
  }
  EXPECT_LT(max_diff, 1e-4f);
  std::printf("%s: max |logit - transformers| = %.3g\n", name.c_str(), max_diff);
}

TEST(StructuredFixtureTest, Qwen2HeadsPerGroupMlpHiddenTied) {
  ExpectPrunedMatchesTransformers("qwen2", "qwen2");
}
TEST(StructuredFixtureTest, Qwen3KvGroupLayerMlpHidden) {
  ExpectPrunedMatchesTransformers("qwen3", "qwen3");
}
TEST(StructuredFixtureTest, LlamaDepthAndOneHead) {
  ExpectPrunedMatchesTransformers("llama", "llama");
}

// ---------------------------------------------------------------------------
// Importance.

TEST(ImportanceTest, AggregationMatchesLoops) {
  const int64_t n = 5, heads = 3, hd = 4, width = heads * hd;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> a(n * width), b(n * width);
  for (float& v : a) v = normal(rng);
  for (float& v : b) v = normal(rng);

  // Two sequences: mean over tokens of |x|, L2 over sequences.
  std::vector<double> ch(width, 0.0);
  AccumulateChannelImportance(a.data(), n, width, ch.data());
  AccumulateChannelImportance(b.data(), 3, width, ch.data());  // a shorter sequence
  for (int64_t c = 0; c < width; ++c) {
    double ma = 0, mb = 0;
    for (int64_t t = 0; t < n; ++t) ma += std::fabs(a[t * width + c]);
    for (int64_t t = 0; t < 3; ++t) mb += std::fabs(b[t * width + c]);
    EXPECT_NEAR(ch[c], (ma / n) * (ma / n) + (mb / 3) * (mb / 3), 1e-12);
  }
  std::vector<double> hs(heads, 0.0);
  AccumulateHeadImportance(a.data(), n, heads, hd, hs.data());
  for (int64_t h = 0; h < heads; ++h) {
    double m = 0;
    for (int64_t t = 0; t < n; ++t) {
      double s = 0;
      for (int64_t d = 0; d < hd; ++d)
        s += static_cast<double>(a[t * width + h * hd + d]) * a[t * width + h * hd + d];
      m += std::sqrt(s);
    }
    EXPECT_NEAR(hs[h], (m / n) * (m / n), 1e-12);
  }
  double cos = 0;
  for (int64_t t = 0; t < n; ++t) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t c = 0; c < width; ++c) {
      ab += static_cast<double>(a[t * width + c]) * b[t * width + c];
      aa += static_cast<double>(a[t * width + c]) * a[t * width + c];
      bb += static_cast<double>(b[t * width + c]) * b[t * width + c];
    }
    cos += ab / std::sqrt(aa * bb);
  }
  EXPECT_NEAR(SumCosine(a.data(), b.data(), n, width), cos, 1e-12);
  EXPECT_NEAR(SumCosine(a.data(), a.data(), n, width), n, 1e-12);
}

ModelConfig TinyConfig(const std::string& family) {
  auto c = PresetConfig(family, "tiny");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(ImportanceTest, CollectorFeedsEveryPart) {
  ModelConfig config = TinyConfig("qwen2");  // 64 hidden, 2 layers, 4 heads / 2 kv, 128 MLP
  ImportanceCollector col(config);
  const int64_t n = 6;
  std::vector<float> attn(n * config.num_heads * config.head_dim, 1.0f);
  // Head 2 of layer 1 louder than the others.
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t d = 0; d < config.head_dim; ++d)
      attn[t * config.num_heads * config.head_dim + 2 * config.head_dim + d] = 3.0f;
  }
  std::vector<float> mlp(n * config.intermediate_size, -0.5f), hidden(n * config.hidden_size, 2.0f);
  mlp[7] = 100.0f;
  std::vector<float> out = hidden;
  for (int64_t i = 0; i < n * config.hidden_size; i += 2) out[i] = -2.0f;  // cos = 0 per token
  for (int seq = 0; seq < 2; ++seq) {
    ASSERT_TRUE(col.AddAttentionOutput(1, attn.data(), n).ok());
    ASSERT_TRUE(col.AddMlpActivation(0, mlp.data(), n).ok());
    ASSERT_TRUE(col.AddNormedHidden(hidden.data(), n).ok());
    ASSERT_TRUE(col.AddBlock(0, hidden.data(), hidden.data(), n).ok());
    ASSERT_TRUE(col.AddBlock(1, hidden.data(), out.data(), n).ok());
  }
  ModelImportance imp = col.Importance();
  ASSERT_EQ(imp.layers.size(), 2u);
  EXPECT_TRUE(imp.layers[0].head.empty());
  ASSERT_EQ(imp.layers[1].head.size(), 4u);
  const double unit = std::sqrt(2.0) * std::sqrt(static_cast<double>(config.head_dim));
  EXPECT_NEAR(imp.layers[1].head[0], unit, 1e-9);
  EXPECT_NEAR(imp.layers[1].head[2], 3 * unit, 1e-9);
  ASSERT_EQ(imp.layers[0].mlp.size(), 128u);
  EXPECT_NEAR(imp.layers[0].mlp[0], std::sqrt(2.0) * 0.5, 1e-12);
  EXPECT_NEAR(imp.layers[0].mlp[7], std::sqrt(2.0) * (100.0 + 5 * 0.5) / 6, 1e-12);
  EXPECT_NEAR(imp.layers[0].block_influence, 0.0, 1e-12);
  EXPECT_NEAR(imp.layers[1].block_influence, 1.0, 1e-12);
  ASSERT_EQ(imp.hidden.size(), 64u);
  EXPECT_NEAR(imp.hidden[3], std::sqrt(2.0) * 2.0, 1e-12);

  EXPECT_THAT(std::string(col.AddMlpActivation(2, mlp.data(), n).message()),
              HasSubstr("layer 2 outside [0, 2)"));
  EXPECT_FALSE(col.AddAttentionOutput(-1, attn.data(), n).ok());
  EXPECT_FALSE(col.AddNormedHidden(nullptr, 3).ok());
}

// ---------------------------------------------------------------------------
// Plans.

// Importance where the higher index is more important, except as set.
ModelImportance Ramp(const ModelConfig& c) {
  ModelImportance m;
  m.layers.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int64_t h = 0; h < c.num_heads; ++h) m.layers[l].head.push_back(static_cast<double>(h));
    for (int64_t i = 0; i < c.intermediate_size; ++i)
      m.layers[l].mlp.push_back(static_cast<double>(i));
    m.layers[l].block_influence = static_cast<double>(l);
  }
  for (int64_t i = 0; i < c.hidden_size; ++i) m.hidden.push_back(static_cast<double>(i));
  return m;
}

ModelConfig EightHeads() {
  ModelConfig c = TinyConfig("llama");
  c.num_heads = 8;  // 4 kv groups of 2
  c.num_kv_heads = 4;
  c.head_dim = 8;
  c.num_layers = 4;
  return c;
}

TEST(PlanTest, GqaHeadsGroupsAndChannels) {
  ModelConfig c = EightHeads();
  ModelImportance imp = Ramp(c);
  // Layer 1: group 0 (heads 0, 1) is the most important; inside group 2, head 4 beats 5.
  imp.layers[1].head = {50, 40, 1, 2, 9, 3, 4, 5};
  StructuredTarget t;
  t.num_heads = 4;  // num_kv_heads 0: keep all 4 groups, 1 query head each
  auto plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->kv_heads[0], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(plan->heads[0], ElementsAre(1, 3, 5, 7));
  EXPECT_THAT(plan->heads[1], ElementsAre(0, 3, 4, 7));

  t = StructuredTarget{};
  t.num_kv_heads = 2;  // whole groups: group size kept (2)
  plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->kv_heads[0], ElementsAre(2, 3));
  EXPECT_THAT(plan->heads[0], ElementsAre(4, 5, 6, 7));
  EXPECT_THAT(plan->kv_heads[1], ElementsAre(0, 2));  // 90 and 12 beat 3 and 9
  EXPECT_THAT(plan->heads[1], ElementsAre(0, 1, 4, 5));

  t = StructuredTarget{};
  t.num_layers = 2;
  t.intermediate_size = 3;
  t.hidden_size = 16;                  // a multiple of the 8 heads (LlamaConfig's rule)
  imp.layers[0].block_influence = 10;  // layer 0 matters most, then 3
  plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->layers, ElementsAre(0, 3));
  EXPECT_THAT(plan->mlp[1], ElementsAre(c.intermediate_size - 3, c.intermediate_size - 2,
                                        c.intermediate_size - 1));
  EXPECT_EQ(plan->hidden.size(), 16u);
  EXPECT_EQ(plan->hidden.front(), 48);
  auto pc = plan->PrunedConfig(c);
  ASSERT_TRUE(pc.ok());
  EXPECT_EQ(pc->num_layers, 2);
  EXPECT_EQ(pc->intermediate_size, 3);
  EXPECT_EQ(pc->hidden_size, 16);
  EXPECT_EQ(pc->head_dim, 8);
}

// transformers 5.x's LlamaConfig refuses hidden_size % num_attention_heads != 0
// even with head_dim given ("hidden size (320) is not a multiple of the number
// of attention heads (9)"): a Llama plan keeps to it, by rounding free widths
// and refusing explicit ones; Qwen2 has no such rule.
TEST(PlanTest, LlamaHiddenStaysAMultipleOfTheHeads) {
  ModelConfig c = TinyConfig("llama");
  c.hidden_size = 576;  // SmolLM2-135M's shape: 9 heads / 3 kv heads of 64
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = 64;
  c.intermediate_size = 1536;
  const int64_t full = c.ParameterCount();
  ModelImportance imp = Ramp(c);
  StructuredTarget t;
  t.target_params = full * 60 / 100;
  t.num_layers = c.num_layers;
  auto plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto pc = plan->PrunedConfig(c);
  ASSERT_TRUE(pc.ok()) << pc.status();
  EXPECT_LT(pc->hidden_size, 576);
  EXPECT_EQ(pc->hidden_size % 9, 0) << pc->hidden_size;
  EXPECT_EQ(pc->hidden_size % 8, 0) << pc->hidden_size;
  EXPECT_LE(pc->ParameterCount(), t.target_params);

  t = StructuredTarget{};
  t.hidden_size = 320;
  auto bad = PlanStructuredPruning(c, imp, t);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("hidden_size 320 is not a multiple of num_heads (9), which transformers' "
                        "LlamaConfig requires; use 315 or 324"));

  c.arch = Arch::kQwen2;
  EXPECT_TRUE(PlanStructuredPruning(c, Ramp(c), t).ok());
}

TEST(PlanTest, TargetParamsRule) {
  ModelConfig c = TinyConfig("llama");
  c.num_layers = 6;
  const int64_t full = c.ParameterCount();
  ModelImportance imp = Ramp(c);
  // A mild budget: width only.
  StructuredTarget t;
  t.target_params = full * 85 / 100;
  auto plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto pc = plan->PrunedConfig(c);
  ASSERT_TRUE(pc.ok());
  EXPECT_LE(pc->ParameterCount(), t.target_params);
  EXPECT_EQ(pc->num_layers, 6);
  EXPECT_LT(pc->hidden_size, 64);
  EXPECT_EQ(pc->hidden_size % 8, 0);
  EXPECT_EQ(pc->intermediate_size % 8, 0);
  // One step wider would not fit: the largest width of the rule was taken.
  ModelConfig wider = *pc;
  wider.hidden_size += 8;
  wider.intermediate_size += 8;
  EXPECT_GT(wider.ParameterCount(), t.target_params);

  // A hard budget: widths at 50% are not enough, layers go (lowest block influence first).
  t.target_params = full * 30 / 100;
  plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  pc = plan->PrunedConfig(c);
  ASSERT_TRUE(pc.ok());
  EXPECT_LE(pc->ParameterCount(), t.target_params);
  EXPECT_LT(pc->num_layers, 6);
  EXPECT_EQ(plan->layers.back(), 5);  // the most influential layer stays
  ModelConfig deeper = *pc;
  deeper.num_layers += 1;
  deeper.hidden_size = 32;
  deeper.intermediate_size = 64;
  EXPECT_GT(deeper.ParameterCount(), t.target_params);

  // Fixed dimensions stay as given.
  t = StructuredTarget{};
  t.hidden_size = 48;
  t.target_params = full * 70 / 100;
  plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->hidden.size(), 48u);
  EXPECT_LE(plan->PrunedConfig(c)->ParameterCount(), t.target_params);

  // Unreachable with fixed layers.
  t = StructuredTarget{};
  t.num_layers = 6;
  t.target_params = full / 10;
  auto bad = PlanStructuredPruning(c, imp, t);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("cannot be met"));
  t.target_params = -5;
  EXPECT_THAT(std::string(PlanStructuredPruning(c, imp, t).status().message()),
              HasSubstr("negative"));
}

TEST(PlanTest, TargetErrors) {
  ModelConfig c = EightHeads();
  ModelImportance imp = Ramp(c);
  auto msg = [&](StructuredTarget t, const ModelImportance& i) {
    auto p = PlanStructuredPruning(c, i, t);
    EXPECT_FALSE(p.ok());
    return p.ok() ? std::string() : std::string(p.status().message());
  };
  StructuredTarget t;
  t.num_heads = 6;  // 4 kv heads kept
  EXPECT_THAT(msg(t, imp), HasSubstr("num_heads (6) is not a multiple of num_kv_heads (4)"));
  t.num_kv_heads = 4;
  t.num_heads = 7;
  EXPECT_THAT(msg(t, imp), HasSubstr("not a multiple"));
  t.num_kv_heads = 1;
  t.num_heads = 4;  // 4 per group, the model has 2
  EXPECT_THAT(msg(t, imp), HasSubstr("the model's groups have 2"));
  t = StructuredTarget{};
  t.num_kv_heads = 5;
  EXPECT_THAT(msg(t, imp), HasSubstr("num_kv_heads = 5 must be in [1, 4]"));
  t = StructuredTarget{};
  t.intermediate_size = -1;
  EXPECT_THAT(msg(t, imp), HasSubstr("intermediate_size"));
  t = StructuredTarget{};
  t.hidden_size = 65;
  EXPECT_THAT(msg(t, imp), HasSubstr("hidden_size = 65"));

  // Missing importance for what is pruned; fine for what is not.
  t = StructuredTarget{};
  t.intermediate_size = 64;
  ModelImportance none;
  EXPECT_THAT(msg(t, none), HasSubstr("importance needed for 4 layers"));
  ModelImportance no_mlp = imp;
  no_mlp.layers[2].mlp.clear();
  EXPECT_THAT(msg(t, no_mlp), HasSubstr("MLP importance of layer 2 has 0 entries, expected 128"));
  t = StructuredTarget{};
  t.hidden_size = 32;
  ModelImportance no_hidden = imp;
  no_hidden.hidden.resize(10);
  EXPECT_THAT(msg(t, no_hidden), HasSubstr("hidden importance has 10 entries, expected 64"));
  t = StructuredTarget{};
  t.num_layers = 2;
  EXPECT_THAT(msg(t, none), HasSubstr("block influence needed for 4 layers"));
  ModelImportance nan = imp;
  nan.layers[1].head[3] = std::nan("");
  t = StructuredTarget{};
  t.num_heads = 4;
  EXPECT_THAT(msg(t, nan), HasSubstr("head importance of layer 1[3] is not finite"));
  EXPECT_TRUE(PlanStructuredPruning(c, none, StructuredTarget{}).ok());
}

TEST(PlanTest, ValidateErrors) {
  ModelConfig c = EightHeads();
  auto msg = [&](const StructuredPlan& p) {
    absl::Status s = p.Validate(c);
    EXPECT_FALSE(s.ok());
    return std::string(s.message());
  };
  StructuredPlan p = StructuredPlan::KeepAll(c);
  EXPECT_TRUE(p.Validate(c).ok());
  p.layers = {2, 1};
  p.heads.resize(2);
  EXPECT_THAT(msg(p), HasSubstr("strictly ascending"));
  p = StructuredPlan::KeepAll(c);
  p.hidden.push_back(64);
  EXPECT_THAT(msg(p), HasSubstr("hidden index 64 outside [0, 64)"));
  p = StructuredPlan::KeepAll(c);
  p.mlp[1].pop_back();
  EXPECT_THAT(msg(p), HasSubstr("every layer must keep the same counts"));
  p = StructuredPlan::KeepAll(c);
  p.heads[0] = {0, 2};  // head 2 is in group 1, not group 0's second slot
  p.kv_heads[0] = {0, 1};
  for (size_t i = 1; i < p.heads.size(); ++i) {
    p.heads[i] = {0, 2};
    p.kv_heads[i] = {0, 1};
  }
  EXPECT_TRUE(p.Validate(c).ok());  // one query head per kept group
  p.heads[0] = {0, 1};
  EXPECT_THAT(msg(p), HasSubstr("query head 1 of layer 0 is not in the group of kv head 1"));
  p = StructuredPlan::KeepAll(c);
  p.heads[0] = {0, 1, 2};
  for (size_t i = 1; i < p.heads.size(); ++i) p.heads[i] = {0, 1, 2};
  EXPECT_THAT(msg(p), HasSubstr("not a multiple of its 4 kv heads"));
  p = StructuredPlan::KeepAll(c);
  p.mlp.pop_back();
  EXPECT_THAT(msg(p), HasSubstr("one entry per kept layer"));
  p = StructuredPlan::KeepAll(c);
  p.layers.clear();
  EXPECT_THAT(msg(p), HasSubstr("layers keeps nothing"));
}

// ---------------------------------------------------------------------------
// Applying plans.

TEST(ApplyTest, Bf16RandomModelBuildsAndStaysTied) {
  ModelConfig c = TinyConfig("qwen2");
  c.num_layers = 3;
  c.sliding_window = 16;
  c.sliding_layers = {false, true, false};
  ASSERT_TRUE(c.tie_word_embeddings);
  auto model = Transformer::RandomInit(c, 7, DType::kBF16);
  ASSERT_TRUE(model.ok()) << model.status();
  StructuredTarget t;
  t.num_layers = 2;
  t.num_heads = 2;
  t.num_kv_heads = 1;
  t.intermediate_size = 96;
  t.hidden_size = 40;
  ModelImportance imp = Ramp(c);
  imp.layers[1].block_influence = -1;  // layer 1 goes
  auto plan = PlanStructuredPruning(c, imp, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->layers, ElementsAre(0, 2));
  auto pruned = ApplyStructuredPlan(c, (*model)->NamedWeights(), *plan);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  const auto& [nc, weights] = *pruned;
  EXPECT_EQ(nc.num_layers, 2);
  EXPECT_EQ(nc.num_heads, 2);
  EXPECT_EQ(nc.num_kv_heads, 1);
  EXPECT_EQ(nc.intermediate_size, 96);
  EXPECT_EQ(nc.hidden_size, 40);
  EXPECT_EQ(nc.head_dim, c.head_dim);
  EXPECT_TRUE(nc.tie_word_embeddings);
  EXPECT_EQ(nc.sliding_layers, (std::vector<bool>{false, false}));
  std::map<std::string, Tensor> by_name(weights.begin(), weights.end());
  EXPECT_EQ(by_name.count("lm_head.weight"), 0u);
  EXPECT_EQ(by_name.count("model.layers.2.input_layernorm.weight"), 0u);
  for (const auto& [name, tensor] : weights) EXPECT_EQ(tensor.dtype(), DType::kBF16) << name;
  EXPECT_EQ(by_name.at("model.layers.1.self_attn.q_proj.bias").shape(), (Shape{2 * c.head_dim}));
  EXPECT_EQ(by_name.at("model.layers.1.self_attn.k_proj.weight").shape(), (Shape{c.head_dim, 40}));
  EXPECT_EQ(by_name.at("model.embed_tokens.weight").shape(), (Shape{c.vocab_size, 40}));
  // The new layer 1 is the old layer 2, sliced: compare one kept element.
  std::map<std::string, Tensor> old(((*model)->NamedWeights()).begin(),
                                    ((*model)->NamedWeights()).end());
  const Tensor& o_new = by_name.at("model.layers.1.mlp.down_proj.weight");  // [40, 96]
  const Tensor& o_old = old.at("model.layers.2.mlp.down_proj.weight");      // [64, 128]
  EXPECT_EQ(o_new.data<uint16_t>()[3 * 96 + 5],
            o_old.data<uint16_t>()[plan->hidden[3] * 128 + plan->mlp[1][5]]);

  auto small = Transformer::FromNamedWeights(nc, weights, "pruned");
  ASSERT_TRUE(small.ok()) << small.status();
  auto logits = (*small)->Logits({1, 2, 3, 4});
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (float v : *logits) ASSERT_TRUE(std::isfinite(v));

  // Writes as an HF directory that loads back with the same config.
  const std::string dir = ::testing::TempDir() + "/prune_structured_bf16";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteHfDirectory(dir, nc.ToJson(), weights).ok());
  auto loaded = Transformer::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().hidden_size, 40);
  EXPECT_EQ((*loaded)->config().num_kv_heads, 1);
  auto again = (*loaded)->Logits({1, 2, 3, 4});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *logits);
  std::filesystem::remove_all(dir);
}

TEST(ApplyTest, BadWeights) {
  ModelConfig c = TinyConfig("llama");
  auto model = Transformer::RandomInit(c, 3, DType::kF32);
  ASSERT_TRUE(model.ok());
  const StructuredPlan keep = StructuredPlan::KeepAll(c);
  auto msg = [&](const std::vector<std::pair<std::string, Tensor>>& w, const StructuredPlan& p) {
    auto r = ApplyStructuredPlan(c, w, p);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  std::vector<std::pair<std::string, Tensor>> w = (*model)->NamedWeights();
  ASSERT_TRUE(ApplyStructuredPlan(c, w, keep).ok());

  auto extra = w;
  extra.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq",
                     Tensor::Zeros(DType::kF32, {8}));
  EXPECT_THAT(msg(extra, keep),
              HasSubstr("unexpected tensor \"model.layers.0.self_attn.rotary_emb.inv_freq\""));
  auto missing = w;
  missing.erase(std::find_if(missing.begin(), missing.end(), [](const auto& p) {
    return p.first == "model.layers.1.mlp.up_proj.weight";
  }));
  EXPECT_THAT(msg(missing, keep),
              HasSubstr("missing tensor \"model.layers.1.mlp.up_proj.weight\""));
  auto shape = w;
  for (auto& [n, t] : shape) {
    if (n == "model.norm.weight") t = Tensor::Zeros(DType::kF32, {63});
  }
  EXPECT_THAT(msg(shape, keep), HasSubstr("\"model.norm.weight\" has shape [63], expected [64]"));
  auto dtype = w;
  for (auto& [n, t] : dtype) {
    if (n == "model.layers.0.mlp.gate_proj.weight") t = Tensor::Zeros(DType::kI8, t.shape());
  }
  EXPECT_THAT(msg(dtype, keep), HasSubstr("\"model.layers.0.mlp.gate_proj.weight\" is I8"));
  auto twice = w;
  twice.push_back(w[0]);
  EXPECT_THAT(msg(twice, keep), HasSubstr("given twice"));
  StructuredPlan bad = keep;
  bad.heads[0] = {0, 1, 2};
  EXPECT_THAT(msg(w, bad),
              HasSubstr("3 query heads of layer 0 are not a multiple of its 2 kv heads"));
  bad.heads[0] = {0, 2};  // valid alone, but layer 1 keeps 4
  EXPECT_THAT(msg(w, bad), HasSubstr("every layer must keep the same counts"));
}

}  // namespace
}  // namespace retort::prune
