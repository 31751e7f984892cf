// retort quantize MODEL OUT [--scheme S] [--method rtn|gptq|awq] [--calib FILE ...]
//                           [--to ct|gguf] [--type PRESET] [--imatrix FILE] [options]
// retort calibrate MODEL --calib FILE ... -o imatrix.gguf
//
// `quantize` to compressed-tensors (the default; what vLLM loads): the
// model's linears become QuantizedMatrix weights (quantize/model_quantizer.h)
// and are packed with formats/compressed_tensors.h; everything else is
// written in the model's float dtype with config.json + quantization_config
// and the tokenizer files. To GGUF: llama.cpp's k-quant presets, weighted by
// an importance matrix from `retort calibrate` when --imatrix is given.
// Nothing is written until everything has succeeded: the output directory is
// built under a temporary name beside OUT and renamed into place.
#include <chrono>
#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/calibration_args.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "cli/gguf_export.h"
#include "cli/model_loading.h"
#include "core/file.h"
#include "core/process.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "formats/compressed_tensors.h"
#include "formats/hf_dir.h"
#include "model/calibration.h"
#include "quantize/imatrix.h"
#include "quantize/model_quantizer.h"

namespace retort::cli {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

CtConfigSpec SpecFor(const quant::ModelQuantOptions& o) {
  CtConfigSpec spec;
  spec.value_type = o.scheme.value_type;
  spec.granularity = o.scheme.granularity;
  spec.group_size = o.scheme.group_size;
  spec.symmetric = o.scheme.symmetric;
  spec.act_order = o.method == quant::QuantMethod::kGptq && o.gptq.act_order &&
                   o.scheme.granularity == QuantGranularity::kGroup && !o.gptq.static_groups;
  spec.activations = o.activations == quant::ActivationScales::kDynamic  ? ActivationQuant::kDynamic
                     : o.activations == quant::ActivationScales::kStatic ? ActivationQuant::kStatic
                                                                         : ActivationQuant::kNone;
  spec.ignore =
      o.quantize_lm_head ? std::vector<std::string>{} : std::vector<std::string>{"lm_head"};
  return spec;
}

// The float dtype of the written model (and of its scales): the model's own
// when it is f16/f32, else bf16 (GGUF inputs, bf16 models).
DType OutputDType(const ModelConfig& config) {
  return config.torch_dtype == DType::kF16 || config.torch_dtype == DType::kF32 ? config.torch_dtype
                                                                                : DType::kBF16;
}

struct WriteStats {
  int64_t params = 0;
  uint64_t bytes = 0;
};

// Writes the quantized model as a compressed-tensors HF directory.
absl::StatusOr<WriteStats> WriteCompressedTensors(const std::string& model_path,
                                                  const Transformer& model,
                                                  const quant::ModelQuantOptions& options,
                                                  const quant::ModelQuantReport& report,
                                                  const std::string& dir) {
  ModelConfig config = model.config();
  const DType dtype = OutputDType(config);
  config.torch_dtype = dtype;
  WriteStats stats;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : model.NamedWeights()) {
    Tensor out = t.dtype() == dtype ? t : t.To(dtype);
    stats.params += out.numel();
    stats.bytes += out.nbytes();
    tensors.emplace_back(name, std::move(out));
  }
  for (const auto& [name, q] : model.QuantizedWeights()) {
    const std::string module = name.substr(0, name.size() - std::string(".weight").size());
    std::optional<float> input_scale;
    if (auto it = report.input_scales.find(module); it != report.input_scales.end()) {
      input_scale = it->second;
    }
    ASSIGN_OR_RETURN(auto packed, PackCompressedTensors(module, *q, dtype, input_scale));
    stats.params += q->rows * q->cols;
    for (auto& p : packed) {
      stats.bytes += p.second.nbytes();
      tensors.push_back(std::move(p));
    }
  }
  nlohmann::json json = config.ToJson();
  const CtConfigSpec spec = SpecFor(options);
  RETURN_IF_ERROR(ValidateCtConfigSpec(spec));
  json["quantization_config"] = CompressedTensorsConfig(spec);
  RETURN_IF_ERROR(WriteHfDirectory(dir, json, tensors));
  ASSIGN_OR_RETURN(auto files, TokenizerFiles(model_path));
  for (const auto& [name, contents] : files) {
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / name).string(), contents));
  }
  return stats;
}

}  // namespace

