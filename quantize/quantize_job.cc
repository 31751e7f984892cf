#include "quantize/quantize_job.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/process.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"
#include "formats/hf_dir.h"
#include "model/gguf_model.h"
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
  // With act-order, groups formed in processing order carry g_idx
  // ("group"); every other strategy, and groups fixed before GPTQ, keep
  // their tensors and only record the order ("static").
  const bool gptq_act_order = o.method == QuantMethod::kGptq && o.gptq.act_order;
  spec.act_order =
      gptq_act_order && o.scheme.granularity == QuantGranularity::kGroup && !o.gptq.static_groups;
  spec.static_act_order = gptq_act_order && !spec.act_order;
  spec.activations = o.activations == ActivationScales::kDynamic  ? ActivationQuant::kDynamic
                     : o.activations == ActivationScales::kStatic ? ActivationQuant::kStatic
                                                                  : ActivationQuant::kNone;
  spec.ignore =
      o.quantize_lm_head ? std::vector<std::string>{} : std::vector<std::string>{"lm_head"};
  return spec;
}

// The float dtype of the written model (and of its scales): the model's own
// when it is f16/f32, else bf16 (bf16 models, and GGUF inputs, whose engine
// config says f32 only because it computes in f32).
DType OutputDType(const ModelConfig& config, const std::string& model_path) {
  if (IsGgufFile(model_path)) return DType::kBF16;
  return config.torch_dtype == DType::kF16 || config.torch_dtype == DType::kF32 ? config.torch_dtype
                                                                                : DType::kBF16;
}

struct WriteStats {
  int64_t params = 0;
  uint64_t bytes = 0;
  SizePart quantized, embeddings, lm_head, other_float;
  std::string input_embedding_type;  // the embeddings' dtype when block-quantized
  uint64_t input_embedding_bytes = 0;
};

void Add(SizePart& part, int64_t params, uint64_t bytes) {
  part.params += params;
  part.bytes += bytes;
}

