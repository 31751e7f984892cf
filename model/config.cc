#include "model/config.h"

#include <cmath>
#include <exception>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/config_limits.h"

namespace retort {
namespace {

using json = nlohmann::json;

struct ArchInfo {
  Arch arch;
  const char* class_name;
  const char* model_type;
};
constexpr ArchInfo kArchs[] = {
    {Arch::kLlama, "LlamaForCausalLM", "llama"},
    {Arch::kQwen2, "Qwen2ForCausalLM", "qwen2"},
    {Arch::kQwen3, "Qwen3ForCausalLM", "qwen3"},
    {Arch::kMistral, "MistralForCausalLM", "mistral"},
};

const ArchInfo& Info(Arch a) {
  for (const auto& i : kArchs) {
    if (i.arch == a) return i;
  }
  return kArchs[0];
}

// Field readers: absent or null -> `fallback` (or an error when required).
class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  absl::Status Error(const std::string& field, const std::string& problem) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field \"", field, "\" ", problem));
  }
  bool Present(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  absl::StatusOr<int64_t> Int(const char* key, std::optional<int64_t> fallback) const {
    if (!Present(key)) {
      if (fallback) return *fallback;
      return Error(key, "is missing");
    }
    return IntValue(j_.at(key), key);
  }
  absl::StatusOr<int64_t> IntValue(const json& v, const std::string& key) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::floor(d) == d && std::abs(d) < 9e18) return static_cast<int64_t>(d);
    }
    return Error(key, absl::StrCat("must be an integer, got ", v.dump()));
  }
  absl::StatusOr<double> Double(const json& obj, const char* key, double fallback) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
    const json& v = obj.at(key);
    if (!v.is_number()) return Error(key, absl::StrCat("must be a number, got ", v.dump()));
    return v.get<double>();
  }
  absl::StatusOr<double> Double(const char* key, double fallback) const {
    return Double(j_, key, fallback);
  }
  absl::StatusOr<bool> Bool(const char* key, bool fallback) const {
    if (!Present(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_boolean()) return Error(key, absl::StrCat("must be true or false, got ", v.dump()));
    return v.get<bool>();
  }
  absl::StatusOr<std::string> String(const char* key, const std::string& fallback) const {
    if (!Present(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_string()) return Error(key, absl::StrCat("must be a string, got ", v.dump()));
    return v.get<std::string>();
  }

 private:
  const json& j_;
  const std::string& source_;
};

absl::StatusOr<DType> ParseTorchDType(const std::string& s, const Reader& r, const char* key) {
  if (s == "float32" || s == "float") return DType::kF32;
  if (s == "bfloat16") return DType::kBF16;
  if (s == "float16" || s == "half") return DType::kF16;
  return r.Error(key, absl::StrCat("has unsupported dtype \"", s,
                                   "\" (expected float32, bfloat16 or float16)"));
}

const char* TorchDTypeName(DType t) {
  switch (t) {
    case DType::kBF16:
      return "bfloat16";
    case DType::kF16:
      return "float16";
    default:
      return "float32";
  }
}

absl::Status ParseRope(const json& j, const Reader& r, ModelConfig& c) {
  // transformers 5 keeps theta and scaling in "rope_parameters"; 4 uses
  // top-level "rope_theta" and an optional "rope_scaling".
  const json* params = nullptr;
  const char* params_key = "rope_scaling";
  if (j.contains("rope_parameters") && j.at("rope_parameters").is_object()) {
    params = &j.at("rope_parameters");
    params_key = "rope_parameters";
  } else if (j.contains("rope_scaling") && j.at("rope_scaling").is_object()) {
    params = &j.at("rope_scaling");
  } else if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null()) {
    return r.Error("rope_scaling", "must be an object or null");
  }
  ASSIGN_OR_RETURN(c.rope_theta, r.Double("rope_theta", 10000.0));
  if (params == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(c.rope_theta, r.Double(*params, "rope_theta", c.rope_theta));
  std::string type;
  if (params->contains("rope_type") && params->at("rope_type").is_string()) {
    type = params->at("rope_type").get<std::string>();
  } else if (params->contains("type") && params->at("type").is_string()) {
    type = params->at("type").get<std::string>();
  } else {
    type = "default";
  }
  RopeScaling& s = c.rope_scaling;
  if (type == "default") {
    s.type = RopeScaling::Type::kNone;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(s.factor, r.Double(*params, "factor", 0.0));
  if (!(s.factor > 0))
    return r.Error(params_key, absl::StrCat("type ", type, " needs a positive \"factor\""));
  if (type == "linear") {
    s.type = RopeScaling::Type::kLinear;
    return absl::OkStatus();
  }
  if (type == "llama3") {
    s.type = RopeScaling::Type::kLlama3;
    ASSIGN_OR_RETURN(s.low_freq_factor, r.Double(*params, "low_freq_factor", 1.0));
    ASSIGN_OR_RETURN(s.high_freq_factor, r.Double(*params, "high_freq_factor", 4.0));
    ASSIGN_OR_RETURN(double orig, r.Double(*params, "original_max_position_embeddings", 8192.0));
    s.original_max_position_embeddings = static_cast<int64_t>(orig);
    if (!(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0) || orig <= 0) {
      return r.Error(params_key,
                     "llama3 needs 0 < low_freq_factor < high_freq_factor and a positive "
                     "original_max_position_embeddings");
    }
    return absl::OkStatus();
  }
  return r.Error(params_key,
                 absl::StrCat("has rope type \"", type,
                              "\", which is not supported (supported: default, linear, llama3)"));
}

absl::StatusOr<ModelConfig> Parse(const json& j, const std::string& source) {
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  Reader r(j, source);
  ModelConfig c;

  // Architecture: "architectures"[0], else "model_type".
  std::string arch_name;
  if (j.contains("architectures") && j.at("architectures").is_array() &&
      !j.at("architectures").empty() && j.at("architectures")[0].is_string()) {
    arch_name = j.at("architectures")[0].get<std::string>();
  } else {
    ASSIGN_OR_RETURN(arch_name, r.String("model_type", ""));
    if (arch_name.empty())
      return r.Error("architectures", "is missing (and there is no model_type)");
  }
  auto arch = ParseArch(arch_name);
  if (!arch.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": unsupported architecture \"", arch_name,
                     "\" (supported: LlamaForCausalLM, Qwen2ForCausalLM, "
                     "Qwen3ForCausalLM, MistralForCausalLM)"));
  }
  c.arch = *arch;
  c.architecture_name = ArchClassName(c.arch);

  // quantization_config (compressed-tensors, GPTQ, AWQ, FP8) is read by
  // Transformer::Load through formats/compressed_tensors.h, not here.
  ASSIGN_OR_RETURN(std::string act, r.String("hidden_act", "silu"));
  if (act != "silu" && act != "swish") {
    return r.Error("hidden_act", absl::StrCat("is \"", act, "\"; only silu (SwiGLU) is supported"));
  }

  ASSIGN_OR_RETURN(c.vocab_size, r.Int("vocab_size", std::nullopt));
  ASSIGN_OR_RETURN(c.hidden_size, r.Int("hidden_size", std::nullopt));
  ASSIGN_OR_RETURN(c.intermediate_size, r.Int("intermediate_size", std::nullopt));
  ASSIGN_OR_RETURN(c.num_layers, r.Int("num_hidden_layers", std::nullopt));
  ASSIGN_OR_RETURN(c.num_heads, r.Int("num_attention_heads", std::nullopt));
  ASSIGN_OR_RETURN(c.num_kv_heads, r.Int("num_key_value_heads", c.num_heads));
  bool explicit_head_dim = r.Present("head_dim");
  std::optional<int64_t> default_head_dim;
  if (c.arch == Arch::kQwen3) {
    default_head_dim = 128;  // Qwen3Config's default
  } else if (c.num_heads > 0) {
    default_head_dim = c.hidden_size / c.num_heads;
  }
  ASSIGN_OR_RETURN(c.head_dim, r.Int("head_dim", default_head_dim));
  if (!explicit_head_dim && c.arch != Arch::kQwen3 && c.num_heads > 0 &&
      c.hidden_size % c.num_heads != 0) {
    return r.Error("hidden_size",
                   absl::StrCat("(", c.hidden_size, ") is not divisible by num_attention_heads (",
                                c.num_heads, ") and no head_dim is given"));
  }
  ASSIGN_OR_RETURN(c.rms_norm_eps, r.Double("rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.max_position_embeddings, r.Int("max_position_embeddings", 2048));
  ASSIGN_OR_RETURN(c.initializer_range, r.Double("initializer_range", 0.02));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  // Before anything below loops or allocates over num_hidden_layers.
  RETURN_IF_ERROR(CheckPlausibleSizes(c, source));
  RETURN_IF_ERROR(ParseRope(j, r, c));

  ASSIGN_OR_RETURN(bool attention_bias, r.Bool("attention_bias", false));
  ASSIGN_OR_RETURN(bool mlp_bias, r.Bool("mlp_bias", false));
  switch (c.arch) {
    case Arch::kLlama:
      c.attention_bias = c.attention_out_bias = attention_bias;
      c.mlp_bias = mlp_bias;
      break;
    case Arch::kMistral:
      break;  // MistralAttention has no biases
    case Arch::kQwen2:
      c.attention_bias = true;  // Qwen2Attention: q/k/v always biased, o never
      break;
    case Arch::kQwen3:
      c.attention_bias = c.attention_out_bias = attention_bias;
      c.qk_norm = true;
      break;
  }

  // Sliding windows.
  if (c.arch == Arch::kMistral) {
    ASSIGN_OR_RETURN(c.sliding_window, r.Int("sliding_window", 0));
    if (c.sliding_window > 0) c.sliding_layers.assign(c.num_layers, true);
  } else if (c.arch == Arch::kQwen2 || c.arch == Arch::kQwen3) {
    ASSIGN_OR_RETURN(bool use_sliding, r.Bool("use_sliding_window", false));
    if (use_sliding) {
      ASSIGN_OR_RETURN(c.sliding_window, r.Int("sliding_window", std::nullopt));
      if (j.contains("layer_types") && j.at("layer_types").is_array()) {
        const json& lt = j.at("layer_types");
        if (static_cast<int64_t>(lt.size()) != c.num_layers) {
          return r.Error("layer_types",
                         absl::StrCat("has ", lt.size(),
                                      " entries, expected num_hidden_layers = ", c.num_layers));
        }
        for (const json& t : lt)
          c.sliding_layers.push_back(t.is_string() && t.get<std::string>() == "sliding_attention");
      } else {
        ASSIGN_OR_RETURN(int64_t max_window_layers, r.Int("max_window_layers", c.num_layers));
        for (int64_t l = 0; l < c.num_layers; ++l)
          c.sliding_layers.push_back(l >= max_window_layers);
      }
    }
  }

  ASSIGN_OR_RETURN(c.bos_token_id, r.Int("bos_token_id", -1));
  if (r.Present("eos_token_id")) {
    const json& e = j.at("eos_token_id");
    if (e.is_array()) {
      for (const json& v : e) {
        ASSIGN_OR_RETURN(int64_t id, r.IntValue(v, "eos_token_id"));
        c.eos_token_ids.push_back(id);
      }
    } else {
      ASSIGN_OR_RETURN(int64_t id, r.IntValue(e, "eos_token_id"));
      c.eos_token_ids.push_back(id);
    }
  }
  const char* dtype_key = r.Present("torch_dtype") ? "torch_dtype" : "dtype";
  ASSIGN_OR_RETURN(std::string dtype, r.String(dtype_key, "float32"));
  ASSIGN_OR_RETURN(c.torch_dtype, ParseTorchDType(dtype, r, dtype_key));

  RETURN_IF_ERROR(c.Validate(source));
  return c;
}

}  // namespace

const char* ArchClassName(Arch arch) { return Info(arch).class_name; }
const char* ArchModelType(Arch arch) { return Info(arch).model_type; }

absl::StatusOr<Arch> ParseArch(const std::string& name) {
  for (const auto& i : kArchs) {
    if (name == i.class_name || name == i.model_type) return i.arch;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported architecture \"", name,
      "\" (supported: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM)"));
}

