// retort convert IN OUT [--to gguf|hf] [--type PRESET] [--dtype DTYPE] [--pre NAME]
//
// HF directory -> GGUF: the metadata, tensor names, llama q/k row order and
// per-tensor types of llama.cpp's convert_hf_to_gguf + llama-quantize.
// GGUF -> HF directory: weights dequantized to --dtype, q/k rows back in HF
// order, config.json, tokenizer.json rebuilt from the GGUF vocabulary,
// tokenizer_config.json with the chat template.
// Quantized HF checkpoint -> plain HF directory (--to hf): compressed-tensors,
// GPTQ, AWQ and DeepSeek-V3/R1 FP8 block weights dequantized to --dtype.
// Memory: the input is memory-mapped; only the converted output is held (a
// tensor already in the target type is written straight from the mapping).
#include <chrono>
#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "cli/gguf_export.h"
#include "cli/model_loading.h"
#include "core/file.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "formats/hf_dir.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "model/transformer.h"
#include "quantize/gguf_quants.h"

namespace retort::cli {
namespace {
namespace fs = std::filesystem;

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return j;
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
  ASSIGN_OR_RETURN(Tensor q, ggml::QuantizeTensor(rows, type,
                                                  importance.empty() ? nullptr : importance.data()));
  return q.Reshape(t.shape());
}

}  // namespace

absl::StatusOr<ConvertStats> HfToGguf(const std::string& in, const std::string& out,
                                      GgufPreset preset, const std::string& pre,
                                      const std::string& name, bool verbose,
                                      const ImportanceFor& importance) {
  ASSIGN_OR_RETURN(std::unique_ptr<HfDirectory> dir, HfDirectory::Open(in));
  // Loading checks every tensor's name, shape and dtype against config.json.
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> engine, Transformer::Load(*dir));
  const ModelConfig& config = engine->config();
  if (config.WindowOf(0) > 0 || !config.sliding_layers.empty()) {
    std::cerr << "[convert] note: sliding-window attention is not recorded in GGUF (llama.cpp "
                 "ignores it too)\n";
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
      std::cerr << absl::StrFormat("[convert] %-28s %-5s %s\n", gguf_name,
                                   std::string(DTypeName(t.dtype())), ShapeString(t.shape()));
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

namespace {

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
  for (const auto& [name, t] : engine->NamedWeights()) add(name, t.dtype() == dtype ? t : t.To(dtype));
  for (const auto& [name, q] : engine->QuantizedWeights()) add(name, Dequantize(*q, dtype));
  RETURN_IF_ERROR(WriteHfDirectory(out, config.ToJson(), tensors));
  ASSIGN_OR_RETURN(auto files, TokenizerFiles(in));
  for (const auto& [name, contents] : files) {
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(out) / name).string(), contents));
  }
  return stats;
}

}  // namespace

int RunConvert(const Args& args) {
  CommandSpec spec{
      "convert", "IN OUT [--to gguf|hf] [--type TYPE] [--dtype DTYPE] [options]",
      "Convert an HF directory to a GGUF file (llama.cpp's names, layouts, metadata and "
      "quantization presets), a GGUF file to an HF directory (dequantized), or a quantized HF "
      "checkpoint (compressed-tensors, GPTQ, AWQ, DeepSeek FP8 blocks) to a plain one (--to hf)."};
  spec.default_model = true;
  po::options_description opts("options");
  std::string in, out, to, type = "f16", dtype = "auto", pre, name;
  int threads = 0;
  opts.add_options()("in", po::value(&in)->required(), "HF model directory or .gguf file")(
      "out", po::value(&out)->required(), "output .gguf file or HF directory")(
      "to", po::value(&to), "gguf or hf (default: the other format than IN)")(
      "type", po::value(&type)->default_value("f16"),
      "GGUF tensor types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k")(
      "dtype", po::value(&dtype)->default_value("auto"),
      "HF weight dtype: f32, bf16, f16, auto (the GGUF's float type, else bf16)")(
      "pre", po::value(&pre), "tokenizer.ggml.pre name (default: recognised from tokenizer.json)")(
      "name", po::value(&name), "general.name (default: the input folder's name)")(
      "verbose", po::bool_switch(), "print every tensor's type")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  po::positional_options_description pos;
  pos.add("in", 1).add("out", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (threads > 0) SetNumThreads(threads);
  std::error_code ec;
  const bool in_gguf = fs::is_regular_file(in, ec) && IsGgufFile(in);
  if (to.empty()) to = in_gguf ? "hf" : "gguf";
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<ConvertStats> stats;
  if (to == "gguf") {
    if (in_gguf) return UsageError(spec.name, "IN is already a GGUF file (use --to hf)");
    auto preset = ParseGgufPreset(type);
    if (!preset.ok()) return UsageError(spec.name, std::string(preset.status().message()));
    stats = HfToGguf(in, out, *preset, pre, name, vm["verbose"].as<bool>());
  } else if (to == "hf") {
    if (in_gguf) {
      stats = GgufToHf(in, out, dtype);
    } else if (fs::is_directory(in, ec)) {
      stats = DequantizeHf(in, out, dtype);
    } else {
      return UsageError(spec.name, absl::StrCat(in, " is neither a GGUF file nor a directory"));
    }
  } else {
    return UsageError(spec.name, "--to must be gguf or hf");
  }
  if (!stats.ok()) return Fail(spec.name, stats.status());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << absl::StrFormat(
      "wrote %s: %d tensors, %s parameters, %s (%.2f bits per weight) in %.1f s\n", out,
      stats->tensors, HumanCount(stats->params), HumanBytes(stats->bytes),
      stats->params > 0 ? 8.0 * stats->bytes / stats->params : 0.0, secs);
  return kExitOk;
}

}  // namespace retort::cli
