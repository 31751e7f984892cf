// `retort prune` as a JobCommand (stage_job.h) over prune/prune_job.h: unstructured / N:M
// pruning layer by layer, or structured pruning to a smaller dense model,
// written as an HF directory (dense, or with --format sparse the decoder
// linears in compressed-tensors' sparse-bitmask layout).
#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/process.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "nlohmann/json.hpp"
#include "pipeline/recipe.h"
#include "pipeline/stage_fields.h"
#include "pipeline/stage_job.h"
#include "prune/prune_job.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

class PruneJob : public JobCommand {
 public:
  void AddOptions(po::options_description& opts, bool command_line) override {
    prune::StructuredTarget& target = job.target;
    opts.add_options()("model", RequiredOnCommandLine(&job.model_path, command_line),
                       "HF directory or .gguf file (quantized weights are dequantized to f32)");
    out.AddOptions(opts, command_line, "output HF directory");
    opts.add_options()(
        "method", po::value(&method_name)->default_value("magnitude"),
        "unstructured criterion: magnitude, wanda or sparsegpt (the last two need --calib)")(
        "sparsity", po::value(&sparsity_text),
        "fraction of each linear's weights to zero: 0.5 or 50%")(
        "layer-sparsity", po::value(&job.layer_sparsity),
        "per-layer fractions instead of --sparsity: one per decoder layer (0.3,0.4,...) or ranges "
        "covering every layer (0-9=0.4,10-29=0.6)")(
        "pattern", po::value(&pattern_text),
        "N:M sparsity: 2:4 or 4:8 (at most N nonzeros in "
        "every M consecutive inputs)")(
        "dampening", po::value(&sgpt.dampening)->default_value(0.01),
        "SparseGPT: fraction of the mean Hessian diagonal added to it")(
        "block-size", po::value(&sgpt.block_size)->default_value(128),
        "SparseGPT: columns per mask block and lazy update")(
        "structured", po::bool_switch(&job.structured),
        "structured pruning to a smaller dense model (needs --calib)")(
        "target-params", po::value(&job.target_params),
        "structured: parameter budget (90000000, 90M, or 70% of the model); dimensions not given "
        "below are chosen to fit it")("num-layers", po::value(&target.num_layers),
                                      "structured: decoder layers to keep")(
        "num-heads", po::value(&target.num_heads), "structured: query heads to keep")(
        "num-kv-heads", po::value(&target.num_kv_heads), "structured: key/value heads to keep")(
        "intermediate-size", po::value(&target.intermediate_size),
        "structured: MLP channels to keep")("hidden-size", po::value(&target.hidden_size),
                                            "structured: hidden channels to keep")(
        "dtype", po::value(&job.dtype)->default_value("auto"),
        "output weights: auto (the model's dtype; bf16 when it is not a float type), f32, bf16, "
        "f16")(
        "format", po::value(&format_name)->default_value("dense"),
        "dense (zeros stored) or sparse: the decoder linears in compressed-tensors sparse-bitmask "
        "(sparse-24-bitmask with --pattern 2:4) for vLLM-style loaders; retort itself does not "
        "load sparse checkpoints")("json", po::bool_switch(&json),
                                   "print the result as one JSON object")(
        "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
    AddCalibOptions(opts, job.calib);
  }
  std::vector<std::string> Positionals() const override { return {"model", "output"}; }
  const OutputOption* Output() const override { return &out; }

  absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                         const po::variables_map& vm) override {
    const proto::Prune& p = stage.prune();
    prune::StructuredTarget& target = job.target;
    StageFields f(vm);
    f.Text("model", p.model(), &job.model_path);
    f.Fixed("output", (fs::path(context.dir) / StageMainOutput(stage)).string(), &out.path());
    f.Text("method", p.method(), &method_name);
    method_in_stage = !p.method().empty();
    f.Text("sparsity", p.has_sparsity() ? absl::StrCat(p.sparsity()) : "", &sparsity_text);
    f.Text("pattern", p.pattern(), &pattern_text);
    f.Flag("structured", p.structured(), &job.structured);
    f.Text("target-params", p.target_params(), &job.target_params);
    f.Num("num-layers", p.has_num_layers(), p.num_layers(), &target.num_layers);
    f.Num("num-heads", p.has_num_heads(), p.num_heads(), &target.num_heads);
    f.Num("num-kv-heads", p.has_num_kv_heads(), p.num_kv_heads(), &target.num_kv_heads);
    f.Num("intermediate-size", p.has_intermediate_size(), p.intermediate_size(),
          &target.intermediate_size);
    f.Num("hidden-size", p.has_hidden_size(), p.hidden_size(), &target.hidden_size);
    f.List("calib", p.calib(), &job.calib.files);
    f.Num("calib-samples", p.has_calib_samples(), p.calib_samples(), &job.calib.options.samples);
    f.Num("calib-seq-len", p.has_calib_seq_len(), p.calib_seq_len(), &job.calib.options.seq_len);
    f.Text("dtype", p.dtype(), &job.dtype);
    f.Num("threads", context.threads > 0, context.threads, &threads);
    return f.status();
  }