absl::Status CheckPlausibleSizes(const ModelConfig& c, const std::string& source) {
  struct Bound {
    const char* name;
    int64_t value, max;
  };
  for (const Bound& b :
       {Bound{"vocab_size", c.vocab_size, kMaxVocabSize},
        Bound{"hidden_size", c.hidden_size, kMaxHiddenSize},
        Bound{"intermediate_size", c.intermediate_size, kMaxIntermediateSize},
        Bound{"num_hidden_layers", c.num_layers, kMaxLayers},
        Bound{"num_attention_heads", c.num_heads, kMaxHeads},
        Bound{"num_key_value_heads", c.num_kv_heads, kMaxHeads},
        Bound{"head_dim", c.head_dim, kMaxHeadDim},
        Bound{"max_position_embeddings", c.max_position_embeddings, kMaxContextLength}}) {
    if (b.value > b.max) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", b.name, "\" is ",
                                                     b.value, ", above the plausible maximum ",
                                                     b.max, " (refused before allocating)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelConfig::Validate(const std::string& source) const {
  auto err = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", msg));
  };
  RETURN_IF_ERROR(CheckPlausibleSizes(*this, source));
  struct Positive {
    const char* name;
    int64_t value;
  };
  for (const Positive& p :
       {Positive{"vocab_size", vocab_size}, Positive{"hidden_size", hidden_size},
        Positive{"intermediate_size", intermediate_size}, Positive{"num_hidden_layers", num_layers},
        Positive{"num_attention_heads", num_heads}, Positive{"num_key_value_heads", num_kv_heads},
        Positive{"head_dim", head_dim},
        Positive{"max_position_embeddings", max_position_embeddings}}) {
    if (p.value <= 0)
      return err(absl::StrCat("field \"", p.name, "\" must be positive, got ", p.value));
  }
  if (vocab_size > (int64_t{1} << 31) - 1)
    return err(absl::StrCat("vocab_size ", vocab_size, " does not fit int32 token ids"));
  if (num_heads % num_kv_heads != 0) {
    return err(absl::StrCat("num_attention_heads (", num_heads,
                            ") is not divisible by num_key_value_heads (", num_kv_heads, ")"));
  }
  if (head_dim % 2 != 0)
    return err(absl::StrCat("head_dim (", head_dim, ") must be even for RoPE"));
  if (!(rope_theta > 0)) return err("rope_theta must be positive");
  if (!(rms_norm_eps > 0)) return err("rms_norm_eps must be positive");
  if (!sliding_layers.empty()) {
    if (static_cast<int64_t>(sliding_layers.size()) != num_layers)
      return err("sliding_layers must have one entry per layer");
    if (sliding_window <= 0)
      return err("field \"sliding_window\" must be positive when sliding-window attention is on");
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const nlohmann::json& json,
                                                  const std::string& source_name) {
  try {
    return Parse(json, source_name);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ": ", e.what()));
  }
}

