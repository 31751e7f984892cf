#include "model/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status.h"
#include "formats/json_fields.h"
#include "model/config_limits.h"
#include "text/pretokenizer.h"
#include "text/tokenizer_json.h"

namespace retort {
namespace {

// GGUF per-layer suffix <-> HF per-layer suffix.
struct LayerTensorName {
  const char* gguf;
  const char* hf;
};
constexpr LayerTensorName kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_gate.bias", "mlp.gate_proj.bias"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_up.bias", "mlp.up_proj.bias"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_down.bias", "mlp.down_proj.bias"},
};
constexpr LayerTensorName kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// Splits "<prefix><N>.<rest>" into N and rest.
bool SplitLayer(const std::string& name, const std::string& prefix, int64_t* layer,
                std::string* rest) {
  if (!absl::StartsWith(name, prefix)) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return false;
  const std::string digits = name.substr(prefix.size(), dot - prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  if (!absl::SimpleAtoi(digits, layer)) return false;
  *rest = name.substr(dot + 1);
  return true;
}

// One side of the name tables: its column and its per-layer prefix.
struct TensorNaming {
  const char* LayerTensorName::*name;
  const char* layer_prefix;
};
constexpr TensorNaming kGgufNaming = {&LayerTensorName::gguf, "blk."};
constexpr TensorNaming kHfNaming = {&LayerTensorName::hf, "model.layers."};

// `name`, written in `from`'s naming, in `to`'s; nullopt when the tables lack it.
std::optional<std::string> RenameTensor(const std::string& name, const TensorNaming& from,
                                        const TensorNaming& to) {
  for (const auto& n : kGlobalNames) {
    if (name == n.*from.name) return std::string(n.*to.name);
  }
  int64_t layer;
  std::string rest;
  if (SplitLayer(name, from.layer_prefix, &layer, &rest)) {
    for (const auto& n : kLayerNames) {
      if (rest == n.*from.name) return absl::StrCat(to.layer_prefix, layer, ".", n.*to.name);
    }
  }
  return std::nullopt;
}

absl::StatusOr<Tensor> MoveQkRows(const Tensor& w, int64_t n_heads, bool to_gguf) {
  if (w.rank() < 1 || n_heads <= 0 || w.dim(0) <= 0 || w.dim(0) % n_heads != 0 ||
      (w.dim(0) / n_heads) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot permute q/k rows of shape ",
                                                   ShapeString(w.shape()), " for ", n_heads,
                                                   " heads (rows must be heads x even head_dim)"));
  }
  const int64_t rows = w.dim(0), head_dim = rows / n_heads, half = head_dim / 2;
  const size_t row_bytes = w.nbytes() / static_cast<size_t>(rows);
  Tensor out = Tensor::Zeros(w.dtype(), w.shape());
  const char* src = static_cast<const char*>(w.raw());
  char* dst = static_cast<char*>(out.mutable_raw());
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < half; ++i) {
        const int64_t hf_row = h * head_dim + s * half + i;
        const int64_t gguf_row = h * head_dim + 2 * i + s;
        const int64_t from = to_gguf ? hf_row : gguf_row, to = to_gguf ? gguf_row : hf_row;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
    }
  }
  return out;
}

double ShortestDecimal(float f) {
  char buf[64];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return f;
}

std::string ArchKey(const std::string& arch, const char* key) {
  return absl::StrCat(arch, ".", key);
}

// Optional metadata helpers: absent -> fallback; present with a wrong type -> error.
absl::StatusOr<int64_t> IntOr(const GgufReader& r, const std::string& key, int64_t fallback) {
  if (r.Find(key) == nullptr) return fallback;
  return r.GetInt(key);
}
absl::StatusOr<double> FloatOr(const GgufReader& r, const std::string& key, double fallback) {
  if (r.Find(key) == nullptr) return fallback;
  return r.GetFloat(key);
}

absl::Status Bad(const std::string& where, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", msg));
}

// A special token id (`key`), -1 when absent. llama.cpp reads these as u32
// and, when one is not below the number of tokens, warns and keeps its
// default; retort's loaders have no warning channel and a silently dropped
// BOS/EOS changes every prompt and stop, so such an id (a negative one, or a
// u64 that wrapped) is refused instead.
absl::StatusOr<int64_t> TokenIdOrNone(const GgufReader& r, const std::string& key,
                                      int64_t n_tokens) {
  const GgufValue* v = r.Find(key);
  if (v == nullptr) return int64_t{-1};
  absl::StatusOr<int64_t> id = v->AsInt();
  if (!id.ok()) return Bad(r.path(), absl::StrCat(key, " ", id.status().message()));
  if (*id < 0 || *id >= n_tokens) {
    return Bad(r.path(), absl::StrCat(key, " is ", *id, ", outside the ", n_tokens, " tokens"));
  }
  return *id;
}

