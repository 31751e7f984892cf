#include "model/init.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/transformer.h"

namespace retort {
namespace {

using ::testing::HasSubstr;

TEST(PresetConfigTest, EveryFamilyAndSizeIsValid) {
  for (const char* family : {"llama", "qwen2", "qwen3", "mistral", "Qwen2ForCausalLM"}) {
    for (const std::string& size : PresetSizes()) {
      auto c = PresetConfig(family, size);
      ASSERT_TRUE(c.ok()) << family << "/" << size << ": " << c.status();
      EXPECT_TRUE(c->Validate().ok());
    }
  }
  EXPECT_TRUE(PresetConfig("qwen2", "tiny")->attention_bias);
  EXPECT_TRUE(PresetConfig("qwen3", "tiny")->qk_norm);
}

TEST(PresetConfigTest, FamilyDefaults) {
  struct Want {
    const char* family;
    double rope_theta, rms_norm_eps;
    int64_t bos;
    std::vector<int64_t> eos;
  };
  for (const Want& w : {Want{"llama", 500000.0, 1e-5, 1, {2}}, Want{"mistral", 1e6, 1e-5, 1, {2}},
                        Want{"qwen2", 1e6, 1e-6, -1, {}}, Want{"qwen3", 1e6, 1e-6, -1, {}}}) {
    SCOPED_TRACE(w.family);
    auto c = PresetConfig(w.family, "tiny");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->rope_theta, w.rope_theta);
    EXPECT_EQ(c->rms_norm_eps, w.rms_norm_eps);
    EXPECT_EQ(c->bos_token_id, w.bos);
    EXPECT_EQ(c->eos_token_ids, w.eos);
  }
}

TEST(PresetConfigTest, SizesMatchTheirNames) {
  const std::vector<std::pair<std::string, double>> nominal = {
      {"20m", 20e6}, {"30m", 30e6}, {"100m", 100e6}, {"350m", 350e6}, {"1b", 1e9}};
  for (const auto& [size, params] : nominal) {
    auto c = PresetConfig("llama", size);
    ASSERT_TRUE(c.ok());
    EXPECT_NEAR(c->ParameterCount() / params, 1.0, 0.1) << size << ": " << c->ParameterCount();
  }
}

TEST(PresetConfigTest, UnknownFamilyOrSize) {
  auto a = PresetConfig("gpt2", "100m");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("gpt2"));
  auto b = PresetConfig("llama", "7b");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("7b"));
}

TEST(ApplySizeOverridesTest, ChangesTheShapeAndKeepsHeadDimConsistent) {
  auto c = PresetConfig("llama", "tiny");  // hidden 64, 4 heads, 2 kv heads
  ASSERT_TRUE(c.ok());
  SizeOverrides o;
  o.hidden = 192;
  o.heads = 6;
  o.layers = 3;
  o.intermediate = 512;
  o.context = 512;
  o.rope_theta = 10000;
  ASSERT_TRUE(ApplySizeOverrides(o, &*c).ok());
  EXPECT_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->hidden_size, 192);
  EXPECT_EQ(c->num_heads, 6);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->num_kv_heads, 2);  // the preset's, still a divisor of 6
  EXPECT_EQ(c->num_layers, 3);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_TRUE(c->Validate().ok());

  // kv heads that no longer divide the heads fall back to multi-head attention.
  auto d = PresetConfig("llama", "tiny");
  SizeOverrides mha;
  mha.heads = 2;
  mha.hidden = 128;
  ASSERT_TRUE(ApplySizeOverrides(mha, &*d).ok());
  EXPECT_EQ(d->num_kv_heads, 2);
  EXPECT_EQ(d->head_dim, 64);
  SizeOverrides odd_heads;
  odd_heads.heads = 1;
  odd_heads.hidden = 128;
  ASSERT_TRUE(ApplySizeOverrides(odd_heads, &*d).ok());
  EXPECT_EQ(d->num_kv_heads, 1);
  EXPECT_EQ(d->head_dim, 128);

  // Only what is given changes.
  auto e = PresetConfig("qwen3", "tiny");
  const ModelConfig before = *e;
  ASSERT_TRUE(ApplySizeOverrides(SizeOverrides{}, &*e).ok());
  EXPECT_EQ(e->ToJson(), before.ToJson());
}

TEST(ApplySizeOverridesTest, RefusesInconsistentShapesAndLeavesTheConfig) {
  auto c = PresetConfig("llama", "tiny");
  ASSERT_TRUE(c.ok());
  const nlohmann::json before = c->ToJson();
  auto refused = [&](SizeOverrides o, const char* what) {
    absl::Status s = ApplySizeOverrides(o, &*c);
    EXPECT_FALSE(s.ok()) << what;
    EXPECT_THAT(std::string(s.message()), HasSubstr(what));
    EXPECT_EQ(c->ToJson(), before) << what;
  };
  SizeOverrides not_multiple;
  not_multiple.hidden = 100;
  not_multiple.heads = 3;
  refused(not_multiple, "not a multiple of --heads");
  SizeOverrides kv;
  kv.heads = 4;
  kv.kv_heads = 3;
  refused(kv, "not a multiple of --kv-heads");
  SizeOverrides odd;
  odd.hidden = 60;
  odd.heads = 4;  // head size 15
  refused(odd, "must be even");
  SizeOverrides negative;
  negative.intermediate = -5;
  refused(negative, "--intermediate");
  SizeOverrides theta;
  theta.rope_theta = -1;
  refused(theta, "--rope-theta");
}

TEST(InitModelDirectoryTest, WritesALoadableModel) {
  const std::string dir = ::testing::TempDir() + "/retort_init_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  for (const char* family : {"llama", "qwen2", "qwen3", "mistral"}) {
    auto c = PresetConfig(family, "tiny");
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(InitModelDirectory(*c, dir, 7, DType::kBF16).ok()) << family;
    auto model = Transformer::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->config().arch, c->arch);
    EXPECT_EQ((*model)->config().torch_dtype, DType::kBF16);
    EXPECT_EQ((*model)->config().ParameterCount(), c->ParameterCount());
    auto again = Transformer::RandomInit(*c, 7, DType::kBF16);
    ASSERT_TRUE(again.ok());
    std::vector<int32_t> tokens = {1, 5, 9, 200};
    auto l1 = (*model)->Logits(tokens);
    auto l2 = (*again)->Logits(tokens);
    ASSERT_TRUE(l1.ok() && l2.ok());
    EXPECT_EQ(*l1, *l2) << family;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace retort
