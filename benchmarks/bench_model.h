// The model an end-to-end benchmark program runs on (their flags and output:
// bench_flags.h, bench_output.h).
#ifndef RETORT_BENCHMARKS_BENCH_MODEL_H_
#define RETORT_BENCHMARKS_BENCH_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "benchmarks/bench_flags.h"
#include "core/dtype.h"
#include "model/config.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace retort {

// The flags that pick the model; a program's flags struct derives from it.
struct BenchModelFlags {
  std::string family = "llama", size = "100m", dtype = "bf16";
  std::string model;  // a file or folder; empty: the family/size preset
};

// Declares --family, --size, --dtype and --model on `args`, bound to `*flags`
// (defaults: its current values).
void AddBenchModelFlags(BenchArgs& args, BenchModelFlags* flags);

// flags->model (an HF directory or a .gguf file) when not empty, else a
// random flags->family / flags->size preset with weights in flags->dtype
// (f32, f16, otherwise bf16). For a loaded model, family becomes the path,
// size "", and flags->dtype / *dtype the type of its largest layer weight
// (what decode mostly streams); for a preset *dtype is the weight type
// (`dtype` may be null). Null, after printing the error on stderr, when the
// model cannot be had.
std::unique_ptr<Transformer> LoadBenchModel(BenchModelFlags* flags, DType* dtype = nullptr);

// The "model" object of the programs' JSON: family, size, dtype (as
// LoadBenchModel left them), parameters and `weight_bytes`.
nlohmann::ordered_json BenchModelJson(const BenchModelFlags& flags, const ModelConfig& config,
                                      size_t weight_bytes);

}  // namespace retort

#endif  // RETORT_BENCHMARKS_BENCH_MODEL_H_
