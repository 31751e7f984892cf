// model/gguf_model: names, q/k row order, rope_freqs, presets, and a model
// written to GGUF and read back into the engine with identical logits.
#include "model/gguf_model.h"

#include <filesystem>
#include <functional>
#include <map>

#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(GgufNames, RoundTripEveryLayerTensor) {
  const char* hf_names[] = {
      "model.embed_tokens.weight",
      "model.norm.weight",
      "lm_head.weight",
      "model.layers.0.input_layernorm.weight",
      "model.layers.12.post_attention_layernorm.weight",
      "model.layers.3.self_attn.q_proj.weight",
      "model.layers.3.self_attn.q_proj.bias",
      "model.layers.3.self_attn.k_proj.weight",
      "model.layers.3.self_attn.v_proj.bias",
      "model.layers.3.self_attn.o_proj.weight",
      "model.layers.3.self_attn.q_norm.weight",
      "model.layers.3.self_attn.k_norm.weight",
      "model.layers.3.mlp.gate_proj.weight",
      "model.layers.3.mlp.up_proj.weight",
      "model.layers.3.mlp.down_proj.weight",
  };
  for (const char* hf : hf_names) {
    auto g = GgufTensorName(hf);
    ASSERT_TRUE(g.ok()) << g.status();
    auto back = HfTensorName(*g);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, hf);
  }
  EXPECT_EQ(*GgufTensorName("model.layers.12.post_attention_layernorm.weight"),
            "blk.12.ffn_norm.weight");
  EXPECT_EQ(*GgufTensorName("model.layers.3.self_attn.o_proj.weight"), "blk.3.attn_output.weight");
  EXPECT_EQ(*HfTensorName("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(*HfTensorName("output.weight"), "lm_head.weight");
}

TEST(GgufNames, UnknownNamesAreErrors) {
  EXPECT_FALSE(HfTensorName("rope_freqs.weight").ok());
  EXPECT_FALSE(HfTensorName("blk.x.attn_q.weight").ok());
  EXPECT_FALSE(HfTensorName("blk.0.post_attention_norm.weight").ok());  // gemma3
  EXPECT_FALSE(GgufTensorName("model.layers.0.self_attn.rotary_emb.inv_freq").ok());
}

// convert_hf_to_gguf: w.reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2).reshape(w.shape)
TEST(GgufQkPermutation, MatchesConvertScriptFormula) {
  const int64_t heads = 2, head_dim = 6, cols = 3;
  Tensor w = Tensor::Zeros(DType::kF32, {heads * head_dim, cols});
  for (int64_t r = 0; r < heads * head_dim; ++r) {
    for (int64_t c = 0; c < cols; ++c) w.mutable_data<float>()[r * cols + c] = r * 10 + c;
  }
  auto p = PermuteQkRowsToGguf(w, heads);
  ASSERT_TRUE(p.ok()) << p.status();
  // Per head of 6 rows, [a0 a1 a2 | b0 b1 b2] becomes [a0 b0 a1 b1 a2 b2].
  const int64_t expected_rows[] = {0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11};
  for (int64_t r = 0; r < heads * head_dim; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_EQ(p->data<float>()[r * cols + c], expected_rows[r] * 10 + c) << r << "," << c;
    }
  }
  auto back = UnpermuteQkRowsFromGguf(*p, heads);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(0, std::memcmp(back->raw(), w.raw(), w.nbytes()));
  // Biases (rank 1) move the same way.
  Tensor b = Tensor::Zeros(DType::kF32, {heads * head_dim});
  for (int64_t r = 0; r < heads * head_dim; ++r) b.mutable_data<float>()[r] = r;
  auto pb = PermuteQkRowsToGguf(b, heads);
  ASSERT_TRUE(pb.ok());
  for (int64_t r = 0; r < heads * head_dim; ++r) EXPECT_EQ(pb->data<float>()[r], expected_rows[r]);
}