// Recognises llama3 scaling parameters behind a rope_freqs tensor: the
// factors of every Llama-3.1/3.2 release are reproduced by
// (factor, low 1, high 4, original context 8192); others are searched over a
// small grid and must match to f32 rounding.
absl::StatusOr<RopeScaling> RopeScalingFromFreqs(const std::vector<float>& freqs,
                                                 const ModelConfig& base,
                                                 const std::string& where) {
  if (freqs.empty() || static_cast<int64_t>(freqs.size()) != base.head_dim / 2) {
    return Bad(where, absl::StrCat("rope_freqs.weight has ", freqs.size(), " values, expected ",
                                   base.head_dim / 2));
  }
  const float factor = *std::max_element(freqs.begin(), freqs.end());
  if (!(factor >= 1.0f)) return Bad(where, "rope_freqs.weight values must be >= 1");
  std::vector<RopeScaling> candidates;
  for (int64_t ctx : {8192, 4096, 2048, 16384, 32768, 131072}) {
    for (double low : {1.0, 2.0, 0.5}) {
      for (double high : {4.0, 8.0, 2.0, 1.0}) {
        if (high <= low) continue;
        RopeScaling s;
        s.type = RopeScaling::Type::kLlama3;
        s.factor = factor;
        s.low_freq_factor = low;
        s.high_freq_factor = high;
        s.original_max_position_embeddings = ctx;
        candidates.push_back(s);
      }
    }
  }
  for (const RopeScaling& s : candidates) {
    ModelConfig c = base;
    c.rope_scaling = s;
    std::vector<float> want = Llama3RopeFreqFactors(c);
    bool match = true;
    for (size_t i = 0; i < want.size() && match; ++i) {
      match = std::fabs(want[i] - freqs[i]) <= 1e-5f * std::max(1.0f, std::fabs(freqs[i]));
    }
    if (match) return s;
  }
  return Bad(where,
             "rope_freqs.weight does not match llama3 rope scaling with any known "
             "(low_freq_factor, high_freq_factor, original context)");
}

bool LooksSpecial(const std::string& t) {
  auto wrapped = [&](const char* a, const char* b) {
    return absl::StartsWith(t, a) && absl::EndsWith(t, b) && t.size() > strlen(a) + strlen(b) - 1;
  };
  return wrapped("<|", "|>") || wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || t == "<pad>" ||
         t == "<mask>" || t == "<2mass>" || t == "[@BOS@]";
}

// The pre-tokenizer (and normalizer) a .pre name stands for, as tokenizer.json values.
absl::StatusOr<std::pair<nlohmann::ordered_json, nlohmann::ordered_json>> PreTokenizerJson(
    const std::string& pre) {
  using oj = nlohmann::ordered_json;
  auto byte_level = [](bool use_regex) {
    return ByteLevelJson(/*add_prefix_space=*/false, /*trim_offsets=*/true, use_regex);
  };
  auto split = [&](const char* pattern) {
    return oj{{"type", "Sequence"},
              {"pretokenizers", oj::array({oj{{"type", "Split"},
                                              {"pattern", {{"Regex", pattern}}},
                                              {"behavior", "Isolated"},
                                              {"invert", false}},
                                           byte_level(false)})}};
  };
  if (pre == "gpt2" || pre == "default") return std::make_pair(byte_level(true), oj(nullptr));
  if (pre == "smollm" || pre == "starcoder") {
    return std::make_pair(
        oj{{"type", "Sequence"},
           {"pretokenizers",
            oj::array({oj{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)})}},
        oj(nullptr));
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    return std::make_pair(split(kLlama3Pattern), oj(nullptr));
  }
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    return std::make_pair(split(kQwen2Pattern), oj{{"type", "NFC"}});
  }
  return absl::UnimplementedError(
      absl::StrCat("no tokenizer.json pre-tokenizer for tokenizer.ggml.pre \"", pre,
                   "\" (supported: gpt2, smollm, starcoder, llama-bpe, qwen2, deepseek-r1-qwen)"));
}

// Which .pre name a tokenizer.json pre-tokenizer (+ normalizer) behaves as.
absl::StatusOr<std::string> RecognisePre(const nlohmann::json& tokenizer_json,
                                         const std::string& source) {
  nlohmann::json pre = tokenizer_json.contains("pre_tokenizer") ? tokenizer_json["pre_tokenizer"]
                                                                : nlohmann::json(nullptr);
  auto ours = PreTokenizer::FromJson(pre);
  if (!ours.ok()) return Bad(source, std::string(ours.status().message()));
  const std::string described = ours->Describe();
  for (const char* name : {"gpt2", "smollm", "llama-bpe", "qwen2", "deepseek-v3"}) {
    auto candidate = PreTokenizer::FromName(name);
    if (candidate.ok() && candidate->Describe() == described) return std::string(name);
  }
  std::string one_line;
  for (char ch : described) one_line += ch == '\n' ? std::string("\\n") : std::string(1, ch);
  return Bad(source, absl::StrCat("pre-tokenizer ", one_line,
                                  " is not one llama.cpp knows by name (gpt2, smollm, "
                                  "llama-bpe, qwen2, deepseek-v3); pass --pre NAME"));
}

