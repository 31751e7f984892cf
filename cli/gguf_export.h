// HF directory -> GGUF file with llama.cpp's names, layouts, metadata and
// per-tensor types (`retort convert`, and `retort quantize` with k-quants and
// an importance matrix).
#ifndef RETORT_CLI_GGUF_EXPORT_H_
#define RETORT_CLI_GGUF_EXPORT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/gguf_model.h"

namespace retort::cli {

struct ConvertStats {
  int64_t tensors = 0;
  int64_t params = 0;
  uint64_t bytes = 0;
};

// Column importance for a GGUF tensor name (empty: none known).
using ImportanceFor = std::function<std::vector<float>(const std::string& gguf_name)>;

// Converts the HF directory `in` into the GGUF file `out` (written
// atomically). Block-quantized tensors are encoded with `importance`'s
// column weights when it is set and knows the tensor.
absl::StatusOr<ConvertStats> HfToGguf(const std::string& in, const std::string& out,
                                      GgufPreset preset, const std::string& pre,
                                      const std::string& name, bool verbose,
                                      const ImportanceFor& importance = nullptr);

}  // namespace retort::cli

#endif  // RETORT_CLI_GGUF_EXPORT_H_