TEST(GgufQkPermutation, BlockRowsMoveWhole) {
  // 4 rows of one Q8_0 block each (34 bytes), bytes tagged by row.
  Tensor w = Tensor::Zeros(DType::kQ8_0, {4, 32});
  ASSERT_EQ(w.nbytes(), 4u * 34);
  auto* bytes = static_cast<uint8_t*>(w.mutable_raw());
  for (int r = 0; r < 4; ++r) std::memset(bytes + r * 34, r + 1, 34);
  auto p = UnpermuteQkRowsFromGguf(w, 1);  // one head of 4: GGUF [a0 b0 a1 b1] -> HF [a0 a1 b0 b1]
  ASSERT_TRUE(p.ok());
  const auto* out = static_cast<const uint8_t*>(p->raw());
  const int expected[] = {1, 3, 2, 4};
  for (int r = 0; r < 4; ++r) {
    for (int i = 0; i < 34; ++i) ASSERT_EQ(out[r * 34 + i], expected[r]);
  }
  EXPECT_FALSE(PermuteQkRowsToGguf(Tensor::Zeros(DType::kF32, {6, 2}), 4).ok());
}

TEST(GgufRope, Llama31FactorsMatchConvertScript) {
  // Llama-3.1-8B: theta 500000, head_dim 128, factor 8, low 1, high 4, ctx 8192.
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000;
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8;
  std::vector<float> f = Llama3RopeFreqFactors(c);
  ASSERT_EQ(f.size(), 64u);
  EXPECT_EQ(f[0], 1.0f);   // short wavelengths kept
  EXPECT_EQ(f[63], 8.0f);  // long ones slowed by `factor`
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);
  c.rope_scaling.type = RopeScaling::Type::kNone;
  EXPECT_TRUE(Llama3RopeFreqFactors(c).empty());
}

// llama.cpp's Q4_K_M choices on a real file (tests/reference/gguf_presets).
TEST(GgufPresets, Q4KMatchesLlamaQuantizeOnGemma3File) {
  auto text = ReadFileToString("tests/reference/gguf_presets/gemma-3-270m-q4_k_m.types.json");
  ASSERT_TRUE(text.ok()) << text.status();
  nlohmann::json j = nlohmann::json::parse(*text);
  ModelConfig c;
  c.num_layers = j["block_count"].get<int64_t>();
  c.tie_word_embeddings = j["tied_embeddings"].get<bool>();
  EXPECT_EQ(GgufFileType(GgufPreset::kQ4_K_M), j["file_type"].get<uint32_t>());
  std::map<std::string, int> counts;
  for (const auto& t : j["tensors"]) {
    const std::string name = t["name"].get<std::string>();
    const Shape shape = t["shape"].get<Shape>();
    DType got = GgufTensorType(GgufPreset::kQ4_K_M, name, shape, c);
    EXPECT_EQ(std::string(DTypeName(got)), t["type"].get<std::string>())
        << name << " " << ShapeString(shape);
    counts[std::string(DTypeName(got))]++;
  }
  EXPECT_EQ(counts["Q6_K"], 9);
  EXPECT_EQ(counts["Q8_0"], 10);
  EXPECT_EQ(counts["Q4_K"], 27);
  EXPECT_EQ(counts["Q5_0"], 81);
}

TEST(GgufPresets, OtherPresets) {
  ModelConfig c;
  c.num_layers = 30;
  c.tie_word_embeddings = false;
  const Shape wide = {1536, 1024}, narrow = {192, 576};
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ4_0, "blk.0.attn_q.weight", wide, c), DType::kQ4_0);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ4_0, "output.weight", wide, c), DType::kQ6_K);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ4_0, "output.weight", narrow, c), DType::kQ8_0);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ4_0, "token_embd.weight", wide, c), DType::kQ4_0);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ8_0, "output.weight", wide, c), DType::kQ8_0);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ6_K, "blk.3.ffn_up.weight", narrow, c), DType::kQ8_0);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ5_K_M, "blk.3.ffn_up.weight", narrow, c), DType::kQ5_1);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ5_K_M, "blk.0.attn_v.weight", wide, c), DType::kQ6_K);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ5_K_M, "blk.6.attn_v.weight", wide, c), DType::kQ5_K);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ5_K_M, "blk.5.attn_v.weight", wide, c),
            DType::kQ6_K);  // (5 - 30/8) % 3 == 2
  EXPECT_EQ(GgufTensorType(GgufPreset::kF16, "blk.0.attn_q.weight", wide, c), DType::kF16);
  EXPECT_EQ(GgufTensorType(GgufPreset::kBF16, "blk.0.attn_norm.weight", {1024}, c), DType::kF32);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ4_K_M, "rope_freqs.weight", {64}, c), DType::kF32);
  EXPECT_EQ(GgufTensorType(GgufPreset::kQ8_0, "blk.0.attn_q.weight", {8, 48}, c), DType::kF16);
  EXPECT_TRUE(ParseGgufPreset("Q4_K_M").ok());
  EXPECT_FALSE(ParseGgufPreset("q3_k_xl").ok());
}