std::string TokenContent(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

}  // namespace

// ---- names and layouts ------------------------------------------------------

const char* GgufArchName(Arch arch) {
  switch (arch) {
    case Arch::kLlama:
    case Arch::kMistral:
      return "llama";
    case Arch::kQwen2:
      return "qwen2";
    case Arch::kQwen3:
      return "qwen3";
  }
  return "llama";
}

absl::StatusOr<std::string> HfTensorName(const std::string& gguf_name) {
  if (auto hf = RenameTensor(gguf_name, kGgufNaming, kHfNaming)) return *std::move(hf);
  return absl::InvalidArgumentError(
      absl::StrCat("GGUF tensor ", gguf_name, " has no Hugging Face counterpart"));
}

absl::StatusOr<std::string> GgufTensorName(const std::string& hf_name) {
  if (auto gguf = RenameTensor(hf_name, kHfNaming, kGgufNaming)) return *std::move(gguf);
  return absl::InvalidArgumentError(
      absl::StrCat("tensor ", hf_name, " has no GGUF name (not a Llama-family weight)"));
}

absl::StatusOr<Tensor> PermuteQkRowsToGguf(const Tensor& w, int64_t n_heads) {
  return MoveQkRows(w, n_heads, /*to_gguf=*/true);
}
absl::StatusOr<Tensor> UnpermuteQkRowsFromGguf(const Tensor& w, int64_t n_heads) {
  return MoveQkRows(w, n_heads, /*to_gguf=*/false);
}

std::vector<float> Llama3RopeFreqFactors(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  if (s.type != RopeScaling::Type::kLlama3) return {};
  // convert_hf_to_gguf's generate_extra_tensors, in double as Python does.
  const double base = c.rope_theta, dim = static_cast<double>(c.head_dim);
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  std::vector<float> out;
  for (int64_t i = 0; i < c.head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(base, (2.0 * i) / dim);
    const double wavelen = 2 * M_PI / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1;
    } else if (wavelen > low_wavelen) {
      f = s.factor;
    } else {
      const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f = 1 / ((1 - smooth) / s.factor + smooth);
    }
    out.push_back(static_cast<float>(f));
  }
  return out;
}

