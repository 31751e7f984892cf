// `retort quantize` as a JobCommand (stage_job.h) over quantize/quantize_job.h.
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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
                       "HF directory or .gguf file");
    out_.AddOptions(opts, command_line, "output HF directory (compressed-tensors) or .gguf file");
    opts.add_options()(
        "scheme", po::value(&scheme_)->default_value(kDefaultScheme),
        "int4-g32/g64/g128[-asym], int8-channel, fp8-channel, fp8-tensor, fp8-block128, ...; "
        "or llm-compressor's W4A16, W4A16_ASYM, W8A16 (int8-g128), FP8 (fp8-tensor + static "
        "activations), FP8_DYNAMIC (fp8-channel + dynamic), FP8_BLOCK. The default takes g64 or "
        "g32 where 128 does not divide a layer")(
        "method", po::value(&method_)->default_value("rtn"), "rtn, gptq or awq")(
        "observer", po::value(&observer_)->default_value("minmax"),
        "how scales are chosen (rtn, gptq's groups, awq's final rounding): minmax (the range), "
        "mse (search clipped ranges for the least squared error), imatrix-mse (that error "
        "weighted by each input column's mean squared activation: needs --calib or --imatrix)")(
        "actorder", po::value(&actorder_)->default_value("static"),
        "GPTQ column order, as llm-compressor's actorder: static (by descending Hessian "
        "diagonal, groups fixed in natural order, no g_idx; llm-compressor's default; alias "
        "weight), group (groups formed in that order, writes g_idx; alias dynamic) or none")(
        "act-order", po::bool_switch(&act_order_group_), "GPTQ: same as --actorder group")(
        "static-groups", po::bool_switch(&static_groups_), "GPTQ: same as --actorder static")(
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
        "imatrix", po::value(&imatrix_),
        "importance matrix from `retort calibrate`, for --to gguf or --observer imatrix-mse")(
        "threads", po::value(&threads_)->default_value(0), "worker threads (0 = all cores)");
    AddCalibOptions(opts, job_.calib);
  }
  std::vector<std::string> Positionals() const override { return {"model", "output"}; }
  const OutputOption* Output() const override { return &out_; }

  absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                         const po::variables_map& vm) override {
    const proto::Quantize& q = stage.quantize();
    StageFields f(vm);
    f.Text("model", q.model(), &model_path_);
    f.Fixed("output", (fs::path(context.dir) / StageMainOutput(stage)).string(), &out_.path());
    f.Text("scheme", q.scheme(), &scheme_);
    scheme_given_ = !q.scheme().empty();
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
    const std::string& out = out_.path();
    if (to_.empty()) to_ = absl::EndsWith(out, ".gguf") ? "gguf" : "ct";
    job_.model_path = model_path_;
    job_.out = out;
    job_.replace_existing = out_.force();
    if (to_ == "gguf") return RunGguf(vm, io);
    if (to_ != "ct") return OptionError("--to must be ct or gguf");
    quant::ModelQuantOptions& o = job_.quant;
    absl::StatusOr<quant::ScaleObserver> observer = quant::ParseScaleObserver(observer_);
    if (!observer.ok()) return OptionError(observer.status().message());
    o.observer.kind = *observer;
    if (!imatrix_.empty() && o.observer.kind != quant::ScaleObserver::kImatrixMse) {
      return OptionError("--imatrix is for --to gguf or --observer imatrix-mse");
    }
    job_.imatrix = imatrix_;
    absl::StatusOr<quant::SchemeChoice> scheme = quant::ParseSchemeOrPreset(scheme_);
    if (!scheme.ok()) return OptionError(scheme.status().message());
    o.scheme = scheme->scheme;
    job_.fit_group_size = !scheme_given_ && Defaulted(vm, "scheme");
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
    if (scheme->activations) {
      if (!Defaulted(vm, "activations") && o.activations != *scheme->activations) {
        return OptionError(absl::StrCat("--scheme ", scheme->preset, " sets the activations (",
                                        ActivationsName(*scheme->activations), "); --activations ",
                                        activations_, " contradicts it"));
      }
      o.activations = *scheme->activations;
    }
    RETURN_IF_ERROR(SetActOrder(vm, o));
    if (o.scheme.value_type == DType::kF8E5M2) {
      return OptionError("compressed-tensors stores fp8 weights as e4m3; use fp8-*");
    }
    if (o.observer.kind == quant::ScaleObserver::kImatrixMse && job_.calib.files.empty() &&
        imatrix_.empty()) {
      return OptionError(
          "--observer imatrix-mse needs calibration data (--calib FILE) or an importance matrix "
          "(--imatrix FILE, from `retort calibrate`)");
    }
    if (quant::JobNeedsCalibration(job_) && job_.calib.files.empty()) {
      if (o.method == quant::QuantMethod::kRtn) {
        return OptionError(
            scheme->preset.empty()
                ? "static activation scales need calibration data: --calib FILE (or "
                  "--activations dynamic)"
                : absl::StrCat("static activation scales (", scheme->preset,
                               ") need calibration data: --calib FILE (or FP8_DYNAMIC)"));
      }
      return OptionError(
          absl::StrCat(quant::QuantMethodName(o.method), " needs calibration data: --calib FILE"));
    }
    if (!quant::JobNeedsCalibration(job_) && !job_.calib.files.empty()) {
      io.progress->Line(absl::StrCat("[quantize] ", quant::QuantMethodName(o.method),
                                     " uses no calibration data: --calib is ignored (gptq and "
                                     "awq use it)"));
    }
    ASSIGN_OR_RETURN(quant::QuantizeJobResult r, quant::QuantizeToDirectory(job_, *io.progress));
    std::string calibrated;
    if (r.calib_samples > 0) {
      calibrated =
          absl::StrFormat("; calibrated on %d samples, %d tokens", r.calib_samples, r.calib_tokens);
    }
    *io.out << absl::StrFormat(
        "wrote %s: %s%s %s%s (compressed-tensors), %s parameters, %s (%.2f bits per weight); "
        "quantized in %.1f s (%.2f s per layer), peak RSS %s%s\n",
        out, r.scheme.Name(), scheme->preset.empty() ? "" : " (" + scheme->preset + ")",
        quant::QuantMethodName(o.method), ActOrderNote(o), HumanCount(r.params),
        HumanBytes(r.bytes), r.params > 0 ? 8.0 * r.bytes / r.params : 0.0, r.seconds,
        r.mean_layer_seconds, HumanBytes(static_cast<double>(PeakRssBytes())), calibrated);
    *io.out << SizeLine(r) << "\n";
    return absl::OkStatus();
  }

 private:
  static constexpr char kDefaultScheme[] = "int4-g128";

  static bool Defaulted(const po::variables_map& vm, const char* option) {
    auto it = vm.find(option);
    return it == vm.end() || it->second.defaulted();
  }

  static const char* ActivationsName(quant::ActivationScales a) {
    return a == quant::ActivationScales::kDynamic  ? "dynamic"
           : a == quant::ActivationScales::kStatic ? "static"
                                                   : "none";
  }

  // --actorder (or its switches --act-order, --static-groups) into
  // GptqOptions.
  absl::Status SetActOrder(const po::variables_map& vm, quant::ModelQuantOptions& o) {
    const int given = !Defaulted(vm, "actorder") + act_order_group_ + static_groups_;
    if (given > 1) {
      return OptionError("give one of --actorder, --act-order and --static-groups");
    }
    if (given > 0 && o.method != quant::QuantMethod::kGptq) {
      return OptionError("--actorder, --act-order and --static-groups apply to --method gptq");
    }
    std::string order = act_order_group_ ? "group" : static_groups_ ? "static" : actorder_;
    if (order == "static" || order == "weight") {
      o.gptq.act_order = true;
      o.gptq.static_groups = true;
    } else if (order == "group" || order == "dynamic") {
      o.gptq.act_order = true;
      o.gptq.static_groups = false;
    } else if (order == "none") {
      o.gptq.act_order = false;
      o.gptq.static_groups = false;
    } else {
      return OptionError(
          absl::StrCat("--actorder '", order, "': expected static (the default), group or none"));
    }
    return absl::OkStatus();
  }

  // ", act-order static" for GPTQ runs, else "".
  static std::string ActOrderNote(const quant::ModelQuantOptions& o) {
    if (o.method != quant::QuantMethod::kGptq) return "";
    if (!o.gptq.act_order) return ", no act-order";
    return o.gptq.static_groups || o.scheme.granularity != QuantGranularity::kGroup
               ? ", act-order static"
               : ", act-order group";
  }

  // Where the bytes of a compressed-tensors output go: why an "int4" model
  // can be larger than a GGUF of the same weights.
  static std::string SizeLine(const quant::QuantizeJobResult& r) {
    auto part = [](const quant::SizePart& p) {
      return absl::StrCat(HumanCount(static_cast<double>(p.params)), " = ",
                          HumanBytes(static_cast<double>(p.bytes)));
    };
    std::string line = absl::StrFormat(
        "size: linears %s as %s (%.2f bits per weight with scales)", part(r.quantized),
        r.scheme.Name(),
        r.quantized.params > 0 ? 8.0 * r.quantized.bytes / r.quantized.params : 0.0);
    const std::string dtype = absl::AsciiStrToLower(std::string(DTypeName(r.float_dtype)));
    std::vector<std::string> kept;
    if (r.embeddings.params > 0) {
      std::vector<std::string> notes;
      if (r.tied_embeddings) notes.push_back("tied to the lm_head");
      if (!r.input_embedding_type.empty()) {
        notes.push_back(absl::StrCat(r.input_embedding_type, " = ",
                                     HumanBytes(static_cast<double>(r.input_embedding_bytes)),
                                     " in the input"));
      }
      kept.push_back(absl::StrCat("embeddings ", part(r.embeddings),
                                  notes.empty() ? "" : " (" + absl::StrJoin(notes, "; ") + ")"));
    }
    if (r.lm_head.params > 0) {
      kept.push_back(absl::StrCat("lm_head ", part(r.lm_head), " (--quantize-lm-head)"));
    }
    if (r.other_float.params > 0) {
      kept.push_back(absl::StrCat("norms and biases ", part(r.other_float)));
    }
    if (!kept.empty()) {
      absl::StrAppend(&line, "; left in ", dtype,
                      ", as llm-compressor leaves them: ", absl::StrJoin(kept, ", "));
    }
    if (r.input_file_bytes > 0 && r.bytes > r.input_file_bytes) {
      absl::StrAppend(&line, "; the input GGUF is smaller (",
                      HumanBytes(static_cast<double>(r.input_file_bytes)),
                      ") because it stores the embeddings quantized too");
    }
    return line;
  }

  absl::Status RunGguf(const po::variables_map& vm, const JobIo& io) {
    if (auto it = vm.find("method");
        method_in_stage_ || (it != vm.end() && !it->second.defaulted())) {
      return OptionError(
          "--method applies to compressed-tensors output; GGUF k-quants "
          "use --type and optionally --imatrix");
    }
    if (!Defaulted(vm, "observer")) {
      return OptionError(
          "--observer applies to compressed-tensors output; GGUF k-quants weigh their own "
          "search with --imatrix");
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
        "wrote %s: %s (%s), %d tensors, %s parameters, %s (%.2f bits per weight) in %.1f s\n",
        out_.path(), GgufPresetName(*preset),
        r.with_imatrix ? "with importance matrix" : "no importance matrix", r.tensors,
        HumanCount(r.params), HumanBytes(r.bytes), r.params > 0 ? 8.0 * r.bytes / r.params : 0.0,
        r.seconds);
    return absl::OkStatus();
  }

  std::string model_path_, scheme_, method_, to_, type_, imatrix_, activations_, actorder_,
      observer_;
  OutputOption out_{OutputOption::Kind::kModel};
  bool method_in_stage_ = false, scheme_given_ = false, act_order_group_ = false,
       static_groups_ = false;
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