// ---- a model written to GGUF and read back ----------------------------------

ModelConfig TinyConfig(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.architecture_name = ArchClassName(arch);
  c.vocab_size = 96;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = arch == Arch::kQwen3 ? 32 : 16;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 256;
  c.attention_bias = arch == Arch::kQwen2;
  c.qk_norm = arch == Arch::kQwen3;
  c.tie_word_embeddings = arch == Arch::kQwen3;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

HfTokenizerForGguf TinyTokenizer(int64_t vocab) {
  HfTokenizerForGguf t;
  for (int64_t i = 0; i < vocab; ++i)
    t.parts.tokens.push_back(std::string(1, static_cast<char>('!' + i)));
  t.parts.token_types.assign(vocab, 1);
  t.parts.pre_tokenizer = "gpt2";
  t.parts.bos_id = 1;
  t.parts.eos_id = 2;
  return t;
}

// Writes `model` as convert_hf_to_gguf would (F32), returns the path.
std::string WriteGguf(const Transformer& model, const std::string& name) {
  const ModelConfig& c = model.config();
  GgufWriter w(GgufArchName(c.arch));
  EXPECT_TRUE(
      AddGgufModelMetadata(c, TinyTokenizer(c.vocab_size), "{{ messages }}", 0, name, w).ok());
  std::vector<float> freqs = Llama3RopeFreqFactors(c);
  if (!freqs.empty()) {
    Tensor f = Tensor::Zeros(DType::kF32, {static_cast<int64_t>(freqs.size())});
    std::copy(freqs.begin(), freqs.end(), f.mutable_data<float>());
    EXPECT_TRUE(w.AddTensor("rope_freqs.weight", f).ok());
  }
  for (const auto& [hf, t] : model.NamedWeights()) {
    auto g = GgufTensorName(hf);
    EXPECT_TRUE(g.ok()) << g.status();
    Tensor stored = t;
    if (std::string(GgufArchName(c.arch)) == "llama") {
      if (hf.find("q_proj") != std::string::npos) stored = *PermuteQkRowsToGguf(t, c.num_heads);
      if (hf.find("k_proj") != std::string::npos) stored = *PermuteQkRowsToGguf(t, c.num_kv_heads);
    }
    EXPECT_TRUE(w.AddTensor(*g, stored).ok());
  }
  const std::string path =
      (fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()) + ".gguf")).string();
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