// ---- reading ------------------------------------------------------------------

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufReader& r) {
  const std::string& where = r.path();
  ASSIGN_OR_RETURN(std::string arch, r.GetString("general.architecture"));
  ModelConfig c;
  if (arch == "llama") {
    c.arch = Arch::kLlama;
  } else if (arch == "qwen2") {
    c.arch = Arch::kQwen2;
  } else if (arch == "qwen3") {
    c.arch = Arch::kQwen3;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        where, ": general.architecture \"", arch,
        "\" is not a Llama-family architecture the engine runs (llama, qwen2, qwen3)"));
  }
  c.architecture_name = ArchClassName(c.arch);
  auto key = [&](const char* k) { return ArchKey(arch, k); };
  ASSIGN_OR_RETURN(c.num_layers, r.GetInt(key("block_count")));
  ASSIGN_OR_RETURN(c.hidden_size, r.GetInt(key("embedding_length")));
  ASSIGN_OR_RETURN(c.intermediate_size, r.GetInt(key("feed_forward_length")));
  ASSIGN_OR_RETURN(c.num_heads, r.GetInt(key("attention.head_count")));
  ASSIGN_OR_RETURN(c.num_kv_heads, IntOr(r, key("attention.head_count_kv"), c.num_heads));
  if (c.num_heads <= 0)
    return Bad(where, absl::StrCat(key("attention.head_count"), " must be positive"));
  ASSIGN_OR_RETURN(c.head_dim, IntOr(r, key("attention.key_length"), c.hidden_size / c.num_heads));
  ASSIGN_OR_RETURN(int64_t rope_dim, IntOr(r, key("rope.dimension_count"), c.head_dim));
  if (rope_dim != c.head_dim) {
    return absl::UnimplementedError(absl::StrCat(where, ": partial rotary (",
                                                 key("rope.dimension_count"), " ", rope_dim,
                                                 " < head_dim ", c.head_dim, ") is not supported"));
  }
  ASSIGN_OR_RETURN(c.rope_theta, FloatOr(r, key("rope.freq_base"), 10000.0));
  ASSIGN_OR_RETURN(c.rms_norm_eps, FloatOr(r, key("attention.layer_norm_rms_epsilon"), 1e-5));
  // Stored as f32: take the shortest decimal that rounds to the same f32
  // (1e-05f -> 1e-05, not 9.99999974737875e-06), as the config.json had it.
  c.rms_norm_eps = ShortestDecimal(static_cast<float>(c.rms_norm_eps));
  c.rope_theta = ShortestDecimal(static_cast<float>(c.rope_theta));
  ASSIGN_OR_RETURN(c.max_position_embeddings, IntOr(r, key("context_length"), 2048));

  const GgufTensorInfo* embd = r.FindTensor("token_embd.weight");
  if (embd == nullptr) return Bad(where, "missing tensor token_embd.weight");
  if (embd->dims.size() != 2) return Bad(where, "token_embd.weight must be 2-D");
  c.vocab_size = static_cast<int64_t>(embd->dims[1]);
  c.tie_word_embeddings = r.FindTensor("output.weight") == nullptr;
  c.attention_bias = r.FindTensor("blk.0.attn_q.bias") != nullptr || c.arch == Arch::kQwen2;
  c.attention_out_bias = r.FindTensor("blk.0.attn_output.bias") != nullptr;
  c.mlp_bias = r.FindTensor("blk.0.ffn_gate.bias") != nullptr;
  c.qk_norm = c.arch == Arch::kQwen3 || r.FindTensor("blk.0.attn_q_norm.weight") != nullptr;
  // The sizes are checked before the rope factors below are sized by them.
  RETURN_IF_ERROR(c.Validate(where));

  // Rope scaling: linear by metadata, llama3 by the rope_freqs tensor.
  if (const GgufValue* type = r.Find(key("rope.scaling.type")); type != nullptr) {
    ASSIGN_OR_RETURN(std::string t, type->AsString());
    if (t == "linear") {
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      ASSIGN_OR_RETURN(c.rope_scaling.factor, r.GetFloat(key("rope.scaling.factor")));
    } else if (t != "none") {
      return absl::UnimplementedError(
          absl::StrCat(where, ": ", key("rope.scaling.type"), " \"", t, "\" is not supported"));
    }
  }
  if (r.FindTensor("rope_freqs.weight") != nullptr) {
    ASSIGN_OR_RETURN(Tensor freqs, r.Get("rope_freqs.weight"));
    if (freqs.dtype() != DType::kF32 || freqs.rank() != 1 || freqs.numel() == 0) {
      return Bad(where, "rope_freqs.weight must be a non-empty 1-D F32 tensor");
    }
    std::vector<float> f(freqs.data<float>(), freqs.data<float>() + freqs.numel());
    ASSIGN_OR_RETURN(c.rope_scaling, RopeScalingFromFreqs(f, c, where));
  }

  ASSIGN_OR_RETURN(c.bos_token_id, TokenIdOrNone(r, "tokenizer.ggml.bos_token_id", c.vocab_size));
  ASSIGN_OR_RETURN(int64_t eos, TokenIdOrNone(r, "tokenizer.ggml.eos_token_id", c.vocab_size));
  if (eos >= 0) c.eos_token_ids = {eos};
  c.torch_dtype = DType::kF32;
  RETURN_IF_ERROR(c.Validate(where));
  return c;
}

absl::StatusOr<TokenizerParts> TokenizerPartsFromGguf(const GgufReader& r) {
  const std::string& where = r.path();
  ASSIGN_OR_RETURN(std::string model, r.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return absl::UnimplementedError(absl::StrCat(
        where, ": tokenizer.ggml.model \"", model,
        "\" is not supported (only \"gpt2\", byte-level BPE; \"llama\" is SentencePiece)"));
  }
  TokenizerParts p;
  ASSIGN_OR_RETURN(p.tokens, r.GetStringArray("tokenizer.ggml.tokens"));
  if (r.Find("tokenizer.ggml.merges") != nullptr) {
    ASSIGN_OR_RETURN(p.merges, r.GetStringArray("tokenizer.ggml.merges"));
  }
  if (r.Find("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, r.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != p.tokens.size()) {
      return Bad(where, absl::StrCat("tokenizer.ggml.token_type has ", types.size(),
                                     " entries, tokenizer.ggml.tokens ", p.tokens.size()));
    }
    p.token_types.assign(types.begin(), types.end());
  }
  p.pre_tokenizer = "gpt2";
  if (r.Find("tokenizer.ggml.pre") != nullptr) {
    ASSIGN_OR_RETURN(p.pre_tokenizer, r.GetString("tokenizer.ggml.pre"));
  }
  const int64_t n = static_cast<int64_t>(p.tokens.size());
  if (n > kMaxVocabSize) {
    return Bad(where, absl::StrCat("tokenizer.ggml.tokens has ", n,
                                   " entries, above the plausible maximum ", kMaxVocabSize));
  }
  ASSIGN_OR_RETURN(int64_t bos, TokenIdOrNone(r, "tokenizer.ggml.bos_token_id", n));
  ASSIGN_OR_RETURN(int64_t eos, TokenIdOrNone(r, "tokenizer.ggml.eos_token_id", n));
  p.bos_id = static_cast<int32_t>(bos);
  p.eos_id = static_cast<int32_t>(eos);
  if (r.Find("tokenizer.ggml.add_bos_token") != nullptr) {
    ASSIGN_OR_RETURN(p.add_bos, r.GetBool("tokenizer.ggml.add_bos_token"));
  }
  if (r.Find("tokenizer.ggml.add_eos_token") != nullptr) {
    ASSIGN_OR_RETURN(p.add_eos, r.GetBool("tokenizer.ggml.add_eos_token"));
  }
  return p;
}

