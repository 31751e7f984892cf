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

// Random-initialises a model of `config` (see Transformer::RandomInit) with
// weights in `dtype` and writes config.json + safetensors into `dir` (created
// if missing; atomic files). Loadable by transformers' from_pretrained.
absl::Status InitModelDirectory(const ModelConfig& config, const std::string& dir, uint64_t seed,
                                DType dtype);

}  // namespace retort

#endif  // RETORT_MODEL_INIT_H_