void ExpectSameModel(const ModelConfig& c) {
  auto model = Transformer::RandomInit(c, 11, DType::kF32);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string path = WriteGguf(**model, ArchModelType(c.arch));
  auto reader = GgufReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto read = ReadGgufModel(**reader);
  ASSERT_TRUE(read.ok()) << read.status();
  const ModelConfig& r = read->config;
  EXPECT_EQ(r.num_layers, c.num_layers);
  EXPECT_EQ(r.hidden_size, c.hidden_size);
  EXPECT_EQ(r.num_kv_heads, c.num_kv_heads);
  EXPECT_EQ(r.head_dim, c.head_dim);
  EXPECT_EQ(r.rms_norm_eps, c.rms_norm_eps);
  EXPECT_EQ(r.tie_word_embeddings, c.tie_word_embeddings);
  EXPECT_EQ(r.attention_bias, c.attention_bias);
  EXPECT_EQ(r.qk_norm, c.qk_norm);
  EXPECT_EQ(r.rope_scaling.type, c.rope_scaling.type);
  EXPECT_EQ(r.rope_scaling.factor, c.rope_scaling.factor);
  EXPECT_EQ(r.rope_scaling.original_max_position_embeddings,
            c.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(read->chat_template, "{{ messages }}");
  EXPECT_EQ(read->tokenizer.tokens.size(), static_cast<size_t>(c.vocab_size));
  // Every weight comes back bit-identical in HF order and shape.
  std::map<std::string, Tensor> got(read->weights.begin(), read->weights.end());
  EXPECT_EQ(got.size(), (*model)->NamedWeights().size());
  for (const auto& [name, t] : (*model)->NamedWeights()) {
    ASSERT_TRUE(got.count(name)) << name;
    ASSERT_EQ(got[name].shape(), t.shape()) << name;
    EXPECT_EQ(0, std::memcmp(got[name].raw(), t.raw(), t.nbytes())) << name;
  }
  auto engine = LoadGgufTransformer(path);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<int32_t> ids = {1, 5, 9, 33, 70, 2, 95, 0};
  auto want = (*model)->Logits(ids);
  auto have = (*engine)->Logits(ids);
  ASSERT_TRUE(want.ok() && have.ok());
  EXPECT_EQ(*want, *have);
  fs::remove(path);
}

TEST(GgufModel, LlamaRoundTripsThroughGguf) { ExpectSameModel(TinyConfig(Arch::kLlama)); }
TEST(GgufModel, Qwen2RoundTripsThroughGguf) { ExpectSameModel(TinyConfig(Arch::kQwen2)); }
TEST(GgufModel, Qwen3RoundTripsThroughGguf) { ExpectSameModel(TinyConfig(Arch::kQwen3)); }
TEST(GgufModel, Llama31RopeScalingTravelsAsRopeFreqs) {
  ModelConfig c = TinyConfig(Arch::kLlama);
  c.head_dim = 64;
  c.num_heads = 1;
  c.num_kv_heads = 1;
  c.rope_theta = 500000;
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 32;  // Llama-3.2
  ExpectSameModel(c);
}

TEST(GgufModel, RefusesOtherArchitecturesByName) {
  GgufWriter w("gemma3");
  w.AddMetadata("gemma3.block_count", GgufValue::U32(1));
  const std::string path =
      (fs::temp_directory_path() / ("gemma_" + std::to_string(::getpid()) + ".gguf")).string();
  ASSERT_TRUE(w.Write(path).ok());
  EXPECT_TRUE(IsGgufFile(path));
  auto r = GgufReader::Open(path);
  ASSERT_TRUE(r.ok());
  auto c = ModelConfigFromGguf(**r);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("gemma3"));
  EXPECT_THAT(c.status().message(), HasSubstr(path));
  fs::remove(path);
  EXPECT_FALSE(IsGgufFile("tests/reference/gguf_presets/make_fixtures.py"));
}

TEST(GgufTokenizer, HfJsonRoundTripKeepsIds) {
  // tokenizer.json -> parts -> tokenizer.json, encoded the same.
  TokenizerParts p;
  const std::string bytes = "abcdefghijklmnopqrstuvwxyz \xC4\xA0";
  p.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (char ch = 'a'; ch <= 'z'; ++ch) p.tokens.push_back(std::string(1, ch));
  p.tokens.push_back("\xC4\xA0");  // Ġ (space)
  p.tokens.push_back("ab");
  p.tokens.push_back(
      "\xC4\xA0"
      "a");
  p.merges = {"a b", "\xC4\xA0 a"};
  p.token_types.assign(p.tokens.size(), 1);
  p.token_types[0] = p.token_types[1] = p.token_types[2] = 3;
  p.pre_tokenizer = "smollm";
  p.bos_id = 1;
  p.eos_id = 2;
  auto json = HfTokenizerJsonFromParts(p);
  ASSERT_TRUE(json.ok()) << json.status();
  auto from_json = Tokenizer::FromJsonString(json->dump());
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  auto from_parts = Tokenizer::FromParts(p);
  ASSERT_TRUE(from_parts.ok()) << from_parts.status();
  const std::string text = "<|im_start|>ab a cab<|im_end|>";
  EXPECT_EQ((*from_json)->Encode(text, true), (*from_parts)->Encode(text, true));
  auto again = TokenizerPartsFromHf(
      nlohmann::json::parse(json->dump()),
      nlohmann::json{{"bos_token", "<|im_start|>"}, {"eos_token", "<|im_end|>"}},
      static_cast<int64_t>(p.tokens.size()) + 2, "", "test");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->parts.pre_tokenizer, "smollm");  // recognised from the pre-tokenizer
  EXPECT_EQ(again->parts.merges, p.merges);
  EXPECT_EQ(again->parts.bos_id, 1);
  EXPECT_EQ(again->parts.eos_id, 2);
  ASSERT_EQ(again->parts.tokens.size(), p.tokens.size() + 2);
  EXPECT_EQ(again->parts.tokens.back(), "[PAD" + std::to_string(p.tokens.size() + 1) + "]");
  EXPECT_EQ(again->parts.token_types.back(), 5);
  for (size_t i = 0; i < p.tokens.size(); ++i) {
    EXPECT_EQ(again->parts.tokens[i], p.tokens[i]);
    EXPECT_EQ(again->parts.token_types[i], p.token_types[i]) << i;
  }
  nlohmann::ordered_json config = HfTokenizerConfigFromParts(p, "{{ x }}");
  EXPECT_EQ(config["bos_token"], "<|im_start|>");
  EXPECT_EQ(config["chat_template"], "{{ x }}");
}

