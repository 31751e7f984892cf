// What the end-to-end benchmark programs share: the model they run on and
// where their JSON goes.
#ifndef RETORT_BENCHMARKS_BENCH_MODEL_H_
#define RETORT_BENCHMARKS_BENCH_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace retort {

// `model_path` (an HF directory or a .gguf file) when not empty, else a
// random `family`/`size` preset with weights in `dtype_name` (f32, f16,
// otherwise bf16). For a loaded model, `family` becomes the path, `size` "",
// and `dtype_name` / *dtype the type of its largest layer weight (what decode
// mostly streams); for a preset *dtype is the weight type.
absl::StatusOr<std::unique_ptr<Transformer>> LoadBenchModel(const std::string& model_path,
                                                           std::string* family, std::string* size,
                                                           std::string* dtype_name, DType* dtype);

// Prints `out` (indent 2) and, when `path` is not empty, writes it there too.
void EmitBenchJson(const nlohmann::json& out, const std::string& path);

}  // namespace retort

#endif  // RETORT_BENCHMARKS_BENCH_MODEL_H_
