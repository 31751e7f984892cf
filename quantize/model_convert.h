// Converting a model between the formats runtimes load (`retort convert`,
// and `retort quantize --to gguf`):
//   HF directory -> GGUF: the metadata, tensor names, llama q/k row order and
//     per-tensor types of llama.cpp's convert_hf_to_gguf + llama-quantize,
//     block types optionally weighted by an importance matrix;
//   GGUF -> HF directory: weights dequantized, q/k rows back in HF order,
//     config.json, tokenizer.json rebuilt from the GGUF vocabulary,
//     tokenizer_config.json with the chat template;
//   quantized HF checkpoint (compressed-tensors, GPTQ, AWQ, DeepSeek-V3/R1 FP8
//     blocks) -> plain HF directory.
// The input is memory-mapped; only the converted output is held (a tensor
// already in the target type is written straight from the mapping).
#ifndef RETORT_QUANTIZE_MODEL_CONVERT_H_
#define RETORT_QUANTIZE_MODEL_CONVERT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/progress.h"
#include "model/gguf_model.h"

namespace retort::quant {

struct ConvertStats {
  int64_t tensors = 0;
  int64_t params = 0;
  uint64_t bytes = 0;
};

// Column importance for a GGUF tensor name (empty: none known).
using ImportanceFor = std::function<std::vector<float>(const std::string& gguf_name)>;

enum class ConvertTarget { kGguf, kHf };

struct ConvertOptions {
  std::string in, out;
  ConvertTarget to = ConvertTarget::kGguf;
  // To GGUF:
  GgufPreset preset = GgufPreset::kF16;
  std::string pre;           // tokenizer.ggml.pre (empty: recognised from tokenizer.json)
  std::string name;          // general.name (empty: the input folder's name)
  bool verbose = false;      // a log line per tensor
  ImportanceFor importance;  // block types weighted by it where it knows the tensor
  // To HF: the weights' dtype (f32, bf16, f16; "auto": the GGUF's float type
  // throughout, else bf16).
  std::string dtype = "auto";
};

// Whether `path` is a GGUF file (the format ConvertModel's input is in).
bool IsGgufInput(const std::string& path);

// Converts options.in to options.out (a GGUF written atomically, or an HF
// directory). To kHf from a directory: the directory must be a quantized
// checkpoint. Notes and --verbose lines go to `progress`.
absl::StatusOr<ConvertStats> ConvertModel(const ConvertOptions& options, ProgressSink& progress);

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_MODEL_CONVERT_H_
