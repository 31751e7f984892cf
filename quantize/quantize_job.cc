#include "quantize/quantize_job.h"

#include <chrono>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/process.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"
#include "formats/hf_dir.h"
#include "model/model_files.h"
#include "quantize/imatrix.h"
#include "quantize/model_convert.h"

namespace retort::quant {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

CtConfigSpec SpecFor(const ModelQuantOptions& o) {
  CtConfigSpec spec;
  spec.value_type = o.scheme.value_type;
  spec.granularity = o.scheme.granularity;
  spec.group_size = o.scheme.group_size;
  spec.symmetric = o.scheme.symmetric;
  spec.act_order = o.method == QuantMethod::kGptq && o.gptq.act_order &&
                   o.scheme.granularity == QuantGranularity::kGroup && !o.gptq.static_groups;
  spec.activations = o.activations == ActivationScales::kDynamic  ? ActivationQuant::kDynamic
                     : o.activations == ActivationScales::kStatic ? ActivationQuant::kStatic
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
                                                  const ModelQuantOptions& options,
                                                  const ModelQuantReport& report,
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

absl::StatusOr<QuantizeJobResult> QuantizeToGguf(const QuantizeJobOptions& o,
                                                 ProgressSink& progress) {
  const auto t0 = Clock::now();
  std::error_code ec;
  if (fs::exists(o.out, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat(o.out, " already exists (remove it or choose another OUT)"));
  }
  if (!o.quant.allow_requantize) {
    ASSIGN_OR_RETURN(auto dir, HfDirectory::Open(o.model_path));
    const nlohmann::json& cfg = dir->config();
    if (cfg.contains("quantization_config") && !cfg["quantization_config"].is_null()) {
      return absl::FailedPreconditionError(absl::StrCat(
          o.model_path,
          " is already quantized (config.json has a quantization_config); quantizing again "
          "compounds both errors. Pass --allow-requantize to dequantize and requantize, or start "
          "from the original weights"));
    }
  }
  std::optional<ImportanceMatrix> im;
  if (!o.imatrix.empty()) {
    ASSIGN_OR_RETURN(im, ReadImportanceMatrix(o.imatrix));
  }
  ConvertOptions c;
  c.in = o.model_path;
  c.out = o.out;
  c.preset = o.preset;
  if (im) c.importance = [&](const std::string& name) { return im->Importance(name); };
  ASSIGN_OR_RETURN(ConvertStats stats, ConvertModel(c, progress));
  QuantizeJobResult r;
  r.params = stats.params;
  r.bytes = stats.bytes;
  r.tensors = stats.tensors;
  r.with_imatrix = im.has_value();
  r.seconds = SecondsSince(t0);
  return r;
}

}  // namespace

absl::StatusOr<QuantizeJobResult> QuantizeToDirectory(const QuantizeJobOptions& o,
                                                      ProgressSink& progress) {
  if (o.to_gguf) return QuantizeToGguf(o, progress);
  ASSIGN_OR_RETURN(
      StagedDirectory staged,
      StagedDirectory::Create(o.out, {.replace_existing = false, .must_be_new = true}));
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model, LoadEngine(o.model_path));
  ModelQuantOptions q = o.quant;
  // Scales are chosen at the width they are stored at, so the file decodes
  // to exactly what the method computed.
  q.scheme.scale_dtype = OutputDType(model->config());
  std::vector<std::vector<int32_t>> samples;
  if (NeedsCalibration(q)) {
    ASSIGN_OR_RETURN(
        samples, LoadModelCalibration(o.model_path, model->config().vocab_size, o.calib, progress));
  }
  progress.Line(absl::StrFormat("[quantize] %s %s, %d layers", q.scheme.Name(),
                                QuantMethodName(q.method), model->config().num_layers));
  ASSIGN_OR_RETURN(
      ModelQuantReport report, QuantizeModel(*model, samples, q, [&](const LayerProgress& p) {
        const double eta = p.total_seconds / (p.layer + 1) * (p.num_layers - p.layer - 1);
        progress.Line(absl::StrFormat(
            "[quantize] layer %d/%d  %.2f s  (%.1f s so far, ETA %.0f s)  peak RSS %s", p.layer + 1,
            p.num_layers, p.seconds, p.total_seconds, eta,
            HumanBytes(static_cast<double>(p.peak_rss))));
      }));
  ASSIGN_OR_RETURN(WriteStats stats,
                   WriteCompressedTensors(o.model_path, *model, q, report, staged.path()));
  RETURN_IF_ERROR(staged.Commit());
  QuantizeJobResult r;
  r.params = stats.params;
  r.bytes = stats.bytes;
  r.seconds = report.seconds;
  for (double s : report.layer_seconds) r.mean_layer_seconds += s;
  if (!report.layer_seconds.empty()) r.mean_layer_seconds /= report.layer_seconds.size();
  return r;
}

absl::StatusOr<CalibrateResult> CalibrateImportance(const std::string& model_path,
                                                    const CalibrationFiles& calib,
                                                    const std::string& out,
                                                    ProgressSink& progress) {
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model, LoadEngine(model_path));
  ASSIGN_OR_RETURN(auto samples,
                   LoadModelCalibration(model_path, model->config().vocab_size, calib, progress));
  ASSIGN_OR_RETURN(
      ImportanceMatrix m, CollectImportance(*model, samples, [&](int64_t done, int64_t total) {
        progress.Status(
            absl::StrFormat("[calibrate] layer %d/%d  %.1f s", done, total, SecondsSince(t0)));
        if (done == total) progress.EndStatus();
      }));
  m.datasets = calib.files;
  RETURN_IF_ERROR(WriteImportanceMatrix(m, out));
  return CalibrateResult{static_cast<int64_t>(m.entries.size()), m.chunk_count, m.chunk_size,
                         SecondsSince(t0)};
}

}  // namespace retort::quant
