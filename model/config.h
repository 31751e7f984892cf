// ModelConfig: the shape and conventions of a Llama-family decoder, read from
// (and written back to) a Hugging Face config.json.
//
// Supported architectures: LlamaForCausalLM, MistralForCausalLM,
// Qwen2ForCausalLM, Qwen3ForCausalLM. Family conventions that change the math
// are explicit fields rather than implied by the architecture:
//   * which projections carry a bias (Qwen2: q/k/v always; Llama/Qwen3:
//     "attention_bias" means q/k/v/o; Llama "mlp_bias": gate/up/down),
//   * qk_norm (Qwen3's per-head RMSNorm of q and k before RoPE),
//   * head_dim (may differ from hidden/heads: Qwen3, some Mistrals),
//   * RoPE theta and scaling (llama3 / linear), always the half-rotated layout,
//   * tied embeddings (lm_head reuses embed_tokens),
//   * per-layer sliding windows (Mistral, Qwen2/3 with use_sliding_window).
// Both config.json spellings are read: transformers 4 ("rope_theta" +
// "rope_scaling", "torch_dtype") and 5 ("rope_parameters", "dtype").
#ifndef RETORT_MODEL_CONFIG_H_
#define RETORT_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "nlohmann/json.hpp"

namespace retort {

enum class Arch { kLlama, kQwen2, kQwen3, kMistral };

// "LlamaForCausalLM", ...; and the config's "model_type" ("llama", ...).
const char* ArchClassName(Arch arch);
const char* ArchModelType(Arch arch);
// Accepts a class name ("Qwen2ForCausalLM") or a model_type ("qwen2") or a
// family name ("llama"); error listing the supported ones otherwise.
absl::StatusOr<Arch> ParseArch(const std::string& name);

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string architecture_name = "LlamaForCausalLM";

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;

  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 2048;
  double initializer_range = 0.02;

  bool tie_word_embeddings = false;
  bool attention_bias = false;      // q/k/v projections have a bias
  bool attention_out_bias = false;  // o_proj has a bias
  bool mlp_bias = false;            // gate/up/down have a bias
  bool qk_norm = false;             // Qwen3: RMSNorm over head_dim on q and k

  // Sliding-window attention: window size, and per layer whether it applies
  // (empty: no layer slides). Query i sees key j iff i - j < window.
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;

  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // config.json allows an int or a list
  DType torch_dtype = DType::kF32;     // dtype the checkpoint says it is stored in

  // Parses a config.json object. Errors are one line naming `source_name`
  // (usually the config.json path) and the field: unknown architecture,
  // missing or non-numeric field, sizes that do not divide, unsupported
  // rope_scaling or hidden_act, quantized checkpoints.
  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& json,
                                              const std::string& source_name);

  // A config.json transformers 4 and 5 both load (transformers 4 spelling).
  nlohmann::json ToJson() const;

  // Checks the invariants FromJson enforces (for configs built in code).
  absl::Status Validate(const std::string& source_name = "config") const;

  // Window of layer `layer` (0: full causal attention).
  int64_t WindowOf(int64_t layer) const {
    return layer < static_cast<int64_t>(sliding_layers.size()) && sliding_layers[layer]
               ? sliding_window
               : 0;
  }

  // Number of parameters (tied embeddings counted once).
  int64_t ParameterCount() const;
};

}  // namespace retort

#endif  // RETORT_MODEL_CONFIG_H_
