// `retort quantize` as a JobCommand (stage_job.h) over quantize/quantize_job.h.
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/process.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "pipeline/recipe.h"
#include "pipeline/stage_fields.h"
#include "pipeline/stage_job.h"
#include "quantize/quantize_job.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;

class QuantizeJob : public JobCommand {
 public:
  void AddOptions(po::options_description& opts, bool command_line) override {
    quant::ModelQuantOptions& o = job_.quant;
    opts.add_options()("model", RequiredOnCommandLine(&model_path_, command_line),
                       "HF directory or .gguf file")(
        "out", RequiredOnCommandLine(&out_, command_line),
        "output HF directory (compressed-tensors) or .gguf file")(
        "scheme", po::value(&scheme_)->default_value("int4-g128"),
        "int4-g32/g64/g128[-asym], int8-channel, fp8-channel, fp8-tensor, fp8-block128, ...")(
        "method", po::value(&method_)->default_value("rtn"), "rtn, gptq or awq")(
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
        "activations", po::value(&activations_)->default_value("none"),
        "fp8: activation scales for runtimes: none, dynamic (per token) or static (calibrated)")(
        "quantize-lm-head", po::bool_switch(&o.quantize_lm_head),
        "quantize an untied lm_head too (RTN)")(
        "allow-requantize", po::bool_switch(&o.allow_requantize),
        "accept weights that are already quantized (GGUF blocks): dequantize, then quantize")(
        "to", po::value(&to_),
        "ct (compressed-tensors directory) or gguf (default: from OUT's name)")(
        "type", po::value(&type_)->default_value("q4_k_m"),
        "--to gguf: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k, ...")(
        "imatrix", po::value(&imatrix_), "--to gguf: importance matrix from `retort calibrate`")(
        "threads", po::value(&threads_)->default_value(0), "worker threads (0 = all cores)");
    AddCalibOptions(opts, job_.calib);
  }
  std::vector<std::string> Positionals() const override { return {"model", "out"}; }

  absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                         const po::variables_map& vm) override {
    const proto::Quantize& q = stage.quantize();
    StageFields f(vm);
    f.Text("model", q.model(), &model_path_);
    f.Fixed("out", (fs::path(context.dir) / StageMainOutput(stage)).string(), &out_);
    f.Text("scheme", q.scheme(), &scheme_);
    f.Text("method", q.method(), &method_);
    method_in_stage_ = !q.method().empty();
    f.List("calib", q.calib(), &job_.calib.files);
    f.Num("calib-samples", q.has_calib_samples(), q.calib_samples(), &job_.calib.options.samples);
    f.Num("calib-seq-len", q.has_calib_seq_len(), q.calib_seq_len(), &job_.calib.options.seq_len);
    f.Num("threads", context.threads > 0, context.threads, &threads_);
    return f.status();
  }

  absl::Status Run(const po::variables_map& vm, const JobIo& io) override {
    if (threads_ > 0) SetNumThreads(threads_);
    if (to_.empty()) to_ = absl::EndsWith(out_, ".gguf") ? "gguf" : "ct";
    job_.model_path = model_path_;
    job_.out = out_;
    if (to_ == "gguf") return RunGguf(vm, io);
    if (to_ != "ct") return OptionError("--to must be ct or gguf");
    if (!imatrix_.empty()) return OptionError("--imatrix is for --to gguf");
    quant::ModelQuantOptions& o = job_.quant;
    absl::StatusOr<quant::QuantScheme> scheme = quant::ParseQuantScheme(scheme_);
    if (!scheme.ok()) return OptionError(scheme.status().message());
    o.scheme = *scheme;
    absl::StatusOr<quant::QuantMethod> method = quant::ParseQuantMethod(method_);
    if (!method.ok()) return OptionError(method.status().message());
    o.method = *method;
    if (activations_ == "none") {
      o.activations = quant::ActivationScales::kNone;
    } else if (activations_ == "dynamic") {
      o.activations = quant::ActivationScales::kDynamic;
    } else if (activations_ == "static") {
      o.activations = quant::ActivationScales::kStatic;
    } else {
      return OptionError("--activations must be none, dynamic or static");
    }
    if (o.scheme.value_type == DType::kF8E5M2) {
      return OptionError("compressed-tensors stores fp8 weights as e4m3; use fp8-*");
    }
    if (quant::NeedsCalibration(o) && job_.calib.files.empty()) {
      return OptionError(
          absl::StrCat(quant::QuantMethodName(o.method), " needs calibration data: --calib FILE"));
    }
    ASSIGN_OR_RETURN(quant::QuantizeJobResult r, quant::QuantizeToDirectory(job_, *io.progress));
    *io.out << absl::StrFormat(
        "wrote %s: %s %s (compressed-tensors), %s parameters, %s (%.2f bits per weight); "
        "quantized in %.1f s (%.2f s per layer), peak RSS %s\n",
        out_, o.scheme.Name(), quant::QuantMethodName(o.method), HumanCount(r.params),
        HumanBytes(r.bytes), r.params > 0 ? 8.0 * r.bytes / r.params : 0.0, r.seconds,
        r.mean_layer_seconds, HumanBytes(static_cast<double>(PeakRssBytes())));
    return absl::OkStatus();
  }

 private:
  absl::Status RunGguf(const po::variables_map& vm, const JobIo& io) {
    if (auto it = vm.find("method");
        method_in_stage_ || (it != vm.end() && !it->second.defaulted())) {
      return OptionError(
          "--method applies to compressed-tensors output; GGUF k-quants "
          "use --type and optionally --imatrix");
    }
    std::error_code ec;
    if (!fs::is_directory(model_path_, ec)) {
      return OptionError(
          "--to gguf reads an HF directory (convert a GGUF with "
          "`retort convert MODEL.gguf DIR --to hf` first)");
    }
    absl::StatusOr<GgufPreset> preset = ParseGgufPreset(type_);
    if (!preset.ok()) return OptionError(preset.status().message());
    job_.to_gguf = true;
    job_.preset = *preset;
    job_.imatrix = imatrix_;
    ASSIGN_OR_RETURN(quant::QuantizeJobResult r, quant::QuantizeToDirectory(job_, *io.progress));
    *io.out << absl::StrFormat(
        "wrote %s: %s (%s), %d tensors, %s parameters, %s (%.2f bits per weight) in %.1f s\n", out_,
        GgufPresetName(*preset), r.with_imatrix ? "with importance matrix" : "no importance matrix",
        r.tensors, HumanCount(r.params), HumanBytes(r.bytes),
        r.params > 0 ? 8.0 * r.bytes / r.params : 0.0, r.seconds);
    return absl::OkStatus();
  }

  std::string model_path_, out_, scheme_, method_, to_, type_, imatrix_, activations_;
  bool method_in_stage_ = false;
  int threads_ = 0;
  quant::QuantizeJobOptions job_;
};

}  // namespace

std::unique_ptr<JobCommand> NewQuantizeJob() { return std::make_unique<QuantizeJob>(); }

void AddCalibOptions(po::options_description& opts, CalibrationFiles& a) {
  opts.add_options()(
      "calib", po::value(&a.files)->multitoken(),
      "calibration data: text files, trace/chat .jsonl files or trace shards (repeatable)")(
      "calib-samples", po::value(&a.options.samples)->default_value(128), "calibration sequences")(
      "calib-seq-len", po::value(&a.options.seq_len)->default_value(512), "tokens per sequence");
}

}  // namespace retort::pipeline
