#include "quantize/model_convert.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "formats/gguf.h"
#include "formats/hf_dir.h"
#include "model/config.h"
#include "model/model_files.h"
#include "model/transformer.h"
#include "quantize/gguf_quants.h"

namespace retort::quant {
namespace {
namespace fs = std::filesystem;

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseJson(text, path);
}

// Converts an f32/bf16/f16 tensor to `type` (a float type or a ggml block
// type, whose encoder weighs columns by `importance` when it is not empty).
absl::StatusOr<Tensor> ConvertTensor(const Tensor& t, DType type,
                                     const std::vector<float>& importance = {}) {
  if (t.dtype() == type) return t;
  Tensor f32 = t.dtype() == DType::kF32 ? t : t.To(DType::kF32);
  if (type == DType::kF32) return f32;
  if (!IsBlockQuantized(type)) return f32.To(type);
  Tensor rows = f32;
  if (rows.rank() != 2) {
    const int64_t cols = rows.dim(-1);
    ASSIGN_OR_RETURN(rows, rows.Reshape({rows.numel() / cols, cols}));
  }
  if (!importance.empty() && static_cast<int64_t>(importance.size()) != rows.dim(1)) {
    return absl::InvalidArgumentError(absl::StrCat("importance matrix has ", importance.size(),
                                                   " columns, the tensor ", rows.dim(1)));
  }
  ASSIGN_OR_RETURN(
      Tensor q, ggml::QuantizeTensor(rows, type, importance.empty() ? nullptr : importance.data()));
  return q.Reshape(t.shape());
}

absl::StatusOr<ConvertStats> HfToGguf(const std::string& in, const std::string& out,
                                      GgufPreset preset, const std::string& pre,
                                      const std::string& name, bool verbose,
                                      const ImportanceFor& importance, ProgressSink& progress) {
  ASSIGN_OR_RETURN(std::unique_ptr<HfDirectory> dir, HfDirectory::Open(in));
  // Loading checks every tensor's name, shape and dtype against config.json.
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> engine, Transformer::Load(*dir));
  const ModelConfig& config = engine->config();
  if (config.WindowOf(0) > 0 || !config.sliding_layers.empty()) {
    progress.Line(
        "[convert] note: sliding-window attention is not recorded in GGUF (llama.cpp ignores it "
        "too)");
  }

  const std::string tok_path = dir->FilePath("tokenizer.json");
  if (tok_path.empty())
    return absl::NotFoundError(
        absl::StrCat(in, ": no tokenizer.json (GGUF carries the vocabulary)"));
  ASSIGN_OR_RETURN(nlohmann::json tok_json, ReadJsonFile(tok_path));
  nlohmann::json tok_config = nlohmann::json::object();
  std::string chat_template;
  if (std::string p = dir->FilePath("tokenizer_config.json"); !p.empty()) {
    ASSIGN_OR_RETURN(tok_config, ReadJsonFile(p));
    if (tok_config.contains("chat_template") && tok_config["chat_template"].is_string()) {
      chat_template = tok_config["chat_template"].get<std::string>();
    }
  }
  if (std::string p = dir->FilePath("chat_template.jinja"); !p.empty()) {
    ASSIGN_OR_RETURN(chat_template, ReadFileToString(p));
  }
  ASSIGN_OR_RETURN(HfTokenizerForGguf tokenizer,
                   TokenizerPartsFromHf(tok_json, tok_config, config.vocab_size, pre, tok_path));

  GgufWriter writer(GgufArchName(config.arch));
  const std::string model_name =
      name.empty() ? fs::path(in).lexically_normal().filename().string() : name;
  RETURN_IF_ERROR(AddGgufModelMetadata(config, tokenizer, chat_template, GgufFileType(preset),
                                       model_name, writer));
  ConvertStats stats;
  auto add = [&](const std::string& gguf_name, const Tensor& t) -> absl::Status {
    RETURN_IF_ERROR(writer.AddTensor(gguf_name, t));
    stats.tensors++;
    stats.params += t.numel();
    stats.bytes += t.nbytes();
    if (verbose) {
      progress.Line(absl::StrFormat("[convert] %-28s %-5s %s", gguf_name,
                                    std::string(DTypeName(t.dtype())), ShapeString(t.shape())));
    }
    return absl::OkStatus();
  };
  // llama.cpp writes generated tensors (rope_freqs) before the model's own.
  if (std::vector<float> freqs = Llama3RopeFreqFactors(config); !freqs.empty()) {
    Tensor f = Tensor::Zeros(DType::kF32, {static_cast<int64_t>(freqs.size())});
    std::copy(freqs.begin(), freqs.end(), f.mutable_data<float>());
    RETURN_IF_ERROR(add("rope_freqs.weight", f));
  }
  const bool permute = GgufArchName(config.arch) == std::string("llama");
  // Quantized checkpoints (compressed-tensors, GPTQ, AWQ, FP8) give their
  // linears dequantized to f32; the preset then decides their GGUF type.
  std::vector<std::pair<std::string, Tensor>> weights = engine->NamedWeights();
  for (const auto& [hf_name, q] : engine->QuantizedWeights()) {
    weights.emplace_back(hf_name, Dequantize(*q));
  }
  for (const auto& [hf_name, tensor] : weights) {
    ASSIGN_OR_RETURN(std::string gguf_name, GgufTensorName(hf_name));
    Tensor t = tensor;
    const bool is_q = absl::StrContains(hf_name, "self_attn.q_proj.");
    const bool is_k = absl::StrContains(hf_name, "self_attn.k_proj.");
    if (permute && (is_q || is_k)) {
      ASSIGN_OR_RETURN(t, PermuteQkRowsToGguf(t, is_q ? config.num_heads : config.num_kv_heads));
    }
    const DType type = GgufTensorType(preset, gguf_name, t.shape(), config);
    std::vector<float> weights;
    if (importance && IsBlockQuantized(type)) weights = importance(gguf_name);
    auto converted = ConvertTensor(t, type, weights);
    if (!converted.ok()) {
      return absl::Status(converted.status().code(), absl::StrCat(in, ": tensor ", hf_name, ": ",
                                                                  converted.status().message()));
    }
    RETURN_IF_ERROR(add(gguf_name, *converted));
  }
  RETURN_IF_ERROR(writer.Write(out));
  return stats;
}