// ---- hostile files: clean errors naming the file and the key, never a crash ----

// A minimal llama GGUF the config reader accepts: 2 layers, hidden 8, 2 heads,
// a 4-token vocabulary; `edit` changes metadata or tensors before writing.
std::string WriteHostileGguf(const std::string& name,
                             const std::function<void(GgufWriter&)>& edit) {
  GgufWriter w("llama");
  w.AddMetadata("llama.block_count", GgufValue::U32(2));
  w.AddMetadata("llama.embedding_length", GgufValue::U32(8));
  w.AddMetadata("llama.feed_forward_length", GgufValue::U32(16));
  w.AddMetadata("llama.context_length", GgufValue::U32(64));
  w.AddMetadata("tokenizer.ggml.model", GgufValue::String("gpt2"));
  w.AddMetadata("tokenizer.ggml.tokens", GgufValue::StringArray({"a", "b", "c", "d"}));
  edit(w);
  EXPECT_TRUE(w.AddTensor("token_embd.weight", Tensor::Zeros(DType::kF32, {4, 8})).ok());
  const std::string path =
      (fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()) + ".gguf")).string();
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

// The config and tokenizer read from a hostile GGUF: the first error.
absl::Status ReadHostile(const std::string& path) {
  auto r = GgufReader::Open(path);
  if (!r.ok()) return r.status();
  absl::Status s = ModelConfigFromGguf(**r).status();
  if (s.ok()) s = TokenizerPartsFromGguf(**r).status();
  fs::remove(path);
  return s;
}