absl::StatusOr<GgufModel> ReadGgufModel(const GgufReader& r) {
  GgufModel m;
  ASSIGN_OR_RETURN(m.config, ModelConfigFromGguf(r));
  const bool permuted = m.config.arch == Arch::kLlama;
  for (const GgufTensorInfo& info : r.tensors()) {
    if (info.name == "rope_freqs.weight") continue;  // folded into config.rope_scaling
    auto hf = HfTensorName(info.name);
    if (!hf.ok()) return Bad(r.path(), std::string(hf.status().message()));
    ASSIGN_OR_RETURN(Tensor t, r.Get(info.name));
    if (permuted) {
      int64_t layer;
      std::string rest;
      if (SplitLayer(info.name, "blk.", &layer, &rest)) {
        if (rest == "attn_q.weight" || rest == "attn_q.bias") {
          ASSIGN_OR_RETURN(t, UnpermuteQkRowsFromGguf(t, m.config.num_heads));
        } else if (rest == "attn_k.weight" || rest == "attn_k.bias") {
          ASSIGN_OR_RETURN(t, UnpermuteQkRowsFromGguf(t, m.config.num_kv_heads));
        }
      }
    }
    m.weights.emplace_back(*std::move(hf), std::move(t));
  }
  if (r.Find("tokenizer.ggml.tokens") != nullptr) {
    ASSIGN_OR_RETURN(m.tokenizer, TokenizerPartsFromGguf(r));
  }
  if (r.Find("tokenizer.chat_template") != nullptr) {
    ASSIGN_OR_RETURN(m.chat_template, r.GetString("tokenizer.chat_template"));
  }
  return m;
}

absl::StatusOr<std::unique_ptr<Transformer>> LoadGgufTransformer(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufReader> reader, GgufReader::Open(path));
  ASSIGN_OR_RETURN(GgufModel model, ReadGgufModel(*reader));
  return Transformer::FromNamedWeights(model.config, model.weights, path);
}

bool IsGgufFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  if (!in.read(magic, 4)) return false;
  return std::memcmp(magic, "GGUF", 4) == 0;
}

// ---- writing --------------------------------------------------------------------

