#include "benchmarks/bench_model.h"

#include <fstream>
#include <iostream>

#include "model/gguf_model.h"
#include "model/init.h"

namespace retort {

absl::StatusOr<std::unique_ptr<Transformer>> LoadBenchModel(const std::string& model_path,
                                                           std::string* family, std::string* size,
                                                           std::string* dtype_name, DType* dtype) {
  *dtype = *dtype_name == "f32"   ? DType::kF32
           : *dtype_name == "f16" ? DType::kF16
                                  : DType::kBF16;
  if (model_path.empty()) {
    auto config = PresetConfig(*family, *size);
    if (!config.ok()) return config.status();
    return Transformer::RandomInit(*config, 1, *dtype);
  }
  const bool gguf =
      model_path.size() > 5 && model_path.substr(model_path.size() - 5) == ".gguf";
  auto model = gguf ? LoadGgufTransformer(model_path) : Transformer::Load(model_path);
  if (!model.ok()) return model.status();
  for (const auto& [name, t] : (*model)->NamedWeights()) {
    if (name.find("mlp.down_proj.weight") != std::string::npos) *dtype = t.dtype();
  }
  *family = model_path;
  *size = "";
  *dtype_name = std::string(DTypeName(*dtype));
  return model;
}

void EmitBenchJson(const nlohmann::json& out, const std::string& path) {
  std::cout << out.dump(2) << "\n";
  if (!path.empty()) std::ofstream(path) << out.dump(2) << "\n";
}

}  // namespace retort