void ExpectRefused(const std::string& name, const std::function<void(GgufWriter&)>& edit,
                   const std::string& what) {
  const std::string path = WriteHostileGguf(name, edit);
  absl::Status s = ReadHostile(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name << ": " << s;
  EXPECT_THAT(s.message(), HasSubstr(path)) << name;
  EXPECT_THAT(s.message(), HasSubstr(what)) << name;
}

TEST(GgufHostile, TheBaselineFileReads) {
  EXPECT_TRUE(ReadHostile(WriteHostileGguf("hostile_ok", [](GgufWriter& w) {
                w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
              })).ok());
}

TEST(GgufHostile, ZeroHeadsAreRefused) {
  ExpectRefused(
      "hostile_heads",
      [](GgufWriter& w) { w.AddMetadata("llama.attention.head_count", GgufValue::U32(0)); },
      "llama.attention.head_count must be positive");
  ExpectRefused(
      "hostile_kv_heads",
      [](GgufWriter& w) {
        w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
        w.AddMetadata("llama.attention.head_count_kv", GgufValue::U32(0));
      },
      "num_key_value_heads");
}

TEST(GgufHostile, ImplausibleSizesAreRefused) {
  ExpectRefused(
      "hostile_layers",
      [](GgufWriter& w) {
        w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
        w.AddMetadata("llama.block_count", GgufValue::U32(1000000000));
      },
      "\"num_hidden_layers\" is 1000000000, above the plausible maximum 1024");
  ExpectRefused(
      "hostile_context",
      [](GgufWriter& w) {
        w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
        w.AddMetadata("llama.context_length", GgufValue::U64(uint64_t{1000000000000}));
      },
      "\"max_position_embeddings\" is 1000000000000");
}

TEST(GgufHostile, EmptyRopeFreqsIsRefused) {
  ExpectRefused(
      "hostile_rope",
      [](GgufWriter& w) {
        w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
        EXPECT_TRUE(w.AddTensor("rope_freqs.weight", Tensor::Zeros(DType::kF32, {0})).ok());
      },
      "rope_freqs.weight must be a non-empty 1-D F32 tensor");
  // head_dim 1 (hidden 8, 8 heads): no factor is expected, an empty tensor
  // must still not reach max_element.
  ExpectRefused(
      "hostile_rope_dim",
      [](GgufWriter& w) {
        w.AddMetadata("llama.attention.head_count", GgufValue::U32(8));
        EXPECT_TRUE(w.AddTensor("rope_freqs.weight", Tensor::Zeros(DType::kF32, {0})).ok());
      },
      "");
}

TEST(GgufHostile, SpecialTokenIdsOutsideTheVocabularyAreRefused) {
  for (const GgufValue& bad : {GgufValue::I32(-1), GgufValue::U64(~uint64_t{0}), GgufValue::U32(4),
                               GgufValue::I64(int64_t{1} << 40)}) {
    ExpectRefused(
        "hostile_bos",
        [&](GgufWriter& w) {
          w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
          w.AddMetadata("tokenizer.ggml.bos_token_id", bad);
        },
        "tokenizer.ggml.bos_token_id");
  }
  ExpectRefused(
      "hostile_eos",
      [&](GgufWriter& w) {
        w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
        w.AddMetadata("tokenizer.ggml.eos_token_id", GgufValue::U32(4));
      },
      "tokenizer.ggml.eos_token_id is 4, outside the 4 tokens");
}

TEST(GgufHostile, TokenTypeShorterThanTokensIsRefused) {
  ExpectRefused(
      "hostile_types",
      [](GgufWriter& w) {
        w.AddMetadata("llama.attention.head_count", GgufValue::U32(2));
        w.AddMetadata("tokenizer.ggml.token_type", GgufValue::I32Array({1, 1}));
      },
      "tokenizer.ggml.token_type has 2 entries, tokenizer.ggml.tokens 4");
  // Parts built by hand (not read from a file) are checked too.
  TokenizerParts p;
  p.tokens = {"a", "b", "c"};
  p.token_types = {1};
  p.pre_tokenizer = "gpt2";
  auto j = HfTokenizerJsonFromParts(p);
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(j.status().message(), HasSubstr("1 token types for 3 tokens"));
  p.token_types.clear();
  p.bos_id = 3;
  p.add_bos = true;
  EXPECT_FALSE(HfTokenizerJsonFromParts(p).ok());
}

TEST(GgufHostile, QkRowsOfAnEmptyTensorAreRefused) {
  for (const Shape& shape : {Shape{0, 8}, Shape{0}}) {
    auto t = UnpermuteQkRowsFromGguf(Tensor::Zeros(DType::kF32, shape), 2);
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("cannot permute q/k rows"));
    EXPECT_FALSE(PermuteQkRowsToGguf(Tensor::Zeros(DType::kF32, shape), 2).ok());
  }
}

TEST(GgufHostile, MistypedTokenizerJsonFieldsAreErrors) {
  const nlohmann::json good = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", {"a b"}}}}};
  auto expect_error = [&](nlohmann::json tj, const std::string& what) {
    auto r = TokenizerPartsFromHf(tj, nlohmann::json::object(), 2, "gpt2", "m/tokenizer.json");
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("m/tokenizer.json: " + what));
  };
  ASSERT_TRUE(TokenizerPartsFromHf(good, nlohmann::json::object(), 2, "gpt2", "t").ok());
  nlohmann::json tj = good;
  tj["model"]["type"] = 5;
  expect_error(tj, "model.type: expected a string, got 5");
  tj = good;
  tj["added_tokens"] = {{{"id", 1}, {"content", 7}}};
  expect_error(tj, "added_tokens[0].content: expected a string, got 7");
  tj = good;
  tj["added_tokens"] = {{{"id", 1}, {"content", "b"}, {"special", "yes"}}};
  expect_error(tj, "added_tokens[0].special: expected true/false");
  tj = good;
  tj["model"]["vocab"]["c"] = int64_t{1} << 40;
  expect_error(tj, "token id 1099511627776 is outside [0, 16777216)");
  tj = good;
  tj["model"]["vocab"]["c"] = -3;
  expect_error(tj, "token id -3 is outside");
}

}  // namespace
}  // namespace retort