absl::StatusOr<HfTokenizerForGguf> TokenizerPartsFromHf(const nlohmann::json& tj,
                                                        const nlohmann::json& config,
                                                        int64_t vocab_size,
                                                        const std::string& pre_override,
                                                        const std::string& source) {
  if (!tj.is_object() || !tj.contains("model") || !tj["model"].is_object()) {
    return Bad(source, "expected a tokenizer.json object with a \"model\"");
  }
  const nlohmann::json& model = tj["model"];
  const JsonFields fields(source);
  ASSIGN_OR_RETURN(std::string type, fields.String(model, "model", "type", ""));
  if (type != "BPE" || !model.contains("vocab") || !model["vocab"].is_object()) {
    return Bad(source, "only byte-level BPE tokenizers (model.type \"BPE\") convert to GGUF");
  }
  HfTokenizerForGguf out;
  TokenizerParts& p = out.parts;
  std::map<int64_t, std::string> by_id;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer()) return Bad(source, "model.vocab ids must be integers");
    by_id[it.value().get<int64_t>()] = it.key();
  }
  std::map<int64_t, bool> added;  // id -> special
  if (tj.contains("added_tokens") && tj["added_tokens"].is_array()) {
    for (size_t i = 0; i < tj["added_tokens"].size(); ++i) {
      const nlohmann::json& a = tj["added_tokens"][i];
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer()) continue;
      const std::string path = absl::StrCat("added_tokens[", i, "]");
      const int64_t id = a["id"].get<int64_t>();
      ASSIGN_OR_RETURN(by_id[id], fields.String(a, path, "content", ""));
      ASSIGN_OR_RETURN(added[id], fields.Bool(a, path, "special", false));
    }
  }
  if (!by_id.empty() && (by_id.begin()->first < 0 || by_id.rbegin()->first >= kMaxVocabSize)) {
    const int64_t id = by_id.begin()->first < 0 ? by_id.begin()->first : by_id.rbegin()->first;
    return Bad(source, absl::StrCat("token id ", id, " is outside [0, ", kMaxVocabSize, ")"));
  }
  if (vocab_size <= 0) vocab_size = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  if (!by_id.empty() && by_id.rbegin()->first >= vocab_size) {
    return Bad(source, absl::StrCat("token id ", by_id.rbegin()->first,
                                    " is outside the model's vocab_size ", vocab_size));
  }
  p.tokens.reserve(vocab_size);
  p.token_types.reserve(vocab_size);
  for (int64_t id = 0; id < vocab_size; ++id) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      p.tokens.push_back(absl::StrCat("[PAD", id, "]"));
      p.token_types.push_back(static_cast<int32_t>(GgufTokenType::kUnused));
      continue;
    }
    p.tokens.push_back(it->second);
    auto a = added.find(id);
    if (a == added.end()) {
      p.token_types.push_back(static_cast<int32_t>(GgufTokenType::kNormal));
    } else if (a->second || LooksSpecial(it->second)) {
      p.token_types.push_back(static_cast<int32_t>(GgufTokenType::kControl));
    } else {
      p.token_types.push_back(static_cast<int32_t>(GgufTokenType::kUserDefined));
    }
  }
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const auto& m : model["merges"]) {
      if (m.is_string()) {
        p.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        p.merges.push_back(absl::StrCat(m[0].get<std::string>(), " ", m[1].get<std::string>()));
      } else {
        return Bad(source, "model.merges entries must be \"a b\" or [\"a\", \"b\"]");
      }
    }
  }
  if (!pre_override.empty()) {
    RETURN_IF_ERROR(PreTokenizer::FromName(pre_override).status());
    p.pre_tokenizer = pre_override;
  } else {
    ASSIGN_OR_RETURN(p.pre_tokenizer, RecognisePre(tj, source));
  }
  // Special tokens: tokenizer_config.json names them by content.
  auto id_of = [&](const char* key) -> int32_t {
    if (!config.is_object() || !config.contains(key)) return -1;
    const std::string content = TokenContent(config[key]);
    for (const auto& [id, piece] : by_id) {
      if (piece == content && !content.empty()) return static_cast<int32_t>(id);
    }
    return -1;
  };
  p.bos_id = id_of("bos_token");
  p.eos_id = id_of("eos_token");
  out.pad_id = id_of("pad_token");
  out.unk_id = id_of("unk_token");
  if (out.unk_id < 0 && model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = model["vocab"].find(model["unk_token"].get<std::string>());
    if (it != model["vocab"].end()) out.unk_id = it->get<int32_t>();
  }
  // Whether the post-processor puts BOS first (Llama-3), unless the config says.
  if (config.is_object() && config.contains("add_bos_token") &&
      config["add_bos_token"].is_boolean()) {
    p.add_bos = config["add_bos_token"].get<bool>();
    out.has_add_bos = true;
  } else {
    auto tok = Tokenizer::FromJsonString(tj.dump(), source);
    if (tok.ok()) {
      p.add_bos = !(*tok)->prefix_ids().empty();
      if (p.add_bos && p.bos_id < 0) p.bos_id = (*tok)->prefix_ids()[0];
      out.has_add_bos = p.add_bos;
    }
  }
  return out;
}