absl::StatusOr<ConvertStats> GgufToHf(const std::string& in, const std::string& out,
                                      const std::string& dtype_name) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufReader> reader, GgufReader::Open(in));
  ASSIGN_OR_RETURN(GgufModel model, ReadGgufModel(*reader));
  DType dtype = DType::kBF16;
  if (dtype_name.empty() || dtype_name == "auto") {
    // The file's float type when it has one throughout, else bf16.
    bool all_f32 = true, all_f16 = true;
    for (const auto& [n, t] : model.weights) {
      if (t.rank() < 2) continue;
      all_f32 &= t.dtype() == DType::kF32;
      all_f16 &= t.dtype() == DType::kF16;
    }
    dtype = all_f32 ? DType::kF32 : all_f16 ? DType::kF16 : DType::kBF16;
  } else {
    ASSIGN_OR_RETURN(dtype, ParseWeightDType(dtype_name));
  }
  // Check the weights against the architecture before writing anything.
  RETURN_IF_ERROR(Transformer::FromNamedWeights(model.config, model.weights, in).status());
  ModelConfig config = model.config;
  config.torch_dtype = dtype;

  ConvertStats stats;
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(model.weights.size());
  for (auto& [name, t] : model.weights) {
    // Norms and biases are f32 in GGUF; HF keeps every tensor in one dtype.
    ASSIGN_OR_RETURN(Tensor converted, ConvertTensor(t, dtype));
    t = Tensor();  // drop the view as soon as it is converted
    stats.tensors++;
    stats.params += converted.numel();
    stats.bytes += converted.nbytes();
    tensors.emplace_back(name, std::move(converted));
  }
  RETURN_IF_ERROR(WriteHfDirectory(out, config.ToJson(), tensors));
  tensors.clear();
  if (!model.tokenizer.tokens.empty()) {
    ASSIGN_OR_RETURN(nlohmann::ordered_json tok, HfTokenizerJsonFromParts(model.tokenizer));
    RETURN_IF_ERROR(WriteFileAtomically(
        (fs::path(out) / "tokenizer.json").string(),
        tok.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
    nlohmann::ordered_json tc = HfTokenizerConfigFromParts(model.tokenizer, model.chat_template);
    RETURN_IF_ERROR(WriteFileAtomically(
        (fs::path(out) / "tokenizer_config.json").string(),
        tc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  }
  return stats;
}

// A quantized HF checkpoint (compressed-tensors, GPTQ, AWQ, DeepSeek-V3/R1
// FP8 blocks) -> a plain HF directory with every weight in `dtype_name`
// (auto: bf16), config.json without quantization_config, tokenizer files
// copied. Quantized linears are dequantized one at a time.
absl::StatusOr<ConvertStats> DequantizeHf(const std::string& in, const std::string& out,
                                          const std::string& dtype_name) {
  ASSIGN_OR_RETURN(std::unique_ptr<HfDirectory> dir, HfDirectory::Open(in));
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> engine, Transformer::Load(*dir));
  if (engine->QuantizedWeights().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        in, " is not a quantized checkpoint (no quantization_config); nothing to dequantize"));
  }
  DType dtype = DType::kBF16;
  if (!dtype_name.empty() && dtype_name != "auto") {
    ASSIGN_OR_RETURN(dtype, ParseWeightDType(dtype_name));
  }
  ModelConfig config = engine->config();
  config.torch_dtype = dtype;
  ConvertStats stats;
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto add = [&](const std::string& name, Tensor t) {
    stats.tensors++;
    stats.params += t.numel();
    stats.bytes += t.nbytes();
    tensors.emplace_back(name, std::move(t));
  };
  for (const auto& [name, t] : engine->NamedWeights())
    add(name, t.dtype() == dtype ? t : t.To(dtype));
  for (const auto& [name, q] : engine->QuantizedWeights()) add(name, Dequantize(*q, dtype));
  RETURN_IF_ERROR(WriteHfDirectory(out, config.ToJson(), tensors));
  ASSIGN_OR_RETURN(auto files, TokenizerFiles(in));
  for (const auto& [name, contents] : files) {
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(out) / name).string(), contents));
  }
  return stats;
}

}  // namespace

bool IsGgufInput(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec) && IsGgufFile(path);
}

absl::StatusOr<ConvertStats> ConvertModel(const ConvertOptions& o, ProgressSink& progress) {
  if (o.to == ConvertTarget::kGguf) {
    return HfToGguf(o.in, o.out, o.preset, o.pre, o.name, o.verbose, o.importance, progress);
  }
  if (IsGgufInput(o.in)) return GgufToHf(o.in, o.out, o.dtype);
  return DequantizeHf(o.in, o.out, o.dtype);
}

}  // namespace retort::quant
