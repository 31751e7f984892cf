#include "benchmarks/bench_model.h"

#include <iostream>
#include <utility>

#include "model/gguf_model.h"
#include "model/init.h"

namespace retort {

void AddBenchModelFlags(BenchArgs& args, BenchModelFlags* flags) {
  args.Add()("family", po::value(&flags->family)->default_value(flags->family), "preset family")(
      "size", po::value(&flags->size)->default_value(flags->size), "preset size")(
      "dtype", po::value(&flags->dtype)->default_value(flags->dtype),
      "preset weight type: f32, f16, otherwise bf16")(
      "model", po::value(&flags->model),
      "a real model (HF directory or .gguf file) instead of a preset");
}

namespace {

absl::StatusOr<std::unique_ptr<Transformer>> LoadModel(BenchModelFlags* flags, DType* dtype) {
  const std::string& model_path = flags->model;
  *dtype = flags->dtype == "f32" ? DType::kF32 : flags->dtype == "f16" ? DType::kF16 : DType::kBF16;
  if (model_path.empty()) {
    auto config = PresetConfig(flags->family, flags->size);
    if (!config.ok()) return config.status();
    return Transformer::RandomInit(*config, 1, *dtype);
  }
  const bool gguf = model_path.size() > 5 && model_path.substr(model_path.size() - 5) == ".gguf";
  auto model = gguf ? LoadGgufTransformer(model_path) : Transformer::Load(model_path);
  if (!model.ok()) return model.status();
  for (const auto& [name, t] : (*model)->NamedWeights()) {
    if (name.find("mlp.down_proj.weight") != std::string::npos) *dtype = t.dtype();
  }
  flags->family = model_path;
  flags->size = "";
  flags->dtype = std::string(DTypeName(*dtype));
  return model;
}

}  // namespace

std::unique_ptr<Transformer> LoadBenchModel(BenchModelFlags* flags, DType* dtype) {
  DType weight_dtype;
  absl::StatusOr<std::unique_ptr<Transformer>> model = LoadModel(flags, &weight_dtype);
  if (dtype != nullptr) *dtype = weight_dtype;
  if (model.ok()) return std::move(*model);
  std::cerr << model.status() << "\n";
  return nullptr;
}

nlohmann::ordered_json BenchModelJson(const BenchModelFlags& flags, const ModelConfig& config,
                                      size_t weight_bytes) {
  return {{"family", flags.family},
          {"size", flags.size},
          {"dtype", flags.dtype},
          {"parameters", config.ParameterCount()},
          {"weight_bytes", weight_bytes}};
}

}  // namespace retort