// Writes the quantized model as a compressed-tensors HF directory.
absl::StatusOr<WriteStats> WriteCompressedTensors(const std::string& model_path,
                                                  const Transformer& model,
                                                  const ModelQuantOptions& options,
                                                  const ModelQuantReport& report,
                                                  const std::string& dir) {
  ModelConfig config = model.config();
  const DType dtype = OutputDType(config, model_path);
  config.torch_dtype = dtype;
  WriteStats stats;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : model.NamedWeights()) {
    Tensor out = t.dtype() == dtype ? t : t.To(dtype);
    stats.params += out.numel();
    stats.bytes += out.nbytes();
    if (name == "model.embed_tokens.weight") {
      Add(stats.embeddings, out.numel(), out.nbytes());
      if (IsBlockQuantized(t.dtype())) {
        stats.input_embedding_type = std::string(DTypeName(t.dtype()));
        stats.input_embedding_bytes = t.nbytes();
      }
    } else if (name == "lm_head.weight") {
      Add(stats.lm_head, out.numel(), out.nbytes());
    } else {
      Add(stats.other_float, out.numel(), out.nbytes());
    }
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
    stats.quantized.params += q->rows * q->cols;
    for (auto& p : packed) {
      stats.bytes += p.second.nbytes();
      stats.quantized.bytes += p.second.nbytes();
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

// fit_group_size: where q's group does not divide every layer, the largest
// of 128/64/32 that does (or channel scales), said in one line.
absl::Status FitGroupSize(const Transformer& model, ModelQuantOptions& q, ProgressSink& progress) {
  if (q.scheme.granularity != QuantGranularity::kGroup) return absl::OkStatus();
  const std::vector<LinearShape> shapes = QuantizedLinearShapes(model, q);
  auto misfit = std::find_if(shapes.begin(), shapes.end(), [&](const LinearShape& l) {
    return l.cols % q.scheme.group_size != 0;
  });
  if (misfit == shapes.end()) return absl::OkStatus();
  const std::vector<QuantScheme> fitting = FittingSchemes(model, q);
  if (fitting.empty()) return absl::OkStatus();  // CheckModelQuantizable says why
  const QuantScheme from = q.scheme;
  q.scheme = fitting.front();
  progress.Line(absl::StrFormat(
      "[quantize] scheme %s (the default) does not fit: %s has %d input columns, not a multiple "
      "of %d; using %s, the largest of groups 128/64/32 that divides every layer (--scheme "
      "chooses another)",
      from.Name(), misfit->name, misfit->cols, from.group_size, q.scheme.Name()));
  return absl::OkStatus();
}

// An existing OUT is refused unless it is to be replaced (an empty folder is
// filled by a compressed-tensors output; a .gguf is one file).
absl::Status CheckOutput(const QuantizeJobOptions& o) {
  if (o.replace_existing) return absl::OkStatus();
  std::error_code ec;
  if (fs::exists(o.out, ec) &&
      (o.to_gguf || !(fs::is_directory(o.out, ec) && fs::is_empty(o.out, ec)))) {
    return absl::AlreadyExistsError(
        absl::StrCat(o.out, " already exists (use --force to replace it)"));
  }
  return absl::OkStatus();
}

// The .gguf is written under a temporary name and renamed into place (over
// an existing file when replace_existing) by its writer.
absl::StatusOr<QuantizeJobResult> QuantizeToGguf(const QuantizeJobOptions& o,
                                                 ProgressSink& progress) {
  const auto t0 = Clock::now();
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

bool JobNeedsCalibration(const QuantizeJobOptions& o) {
  ModelQuantOptions q = o.quant;
  if (!o.imatrix.empty() && !q.importance) {
    q.importance = [](const std::string&) { return std::vector<float>(); };
  }
  return NeedsCalibration(q);
}

std::string CalibrationShortfall(const CalibrationOptions& asked, int64_t samples, int64_t tokens) {
  const int64_t asked_tokens = asked.samples * asked.seq_len;
  if (2 * samples >= asked.samples && 2 * tokens >= asked_tokens) return "";
  return absl::StrFormat(
      "[calib] WARNING: calibrating on %d of the %d samples asked (%d of %d tokens): %s; give "
      "more data, or ask for what it holds with --calib-samples/--calib-seq-len",
      samples, asked.samples, tokens, asked_tokens,
      2 * samples < asked.samples ? "the calibration files hold too few samples"
                                  : "the samples are shorter than --calib-seq-len");
}

absl::StatusOr<QuantizeJobResult> QuantizeToDirectory(const QuantizeJobOptions& o,
                                                      ProgressSink& progress) {
  RETURN_IF_ERROR(CheckOutput(o));
  if (o.to_gguf) return QuantizeToGguf(o, progress);
  ASSIGN_OR_RETURN(StagedDirectory staged,
                   StagedDirectory::Create(o.out, {.replace_existing = o.replace_existing}));
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model, LoadEngine(o.model_path));
  ModelQuantOptions q = o.quant;
  if (!o.imatrix.empty()) {
    ASSIGN_OR_RETURN(ImportanceMatrix im, ReadImportanceMatrix(o.imatrix));
    q.importance = [im = std::make_shared<const ImportanceMatrix>(std::move(im))](
                       const std::string& name) -> std::vector<float> {
      absl::StatusOr<std::string> gguf = GgufTensorName(name);
      return gguf.ok() ? im->Importance(*gguf) : std::vector<float>();
    };
  }
  // Scales are chosen at the width they are stored at, so the file decodes
  // to exactly what the method computed.
  q.scheme.scale_dtype = OutputDType(model->config(), o.model_path);
  if (o.fit_group_size) RETURN_IF_ERROR(FitGroupSize(*model, q, progress));
  // Everything that can be refused is refused before calibration runs.
  RETURN_IF_ERROR(CheckModelQuantizable(*model, q));
  std::vector<std::vector<int32_t>> samples;
  if (NeedsCalibration(q)) {
    ASSIGN_OR_RETURN(
        samples, LoadModelCalibration(o.model_path, model->config().vocab_size, o.calib, progress));
    if (std::string w = CalibrationShortfall(o.calib.options, static_cast<int64_t>(samples.size()),
                                             CountTokens(samples));
        !w.empty()) {
      progress.Line(w);
    }
  }
  progress.Line(absl::StrFormat(
      "[quantize] %s %s%s, %d layers", q.scheme.Name(), QuantMethodName(q.method),
      q.observer.kind == ScaleObserver::kMinMax
          ? ""
          : absl::StrCat(", ", ScaleObserverName(q.observer.kind), " scales",
                         q.observer.kind == ScaleObserver::kImatrixMse
                             ? (o.imatrix.empty() ? " (importance from calibration)"
                                                  : " (importance from " + o.imatrix + ")")
                             : ""),
      model->config().num_layers));
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
  r.scheme = q.scheme;
  r.float_dtype = OutputDType(model->config(), o.model_path);
  r.quantized = stats.quantized;
  r.embeddings = stats.embeddings;
  r.lm_head = stats.lm_head;
  r.other_float = stats.other_float;
  r.tied_embeddings = model->config().tie_word_embeddings;
  r.input_embedding_type = stats.input_embedding_type;
  r.input_embedding_bytes = stats.input_embedding_bytes;
  if (IsGgufFile(o.model_path)) {
    std::error_code ec;
    r.input_file_bytes = fs::file_size(o.model_path, ec);
    if (ec) r.input_file_bytes = 0;
  }
  r.calib_samples = static_cast<int64_t>(samples.size());
  r.calib_tokens = CountTokens(samples);
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
  if (std::string w = CalibrationShortfall(calib.options, static_cast<int64_t>(samples.size()),
                                           CountTokens(samples));
      !w.empty()) {
    progress.Line(w);
  }
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