  absl::Status Run(const po::variables_map& vm, const JobIo& io) override {
    if (threads > 0) SetNumThreads(threads);
    job.out = out.path();
    job.replace_existing = out.force();
    prune::StructuredTarget& target = job.target;
    CalibrationFiles& calib = job.calib;
    const auto t0 = Clock::now();
    const std::string format = absl::AsciiStrToLower(format_name);
    if (format != "dense" && format != "sparse") {
      return OptionError(absl::StrCat("--format \"", format_name, "\": expected dense or sparse"));
    }
    if (format == "sparse" && job.structured) {
      return OptionError(
          "--format sparse is for unstructured or N:M pruning; --structured writes a "
          "smaller dense model");
    }

    // Everything that can be checked from the arguments alone.
    const bool has_dims = target.num_layers != 0 || target.num_heads != 0 ||
                          target.num_kv_heads != 0 || target.intermediate_size != 0 ||
                          target.hidden_size != 0;
    prune::PruneOptions& o = job.unstructured;
    if (job.structured) {
      if (!sparsity_text.empty() || !pattern_text.empty() || !job.layer_sparsity.empty() ||
          MethodGiven(vm)) {
        return OptionError(
            "--structured does not take --method/--sparsity/--layer-sparsity/--pattern "
            "(run two "
            "prune commands to combine them)");
      }
      if (job.target_params.empty() && !has_dims) {
        return OptionError(
            "--structured needs --target-params N or target dimensions "
            "(--num-layers, --num-heads, --num-kv-heads, "
            "--intermediate-size, --hidden-size)");
      }
      if (target.num_layers < 0 || target.num_heads < 0 || target.num_kv_heads < 0 ||
          target.intermediate_size < 0 || target.hidden_size < 0) {
        return OptionError("structured target dimensions must be positive");
      }
      if (calib.files.empty()) {
        return OptionError(
            "--structured needs calibration data for importance: "
            "--calib FILE");
      }
    } else {
      if (!job.target_params.empty() || has_dims) {
        return OptionError("--target-params and target dimensions need --structured");
      }
      auto method = prune::ParsePruneMethod(method_name);
      if (!method.ok()) {
        return OptionError(
            absl::StrCat("--method \"", method_name, "\": expected magnitude, wanda or sparsegpt"));
      }
      o.method = *method;
      if (static_cast<int>(!sparsity_text.empty()) + static_cast<int>(!pattern_text.empty()) +
              static_cast<int>(!job.layer_sparsity.empty()) !=
          1) {
        return OptionError(
            "give exactly one of --sparsity FRACTION, --layer-sparsity SCHEDULE or "
            "--pattern N:M (or --structured)");
      }
      // --layer-sparsity leaves o.pattern unstructured; the schedule is parsed
      // against the model's layer count once the model is loaded.
      if (job.layer_sparsity.empty()) {
        const std::string& text = sparsity_text.empty() ? pattern_text : sparsity_text;
        auto p = prune::ParseSparsityPattern(text);
        if (!p.ok()) return OptionError(p.status().message());
        if (!sparsity_text.empty() && p->is_nm()) {
          return OptionError(absl::StrCat("--sparsity takes a fraction; for \"", sparsity_text,
                                          "\" use --pattern"));
        }
        if (!pattern_text.empty() && !p->is_nm()) {
          return OptionError(absl::StrCat("--pattern takes N:M (2:4, 4:8); for \"", pattern_text,
                                          "\" use --sparsity"));
        }
        o.pattern = *p;
      }
      o.sparsegpt = sgpt;
      if (prune::NeedsCalibration(o) && calib.files.empty()) {
        return OptionError(absl::StrCat(prune::PruneMethodName(o.method),
                                        " needs calibration data: --calib FILE"));
      }
      if (o.method == prune::PruneMethod::kSparseGpt &&
          (sgpt.dampening < 0 || sgpt.block_size < 1)) {
        return OptionError("--dampening must be >= 0 and --block-size >= 1");
      }
    }
    if (calib.options.samples < 1 || calib.options.seq_len < 2) {
      return OptionError("--calib-samples must be >= 1 and --calib-seq-len >= 2");
    }
    job.sparse_format = format == "sparse";
    ASSIGN_OR_RETURN(prune::PruneJobResult result, prune::PruneModelToDirectory(job, *io.progress));
    const prune::PruneJobResult* r = &result;
    const double secs = SecondsSince(t0);
    const size_t rss = PeakRssBytes();
    const std::string dtype(DTypeName(r->dtype));
    if (job.structured) {
      if (json) {
        nlohmann::ordered_json j = {{"output", job.out},
                                    {"method", "structured"},
                                    {"config", prune::ConfigSummary(r->config)},
                                    {"config_before", prune::ConfigSummary(r->config_before)},
                                    {"parameters", r->params},
                                    {"parameters_before", r->params_before},
                                    {"bytes", r->bytes},
                                    {"dtype", dtype},
                                    {"seconds", secs},
                                    {"peak_rss_bytes", rss}};
        *io.out << j.dump() << "\n";
      } else {
        *io.out << absl::StrFormat(
            "wrote %s: structured pruning of %s\n  kept %s\n  parameters %s -> %s (%.1f%%), %s "
            "%s; %.1f s, peak RSS %s\n",
            job.out, prune::ConfigLine(r->config_before), prune::ConfigLine(r->config),
            HumanCount(r->params_before), HumanCount(r->params),
            100.0 * r->params / std::max<int64_t>(r->params_before, 1), HumanBytes(r->bytes), dtype,
            secs, HumanBytes(static_cast<double>(rss)));
      }
      return absl::OkStatus();
    }
    const prune::PruneReport& report = r->report;
    const bool sparse = r->format != "dense";
    if (json) {
      nlohmann::ordered_json j = {{"output", job.out},
                                  {"method", prune::PruneMethodName(r->applied.method)},
                                  {"pattern", prune::DescribeSparsity(r->applied)},
                                  {"format", r->format},
                                  {"linear_sparsity", report.linear_sparsity()},
                                  {"linear_zeros", report.linear_zeros},
                                  {"linear_elements", report.linear_elements},
                                  {"nm_2_4", report.nm_2_4},
                                  {"nm_4_8", report.nm_4_8},
                                  {"layer_sparsity", report.layer_sparsity},
                                  {"parameters", r->params},
                                  {"nonzero_parameters", r->params - report.linear_zeros},
                                  {"bytes", r->bytes},
                                  {"dtype", dtype},
                                  {"calibration_tokens", r->calibration_tokens},
                                  {"seconds", secs},
                                  {"peak_rss_bytes", rss}};
      *io.out << j.dump() << "\n";
    } else {
      *io.out << absl::StrFormat(
          "wrote %s%s: %s %s, %.2f%% of linear weights zero (%d of %d)%s%s; %s parameters (%s "
          "nonzero), %s %s; %.1f s, peak RSS %s\n",
          job.out, sparse ? absl::StrCat(" (decoder linears ", r->format, ")") : std::string(),
          prune::PruneMethodName(r->applied.method), prune::DescribeSparsity(r->applied),
          100 * report.linear_sparsity(), report.linear_zeros, report.linear_elements,
          report.nm_2_4 ? ", 2:4 holds" : "", report.nm_4_8 ? ", 4:8 holds" : "",
          HumanCount(r->params), HumanCount(r->params - report.linear_zeros), HumanBytes(r->bytes),
          dtype, secs, HumanBytes(static_cast<double>(rss)));
    }
    return absl::OkStatus();
  }

 private:
  bool MethodGiven(const po::variables_map& vm) const {
    auto it = vm.find("method");
    return method_in_stage || (it != vm.end() && !it->second.defaulted());
  }

  std::string method_name, sparsity_text, pattern_text, format_name;
  prune::PruneJobOptions job;
  OutputOption out{OutputOption::Kind::kFolder};
  prune::SparseGptOptions sgpt;
  bool json = false, method_in_stage = false;
  int threads = 0;
};

}  // namespace

std::unique_ptr<JobCommand> NewPruneJob() { return std::make_unique<PruneJob>(); }

}  // namespace retort::pipeline
