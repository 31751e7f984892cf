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