int RunQuantize(const Args& args) {
  CommandSpec spec{
      "quantize", "MODEL OUT [--scheme S] [--method rtn|gptq|awq] [--calib FILE ...] [options]",
      "Quantize a model's linear layers (RTN, GPTQ, AWQ; int4/int8/fp8) into a compressed-tensors "
      "directory, or into GGUF k-quants weighted by an importance matrix."};
  spec.default_model = true;
  spec.device = true;
  po::options_description opts("options");
  std::string model_path, out, scheme_name = "int4-g128", method_name = "rtn", to, type, imatrix,
                               activations = "none";
  CalibArgs calib;
  quant::ModelQuantOptions o;
  int threads = 0;
  opts.add_options()("model", po::value(&model_path)->required(), "HF directory or .gguf file")(
      "out", po::value(&out)->required(), "output HF directory (compressed-tensors) or .gguf file")(
      "scheme", po::value(&scheme_name)->default_value("int4-g128"),
      "int4-g32/g64/g128[-asym], int8-channel, fp8-channel, fp8-tensor, fp8-block128, ...")(
      "method", po::value(&method_name)->default_value("rtn"), "rtn, gptq or awq")(
      "act-order", po::bool_switch(&o.gptq.act_order),
      "GPTQ: quantize columns by descending "
      "Hessian diagonal (writes g_idx)")(
      "static-groups", po::bool_switch(&o.gptq.static_groups),
      "GPTQ act-order with groups fixed before reordering (no g_idx)")(
      "dampening", po::value(&o.gptq.dampening)->default_value(0.01),
      "GPTQ: fraction of the mean Hessian diagonal added to it")(
      "gptq-block", po::value(&o.gptq.block_size)->default_value(128), "GPTQ lazy-batch width")(
      "awq-grid", po::value(&o.awq.grid)->default_value(20), "AWQ: scale search grid points")(
      "awq-tokens", po::value(&o.awq_search_tokens)->default_value(4096),
      "AWQ: calibration tokens kept per layer input for the scale search")(
      "awq-clip-tokens", po::value(&o.awq.max_tokens)->default_value(512),
      "AWQ: tokens the weight-clipping search uses")(
      "activations", po::value(&activations)->default_value("none"),
      "fp8: activation scales for runtimes: none, dynamic (per token) or static (calibrated)")(
      "quantize-lm-head", po::bool_switch(&o.quantize_lm_head),
      "quantize an untied lm_head too (RTN)")(
      "allow-requantize", po::bool_switch(&o.allow_requantize),
      "accept weights that are already quantized (GGUF blocks): dequantize, then quantize")(
      "to", po::value(&to), "ct (compressed-tensors directory) or gguf (default: from OUT's name)")(
      "type", po::value(&type)->default_value("q4_k_m"),
      "--to gguf: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k, ...")(
      "imatrix", po::value(&imatrix), "--to gguf: importance matrix from `retort calibrate`")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  AddCalibOptions(opts, calib);
  po::positional_options_description pos;
  pos.add("model", 1).add("out", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (threads > 0) SetNumThreads(threads);
  if (to.empty()) to = absl::EndsWith(out, ".gguf") ? "gguf" : "ct";
  const auto t0 = Clock::now();

  if (to == "gguf") {
    if (vm.count("method") && !vm["method"].defaulted()) {
      return UsageError(spec.name,
                        "--method applies to compressed-tensors output; GGUF k-quants "
                        "use --type and optionally --imatrix");
    }
    std::error_code ec;
    if (!fs::is_directory(model_path, ec)) {
      return UsageError(spec.name,
                        "--to gguf reads an HF directory (convert a GGUF with "
                        "`retort convert MODEL.gguf DIR --to hf` first)");
    }
    auto preset = ParseGgufPreset(type);
    if (!preset.ok()) return UsageError(spec.name, std::string(preset.status().message()));
    if (fs::exists(out, ec)) {
      return Fail(spec.name, absl::AlreadyExistsError(absl::StrCat(
                                 out, " already exists (remove it or choose another OUT)")));
    }
    if (!o.allow_requantize) {
      auto dir = HfDirectory::Open(model_path);
      if (!dir.ok()) return Fail(spec.name, dir.status());
      const nlohmann::json& cfg = (*dir)->config();
      if (cfg.contains("quantization_config") && !cfg["quantization_config"].is_null()) {
        return Fail(spec.name, absl::FailedPreconditionError(absl::StrCat(
                                   model_path,
                                   " is already quantized (config.json has a quantization_config); "
                                   "quantizing again compounds both errors. Pass "
                                   "--allow-requantize to dequantize and requantize, or start "
                                   "from the original weights")));
      }
    }
    std::optional<quant::ImportanceMatrix> im;
    if (!imatrix.empty()) {
      auto m = quant::ReadImportanceMatrix(imatrix);
      if (!m.ok()) return Fail(spec.name, m.status());
      im = std::move(*m);
    }
    ImportanceFor importance = nullptr;
    if (im) importance = [&](const std::string& name) { return im->Importance(name); };
    auto stats = HfToGguf(model_path, out, *preset, "", "", false, importance);
    if (!stats.ok()) return Fail(spec.name, stats.status());
    std::cout << absl::StrFormat(
        "wrote %s: %s (%s), %d tensors, %s parameters, %s (%.2f bits per weight) in %.1f s\n", out,
        GgufPresetName(*preset), im ? "with importance matrix" : "no importance matrix",
        stats->tensors, HumanCount(stats->params), HumanBytes(stats->bytes),
        stats->params > 0 ? 8.0 * stats->bytes / stats->params : 0.0, SecondsSince(t0));
    return kExitOk;
  }
  if (to != "ct") return UsageError(spec.name, "--to must be ct or gguf");
  if (!imatrix.empty()) return UsageError(spec.name, "--imatrix is for --to gguf");

  auto scheme = quant::ParseQuantScheme(scheme_name);
  if (!scheme.ok()) return UsageError(spec.name, std::string(scheme.status().message()));
  o.scheme = *scheme;
  auto method = quant::ParseQuantMethod(method_name);
  if (!method.ok()) return UsageError(spec.name, std::string(method.status().message()));
  o.method = *method;
  if (activations == "none") {
    o.activations = quant::ActivationScales::kNone;
  } else if (activations == "dynamic") {
    o.activations = quant::ActivationScales::kDynamic;
  } else if (activations == "static") {
    o.activations = quant::ActivationScales::kStatic;
  } else {
    return UsageError(spec.name, "--activations must be none, dynamic or static");
  }
  if (o.scheme.value_type == DType::kF8E5M2) {
    return UsageError(spec.name, "compressed-tensors stores fp8 weights as e4m3; use fp8-*");
  }
  if (quant::NeedsCalibration(o) && calib.files.empty()) {
    return UsageError(spec.name, absl::StrCat(quant::QuantMethodName(o.method),
                                              " needs calibration data: --calib FILE"));
  }
  auto staged = StagedDir::Create(out);
  if (!staged.ok()) return Fail(spec.name, staged.status());

  auto model = LoadEngine(model_path);
  if (!model.ok()) return Fail(spec.name, model.status());
  // Scales are chosen at the width they are stored at, so the file decodes
  // to exactly what the method computed.
  o.scheme.scale_dtype = OutputDType((*model)->config());
  std::vector<std::vector<int32_t>> samples;
  if (quant::NeedsCalibration(o)) {
    auto s = LoadCalibration(model_path, **model, calib);
    if (!s.ok()) return Fail(spec.name, s.status());
    samples = std::move(*s);
  }
  std::cerr << absl::StrFormat("[quantize] %s %s, %d layers\n", o.scheme.Name(),
                               quant::QuantMethodName(o.method), (*model)->config().num_layers);
  auto report = quant::QuantizeModel(**model, samples, o, [](const LayerProgress& p) {
    const double eta = p.total_seconds / (p.layer + 1) * (p.num_layers - p.layer - 1);
    std::cerr << absl::StrFormat(
        "[quantize] layer %d/%d  %.2f s  (%.1f s so far, ETA %.0f s)  peak RSS %s\n", p.layer + 1,
        p.num_layers, p.seconds, p.total_seconds, eta, HumanBytes(static_cast<double>(p.peak_rss)));
  });
  if (!report.ok()) return Fail(spec.name, report.status());
  auto stats = WriteCompressedTensors(model_path, **model, o, *report, staged->path());
  if (!stats.ok()) return Fail(spec.name, stats.status());
  if (absl::Status s = staged->Commit(); !s.ok()) return Fail(spec.name, s);
  double mean_layer = 0;
  for (double s : report->layer_seconds) mean_layer += s;
  if (!report->layer_seconds.empty()) mean_layer /= report->layer_seconds.size();
  std::cout << absl::StrFormat(
      "wrote %s: %s %s (compressed-tensors), %s parameters, %s (%.2f bits per weight); "
      "quantized in %.1f s (%.2f s per layer), peak RSS %s\n",
      out, o.scheme.Name(), quant::QuantMethodName(o.method), HumanCount(stats->params),
      HumanBytes(stats->bytes), stats->params > 0 ? 8.0 * stats->bytes / stats->params : 0.0,
      report->seconds, mean_layer, HumanBytes(static_cast<double>(PeakRssBytes())));
  return kExitOk;
}

int RunCalibrate(const Args& args) {
  CommandSpec spec{"calibrate", "MODEL --calib FILE ... -o IMATRIX.gguf [options]",
                   "Compute an importance matrix (llama.cpp's GGUF imatrix format) for "
                   "`retort quantize --to gguf --imatrix`."};
  spec.default_model = true;
  spec.device = true;
  po::options_description opts("options");
  std::string model_path, out;
  CalibArgs calib;
  int threads = 0;
  opts.add_options()("model", po::value(&model_path)->required(), "HF directory or .gguf file")(
      "output,o", po::value(&out)->required(), "imatrix file to write (.gguf)")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  AddCalibOptions(opts, calib);
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (threads > 0) SetNumThreads(threads);
  if (calib.files.empty()) return UsageError(spec.name, "give calibration data: --calib FILE");
  const auto t0 = Clock::now();
  auto model = LoadEngine(model_path);
  if (!model.ok()) return Fail(spec.name, model.status());
  auto samples = LoadCalibration(model_path, **model, calib);
  if (!samples.ok()) return Fail(spec.name, samples.status());
  auto m = quant::CollectImportance(**model, *samples, [&](int64_t done, int64_t total) {
    std::cerr << absl::StrFormat("\r[calibrate] layer %d/%d  %.1f s", done, total,
                                 SecondsSince(t0));
    if (done == total) std::cerr << "\n";
  });
  if (!m.ok()) return Fail(spec.name, m.status());
  m->datasets = calib.files;
  if (absl::Status s = quant::WriteImportanceMatrix(*m, out); !s.ok()) return Fail(spec.name, s);
  std::cout << absl::StrFormat("wrote %s: %d weights, %d samples x %d tokens in %.1f s\n", out,
                               m->entries.size(), m->chunk_count, m->chunk_size, SecondsSince(t0));
  return kExitOk;
}

}  // namespace retort::cli
