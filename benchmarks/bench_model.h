// The model an end-to-end benchmark program runs on (their flags and output:
// bench_flags.h, bench_output.h).
#ifndef RETORT_BENCHMARKS_BENCH_MODEL_H_
#define RETORT_BENCHMARKS_BENCH_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "benchmarks/bench_flags.h"
#include "core/dtype.h"
#include "model/transformer.h"

namespace retort {

// The flags that pick the model; a program's flags struct derives from it.
struct BenchModelFlags {
  std::string family = "llama", size = "100m", dtype = "bf16";
  std::string model;  // a file or folder; empty: the family/size preset
};

// Declares --family, --size, --dtype and --model on `args`, bound to `*flags`
// (defaults: its current values).
void AddBenchModelFlags(BenchArgs& args, BenchModelFlags* flags);

// `model_path` (an HF directory or a .gguf file) when not empty, else a
// random `family`/`size` preset with weights in `dtype_name` (f32, f16,
// otherwise bf16). For a loaded model, `family` becomes the path, `size` "",
// and `dtype_name` / *dtype the type of its largest layer weight (what decode
// mostly streams); for a preset *dtype is the weight type.
absl::StatusOr<std::unique_ptr<Transformer>> LoadBenchModel(const std::string& model_path,
                                                            std::string* family, std::string* size,
                                                            std::string* dtype_name, DType* dtype);

}  // namespace retort

#endif  // RETORT_BENCHMARKS_BENCH_MODEL_H_
