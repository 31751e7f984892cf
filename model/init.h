// Random-initialised models: size presets per family and writing one out as
// an HF directory (what `retort init` does).
#ifndef RETORT_MODEL_INIT_H_
#define RETORT_MODEL_INIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "model/config.h"

namespace retort {

// Size names PresetConfig accepts, smallest first: tiny (~0.1M, for tests),
// 20m, 100m, 350m, 1b (parameter counts with the default 32000-token vocab and
// tied embeddings).
std::vector<std::string> PresetSizes();

// A config of `family` (llama, qwen2, qwen3, mistral; the class names
// LlamaForCausalLM, ... are accepted too) and `size` (see PresetSizes). Family
// conventions follow the real models: qwen2 has q/k/v biases, qwen3 q/k norm,
// llama rope_theta 500000, qwen 1e6. vocab_size is 32000 (512 for tiny):
// set config.vocab_size (and bos/eos) to match the tokenizer the model will
// be trained with. Error naming the unknown family or size.
absl::StatusOr<ModelConfig> PresetConfig(const std::string& family, const std::string& size);

// Changes to a preset's shape (`retort init --hidden ...`); 0 = keep the
// preset's value.
struct SizeOverrides {
  int64_t hidden = 0;        // hidden_size
  int64_t layers = 0;        // num_hidden_layers
  int64_t heads = 0;         // num_attention_heads
  int64_t kv_heads = 0;      // num_key_value_heads
  int64_t intermediate = 0;  // intermediate_size
  int64_t context = 0;       // max_position_embeddings
  double rope_theta = 0;     // RoPE base (the presets use the family's: 500000 for llama)
};

// Applies `overrides` to *config. head_dim becomes hidden / heads whenever
// hidden or heads is overridden; kv_heads, when not given, stays the
// preset's if it still divides heads, else becomes heads (plain multi-head
// attention). InvalidArgument naming the option when a value is negative,
// hidden is not a multiple of heads, heads not a multiple of kv_heads, or the
// head size is odd (RoPE); *config is unchanged then.
absl::Status ApplySizeOverrides(const SizeOverrides& overrides, ModelConfig* config);

// Random-initialises a model of `config` (see Transformer::RandomInit) with
// weights in `dtype` and writes config.json + safetensors into `dir` (created
// if missing; atomic files). Loadable by transformers' from_pretrained.
absl::Status InitModelDirectory(const ModelConfig& config, const std::string& dir, uint64_t seed,
                                DType dtype);

// `retort init`: a model of `config` initialised with `seed`, in `dtype`,
// with a tokenizer ("bytes": the built-in byte-level one with ChatML; else a
// tokenizer.json or model directory whose tokenizer files are copied and
// whose vocabulary and BOS/EOS ids the config takes), written to `out` under a
// temporary name and renamed into place. `out` may exist only as an empty
// folder, unless `force`.
absl::Status WriteInitialModel(const std::string& out, ModelConfig config,
                               const std::string& tokenizer_src, DType dtype, uint64_t seed,
                               bool force);

}  // namespace retort

#endif  // RETORT_MODEL_INIT_H_