nlohmann::json ModelConfig::ToJson() const {
  json j;
  j["architectures"] = json::array({ArchClassName(arch)});
  j["model_type"] = ArchModelType(arch);
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = rms_norm_eps;
  j["max_position_embeddings"] = max_position_embeddings;
  j["initializer_range"] = initializer_range;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["rope_theta"] = rope_theta;
  switch (rope_scaling.type) {
    case RopeScaling::Type::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::Type::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope_scaling.factor}};
      break;
    case RopeScaling::Type::kLlama3:
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", rope_scaling.factor},
          {"low_freq_factor", rope_scaling.low_freq_factor},
          {"high_freq_factor", rope_scaling.high_freq_factor},
          {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
      break;
  }
  switch (arch) {
    case Arch::kLlama:
      j["attention_bias"] = attention_bias;
      j["mlp_bias"] = mlp_bias;
      break;
    case Arch::kQwen3:
      j["attention_bias"] = attention_bias;
      [[fallthrough]];
    case Arch::kQwen2: {
      bool any = false;
      for (bool b : sliding_layers) any = any || b;
      j["use_sliding_window"] = any;
      j["sliding_window"] = any ? json(sliding_window) : json(nullptr);
      if (any) {
        json types = json::array();
        for (bool b : sliding_layers) types.push_back(b ? "sliding_attention" : "full_attention");
        j["layer_types"] = types;
      }
      break;
    }
    case Arch::kMistral:
      j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
      break;
  }
  j["bos_token_id"] = bos_token_id >= 0 ? json(bos_token_id) : json(nullptr);
  if (eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else {
    j["eos_token_id"] = eos_token_ids;
  }
  j["torch_dtype"] = TorchDTypeName(torch_dtype);
  j["use_cache"] = true;
  return j;
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  int64_t attn = hidden_size * q + 2 * hidden_size * kv + q * hidden_size;
  if (attention_bias) attn += q + 2 * kv;
  if (attention_out_bias) attn += hidden_size;
  if (qk_norm) attn += 2 * head_dim;
  int64_t mlp = 3 * hidden_size * intermediate_size;
  if (mlp_bias) mlp += 2 * intermediate_size + hidden_size;
  const int64_t layer = attn + mlp + 2 * hidden_size;
  const int64_t embed = vocab_size * hidden_size;
  return embed * (tie_word_embeddings ? 1 : 2) + num_layers * layer + hidden_size;
}

}  // namespace retort