absl::Status AddGgufModelMetadata(const ModelConfig& c, const HfTokenizerForGguf& tokenizer,
                                  const std::string& chat_template, uint32_t file_type,
                                  const std::string& model_name, GgufWriter& w) {
  const std::string arch = GgufArchName(c.arch);
  auto key = [&](const char* k) { return ArchKey(arch, k); };
  auto u32 = [](int64_t v) { return GgufValue::U32(static_cast<uint32_t>(v)); };
  w.AddMetadata("general.type", GgufValue::String("model"));
  if (!model_name.empty()) w.AddMetadata("general.name", GgufValue::String(model_name));
  w.AddMetadata(key("block_count"), u32(c.num_layers));
  w.AddMetadata(key("context_length"), u32(c.max_position_embeddings));
  w.AddMetadata(key("embedding_length"), u32(c.hidden_size));
  w.AddMetadata(key("feed_forward_length"), u32(c.intermediate_size));
  w.AddMetadata(key("attention.head_count"), u32(c.num_heads));
  w.AddMetadata(key("attention.head_count_kv"), u32(c.num_kv_heads));
  w.AddMetadata(key("rope.freq_base"), GgufValue::F32(static_cast<float>(c.rope_theta)));
  w.AddMetadata(key("attention.layer_norm_rms_epsilon"),
                GgufValue::F32(static_cast<float>(c.rms_norm_eps)));
  if (c.head_dim != c.hidden_size / c.num_heads) {
    w.AddMetadata(key("attention.key_length"), u32(c.head_dim));
    w.AddMetadata(key("attention.value_length"), u32(c.head_dim));
  }
  w.AddMetadata("general.file_type", GgufValue::U32(file_type));
  if (c.arch == Arch::kLlama || c.arch == Arch::kMistral) {
    w.AddMetadata(key("vocab_size"), u32(c.vocab_size));
    w.AddMetadata(key("rope.dimension_count"), u32(c.head_dim));
  }
  if (c.rope_scaling.type == RopeScaling::Type::kLinear) {
    w.AddMetadata(key("rope.scaling.type"), GgufValue::String("linear"));
    w.AddMetadata(key("rope.scaling.factor"),
                  GgufValue::F32(static_cast<float>(c.rope_scaling.factor)));
  }
  const TokenizerParts& p = tokenizer.parts;
  w.AddMetadata("tokenizer.ggml.model", GgufValue::String("gpt2"));
  w.AddMetadata("tokenizer.ggml.pre", GgufValue::String(p.pre_tokenizer));
  w.AddMetadata("tokenizer.ggml.tokens", GgufValue::StringArray(p.tokens));
  w.AddMetadata("tokenizer.ggml.token_type", GgufValue::I32Array(p.token_types));
  w.AddMetadata("tokenizer.ggml.merges", GgufValue::StringArray(p.merges));
  if (p.bos_id >= 0) w.AddMetadata("tokenizer.ggml.bos_token_id", u32(p.bos_id));
  if (p.eos_id >= 0) w.AddMetadata("tokenizer.ggml.eos_token_id", u32(p.eos_id));
  if (tokenizer.unk_id >= 0)
    w.AddMetadata("tokenizer.ggml.unknown_token_id", u32(tokenizer.unk_id));
  if (tokenizer.pad_id >= 0)
    w.AddMetadata("tokenizer.ggml.padding_token_id", u32(tokenizer.pad_id));
  if (tokenizer.has_add_bos)
    w.AddMetadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(p.add_bos));
  if (!chat_template.empty()) {
    w.AddMetadata("tokenizer.chat_template", GgufValue::String(chat_template));
  }
  w.AddMetadata("general.quantization_version", GgufValue::U32(2));
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::ordered_json> HfTokenizerJsonFromParts(const TokenizerParts& p) {
  using oj = nlohmann::ordered_json;
  ASSIGN_OR_RETURN(auto pre, PreTokenizerJson(p.pre_tokenizer.empty() ? "gpt2" : p.pre_tokenizer));
  if (!p.token_types.empty() && p.token_types.size() != p.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer has ", p.token_types.size(), " token types for ", p.tokens.size(), " tokens"));
  }
  if (p.bos_id >= static_cast<int64_t>(p.tokens.size()) ||
      p.eos_id >= static_cast<int64_t>(p.tokens.size())) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer's bos/eos id (", p.bos_id, ", ",
                                                   p.eos_id, ") outside the ", p.tokens.size(),
                                                   " tokens"));
  }
  BpeTokenizerJson t;
  t.normalizer = std::move(pre.second);
  t.pre_tokenizer = std::move(pre.first);
  t.ignore_merges = p.pre_tokenizer == "llama-bpe" || p.pre_tokenizer == "llama3" ||
                    p.pre_tokenizer == "llama-v3";
  for (size_t id = 0; id < p.tokens.size(); ++id) {
    const int32_t type = p.token_types.empty() ? 1 : p.token_types[id];
    if (type == static_cast<int32_t>(GgufTokenType::kUnused)) continue;
    const std::string& piece = p.tokens[id];
    if (type == static_cast<int32_t>(GgufTokenType::kControl) ||
        type == static_cast<int32_t>(GgufTokenType::kUserDefined)) {
      t.added_tokens.push_back(AddedTokenJson(
          static_cast<int64_t>(id), piece, type == static_cast<int32_t>(GgufTokenType::kControl)));
    }
    if (!t.vocab.contains(piece)) t.vocab[piece] = id;  // first occurrence wins, as in FromParts
  }
  if (p.add_bos && p.bos_id >= 0) {
    const std::string bos = p.tokens[p.bos_id];
    t.post_processor =
        oj{{"type", "TemplateProcessing"},
           {"single", oj::array({oj{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                 oj{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
           {"pair", oj::array({oj{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                               oj{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                               oj{{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                               oj{{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
           {"special_tokens", {{bos, {{"id", bos}, {"ids", {p.bos_id}}, {"tokens", {bos}}}}}}};
  } else {
    t.post_processor = ByteLevelJson(/*add_prefix_space=*/true, /*trim_offsets=*/false);
  }
  t.decoder = ByteLevelJson(/*add_prefix_space=*/true, /*trim_offsets=*/true);
  for (const std::string& m : p.merges) t.merges.push_back(m);
  return TokenizerJson(std::move(t));
}

nlohmann::ordered_json HfTokenizerConfigFromParts(const TokenizerParts& p,
                                                  const std::string& chat_template) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  out["add_prefix_space"] = false;
  auto piece = [&](int32_t id) -> nlohmann::ordered_json {
    if (id < 0 || id >= static_cast<int32_t>(p.tokens.size())) return nullptr;
    return p.tokens[id];
  };
  out["bos_token"] = piece(p.bos_id);
  if (!chat_template.empty()) out["chat_template"] = chat_template;
  out["clean_up_tokenization_spaces"] = false;
  out["eos_token"] = piece(p.eos_id);
  out["tokenizer_class"] = "PreTrainedTokenizerFast";
  return out;
}

// ---- presets ------------------------------------------------------------------------

namespace {
struct PresetInfo {
  GgufPreset preset;
  const char* name;
  uint32_t file_type;  // llama.cpp LLAMA_FTYPE
  DType base;          // type of most 2-D weights
};
constexpr PresetInfo kPresets[] = {
    {GgufPreset::kF32, "f32", 0, DType::kF32},
    {GgufPreset::kF16, "f16", 1, DType::kF16},
    {GgufPreset::kBF16, "bf16", 32, DType::kBF16},
    {GgufPreset::kQ8_0, "q8_0", 7, DType::kQ8_0},
    {GgufPreset::kQ4_0, "q4_0", 2, DType::kQ4_0},
    {GgufPreset::kQ4_1, "q4_1", 3, DType::kQ4_1},
    {GgufPreset::kQ5_0, "q5_0", 8, DType::kQ5_0},
    {GgufPreset::kQ5_1, "q5_1", 9, DType::kQ5_1},
    {GgufPreset::kQ4_K_M, "q4_k_m", 15, DType::kQ4_K},
    {GgufPreset::kQ5_K_M, "q5_k_m", 17, DType::kQ5_K},
    {GgufPreset::kQ6_K, "q6_k", 18, DType::kQ6_K},
};
const PresetInfo& InfoOf(GgufPreset p) {
  for (const auto& i : kPresets) {
    if (i.preset == p) return i;
  }
  return kPresets[0];
}

// llama.cpp's use_more_bits: the first and last eighth of the layers and
// every third one between.
bool UseMoreBits(int64_t layer, int64_t n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}
}  // namespace

absl::StatusOr<GgufPreset> ParseGgufPreset(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  for (const auto& i : kPresets) {
    if (n == i.name) return i.preset;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown GGUF type \"", name,
                   "\" (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k)"));
}

std::string GgufPresetName(GgufPreset preset) { return InfoOf(preset).name; }
uint32_t GgufFileType(GgufPreset preset) { return InfoOf(preset).file_type; }

DType GgufTensorType(GgufPreset preset, const std::string& name, const Shape& shape,
                     const ModelConfig& config) {
  const PresetInfo& info = InfoOf(preset);
  if (shape.size() < 2 || absl::EndsWith(name, "_norm.weight") || name == "rope_freqs.weight") {
    return DType::kF32;
  }
  if (info.base == DType::kF32 || info.base == DType::kF16 || info.base == DType::kBF16) {
    return info.base;
  }
  const int64_t row = shape.back();
  DType t = info.base;
  int64_t layer = -1;
  std::string rest;
  SplitLayer(name, "blk.", &layer, &rest);
  const bool is_output =
      name == "output.weight" || (config.tie_word_embeddings && name == "token_embd.weight");
  const bool mixed = preset == GgufPreset::kQ4_K_M || preset == GgufPreset::kQ5_K_M;
  if (is_output) {
    if (t != DType::kQ8_0) t = row % DTypeBlockElems(t) != 0 ? DType::kQ8_0 : DType::kQ6_K;
  } else if (mixed && (rest == "attn_v.weight" || rest == "ffn_down.weight") &&
             UseMoreBits(layer, config.num_layers)) {
    t = DType::kQ6_K;
  }
  if (row % DTypeBlockElems(t) != 0) {
    // llama.cpp's fallbacks for rows that are not whole super-blocks.
    switch (t) {
      case DType::kQ4_K:
        t = DType::kQ5_0;
        break;
      case DType::kQ5_K:
        t = DType::kQ5_1;
        break;
      case DType::kQ6_K:
        t = DType::kQ8_0;
        break;
      default:
        break;
    }
    if (row % DTypeBlockElems(t) != 0) t = DType::kF16;
  }
  return t;
}

}  // namespace retort
