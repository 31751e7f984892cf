#include "model/config.h"

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/rope.h"

namespace retort {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return json::parse(*text);
}

ModelConfig Fixture(const std::string& name) {
  const std::string path = "tests/reference/models/" + name + "/config.json";
  auto c = ModelConfig::FromJson(ReadJson(path), path);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(ModelConfigTest, ParsesLlamaWithLlama3RopeScaling) {
  ModelConfig c = Fixture("llama");
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.architecture_name, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 320);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.WindowOf(0), 0);
}

TEST(ModelConfigTest, ParsesQwen2BiasAndTiedEmbeddings) {
  ModelConfig c = Fixture("qwen2");
  EXPECT_EQ(c.arch, Arch::kQwen2);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.attention_out_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(Fixture("qwen2_f16").torch_dtype, DType::kF16);
  EXPECT_EQ(Fixture("llama_bf16").torch_dtype, DType::kBF16);
}

TEST(ModelConfigTest, ParsesQwen3QkNormAndHeadDim) {
  ModelConfig c = Fixture("qwen3");
  EXPECT_EQ(c.arch, Arch::kQwen3);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 24);
  EXPECT_NE(c.head_dim, c.hidden_size / c.num_heads);
  EXPECT_FALSE(c.attention_bias);
}

TEST(ModelConfigTest, ParsesMistralSlidingWindow) {
  ModelConfig c = Fixture("mistral");
  EXPECT_EQ(c.arch, Arch::kMistral);
  EXPECT_EQ(c.sliding_window, 5);
  EXPECT_EQ(c.WindowOf(0), 5);
  EXPECT_EQ(c.WindowOf(1), 5);
}

// A transformers-4 style config (Llama-3.1-8B's shape).
const char kLlama31[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
  "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]
})";

TEST(ModelConfigTest, ParsesTransformers4Spelling) {
  auto c = ModelConfig::FromJson(json::parse(kLlama31), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c->torch_dtype, DType::kBF16);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c->ParameterCount(), 8030261248);  // Llama-3.1-8B
}

TEST(ModelConfigTest, Qwen2SlidingLayersFromMaxWindowLayers) {
  json j = {{"architectures", {"Qwen2ForCausalLM"}},
            {"hidden_size", 64},
            {"intermediate_size", 128},
            {"num_attention_heads", 4},
            {"num_hidden_layers", 4},
            {"vocab_size", 100},
            {"use_sliding_window", true},
            {"sliding_window", 32},
            {"max_window_layers", 2}};
  auto c = ModelConfig::FromJson(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 4);  // defaults to num_attention_heads
  EXPECT_EQ(c->WindowOf(0), 0);
  EXPECT_EQ(c->WindowOf(1), 0);
  EXPECT_EQ(c->WindowOf(2), 32);
  EXPECT_EQ(c->WindowOf(3), 32);
}

TEST(ModelConfigTest, RoundTripsThroughToJson) {
  for (const char* name : {"llama", "qwen2", "qwen3", "mistral", "llama_bf16"}) {
    ModelConfig c = Fixture(name);
    auto back = ModelConfig::FromJson(c.ToJson(), "roundtrip");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->ToJson(), c.ToJson()) << name;
    EXPECT_EQ(back->ParameterCount(), c.ParameterCount());
    EXPECT_EQ(back->WindowOf(1), c.WindowOf(1));
  }
}

struct BadCase {
  const char* what;
  json patch;                       // merged into a valid config
  std::vector<std::string> expect;  // substrings of the message
};

TEST(ModelConfigTest, RejectsBadConfigsWithOneLineNamingFileAndField) {
  const json good = ReadJson("tests/reference/models/llama/config.json");
  const std::vector<BadCase> cases = {
      {"unknown arch",
       {{"architectures", {"GPT2LMHeadModel"}}},
       {"config.json", "GPT2LMHeadModel", "unsupported architecture"}},
      {"missing field", {{"hidden_size", nullptr}}, {"config.json", "hidden_size", "missing"}},
      {"kv heads",
       {{"num_key_value_heads", 3}},
       {"num_attention_heads (4)", "num_key_value_heads (3)"}},
      {"zero layers", {{"num_hidden_layers", 0}}, {"num_hidden_layers", "positive"}},
      {"not a number", {{"vocab_size", "many"}}, {"vocab_size", "integer"}},
      {"rope type",
       {{"rope_parameters", {{"rope_type", "yarn"}, {"factor", 4.0}}}},
       {"yarn", "not supported"}},
      {"activation", {{"hidden_act", "gelu"}}, {"hidden_act", "gelu"}},
      {"odd head_dim", {{"head_dim", 15}}, {"head_dim (15)", "even"}},
      {"dtype", {{"dtype", "int8"}}, {"dtype", "int8"}},
  };
  for (const BadCase& bc : cases) {
    json j = good;
    j.merge_patch(bc.patch);
    auto c = ModelConfig::FromJson(j, "some/dir/config.json");
    ASSERT_FALSE(c.ok()) << bc.what;
    const std::string msg(c.status().message());
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_THAT(msg, HasSubstr("some/dir/config.json")) << bc.what;
    for (const std::string& s : bc.expect) EXPECT_THAT(msg, HasSubstr(s)) << bc.what;
  }
  // hidden not divisible by heads without an explicit head_dim.
  json j = good;
  j.erase("head_dim");
  j["num_attention_heads"] = 6;
  j["num_key_value_heads"] = 2;
  auto c = ModelConfig::FromJson(j, "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("not divisible by num_attention_heads (6)"));
  EXPECT_FALSE(ModelConfig::FromJson(json::array(), "config.json").ok());
}

TEST(ModelConfigTest, RefusesImplausibleSizesBeforeAllocating) {
  const json base = ReadJson("tests/reference/models/llama/config.json");
  struct Case {
    const char* field;
    int64_t value;
    const char* max;
  } cases[] = {{"num_hidden_layers", 1000000000, "1024"},
               {"hidden_size", int64_t{1} << 30, "131072"},
               {"intermediate_size", int64_t{1} << 40, "1048576"},
               {"num_attention_heads", 1 << 20, "1024"},
               {"vocab_size", int64_t{1} << 33, "16777216"},
               {"head_dim", 1 << 20, "4096"},
               {"max_position_embeddings", 1000000000000, "67108864"}};
  for (const Case& c : cases) {
    json j = base;
    j[c.field] = c.value;
    if (std::string(c.field) == "num_attention_heads") j["num_key_value_heads"] = 2;
    auto r = ModelConfig::FromJson(j, "m/config.json");
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.status().message(), absl::StrCat("m/config.json: field \"", c.field, "\" is ",
                                                 c.value, ", above the plausible maximum ", c.max,
                                                 " (refused before allocating)"));
  }
  // A Qwen2 config with 10^9 sliding layers is refused before the per-layer
  // list is built.
  json q = ReadJson("tests/reference/models/qwen2/config.json");
  q["num_hidden_layers"] = 1000000000;
  q["use_sliding_window"] = true;
  q["sliding_window"] = 16;
  EXPECT_THAT(ModelConfig::FromJson(q, "q/config.json").status().message(),
              HasSubstr("num_hidden_layers"));
}

TEST(RopeTest, Llama3ScalingBands) {
  ModelConfig c = Fixture("llama");
  std::vector<float> inv = RopeInvFreq(c);
  ASSERT_EQ(inv.size(), 8u);
  for (size_t i = 0; i < inv.size(); ++i) {
    double base = 1.0 / std::pow(10000.0, 2.0 * i / 16.0);
    double wavelen = 2 * M_PI / base;
    double expected;
    if (wavelen < 64.0 / 4.0) {
      expected = base;  // high frequency: unchanged
    } else if (wavelen > 64.0) {
      expected = base / 8.0;  // low frequency: divided by factor
    } else {
      double smooth = (64.0 / wavelen - 1.0) / (4.0 - 1.0);
      expected = (1 - smooth) * base / 8.0 + smooth * base;
    }
    EXPECT_NEAR(inv[i], expected, 1e-6 * expected) << i;
  }
}

}  // namespace
}  // namespace retort
