// retort prune MODEL OUT --method magnitude|wanda|sparsegpt
//                        (--sparsity S | --layer-sparsity SCHEDULE | --pattern N:M)
//                        [--calib FILE ...] [options]
// retort prune MODEL OUT --structured (--target-params N | --num-layers L --num-heads H
//                        --num-kv-heads K --intermediate-size I --hidden-size D) --calib FILE ...
//
// The passes are library functions (prune/model_pruner.h): unstructured /
// N:M pruning layer by layer (PruneModel) and, for structured pruning, the
// importance pass (CollectModelImportance) followed by PlanStructuredPruning
// and ApplyStructuredPlan (prune/structured.h). This file parses, checks the
// arguments, calls them and writes the result as a dense HF directory, or with
// --format sparse (unstructured / N:M only) with the decoder linears stored
// without their zeros in compressed-tensors' sparse-bitmask layout
// (sparse-24-bitmask for 2:4; formats/compressed_tensors.h).
//
// Nothing is written until everything has succeeded: the output directory is
// built under a temporary name beside OUT and renamed into place.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/calibration_args.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/file.h"
#include "core/process.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "formats/compressed_tensors.h"
#include "formats/hf_dir.h"
#include "model/calibration.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "prune/model_pruner.h"
#include "prune/structured.h"
#include "prune/unstructured.h"

namespace retort::cli {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

void PrintLayerProgress(const LayerProgress& p) {
  const double eta = p.total_seconds / (p.layer + 1) * (p.num_layers - p.layer - 1);
  std::cerr << absl::StrFormat(
      "[prune] layer %d/%d  %.2f s  (%.1f s so far, ETA %.0f s)  peak RSS %s\n", p.layer + 1,
      p.num_layers, p.seconds, p.total_seconds, eta, HumanBytes(static_cast<double>(p.peak_rss)));
}

// --dtype: "auto" keeps the model's float dtype (bf16 for anything else).
absl::StatusOr<DType> OutputDType(const std::string& name, const ModelConfig& config) {
  if (absl::AsciiStrToLower(name) == "auto") {
    const DType d = config.torch_dtype;
    return d == DType::kF32 || d == DType::kF16 ? d : DType::kBF16;
  }
  return ParseWeightDType(name);
}

// "123456", "90M", "1.5B", "70%" (of `total`).
absl::StatusOr<int64_t> ParseParamCount(const std::string& text, int64_t total) {
  std::string t(absl::StripAsciiWhitespace(text));
  double scale = 1;
  bool percent = false;
  if (!t.empty()) {
    const char last = absl::ascii_toupper(t.back());
    if (last == '%') percent = true;
    if (last == 'K') scale = 1e3;
    if (last == 'M') scale = 1e6;
    if (last == 'B' || last == 'G') scale = 1e9;
    if (percent || scale != 1) t.pop_back();
  }
  double v = 0;
  if (t.empty() || !absl::SimpleAtod(t, &v) || !std::isfinite(v) || v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--target-params \"", text, "\" is not a positive count (e.g. 90000000, 90M or 70%)"));
  }
  if (percent) {
    if (v >= 100) {
      return absl::InvalidArgumentError(
          absl::StrCat("--target-params ", text, " must be below 100%"));
    }
    return static_cast<int64_t>(v / 100 * static_cast<double>(total));
  }
  return static_cast<int64_t>(v * scale);
}

struct WriteStats {
  int64_t params = 0;  // dense parameter count
  uint64_t bytes = 0;  // tensor bytes written
};

// --format sparse: the decoder linears are written in compressed-tensors'
// sparse layout and config.json gets its "quantization_config".
struct SparseExport {
  std::string structure;  // "unstructured" or "N:M"
  double global_sparsity = 0;
};

// config.json (torch_dtype = dtype), the weights in `dtype`, MODEL's tokenizer
// files. With `sparse`, every decoder linear "model.layers.L.<slot>.weight" is
// replaced by its compressed-tensors sparse tensors.
absl::StatusOr<WriteStats> WritePrunedModel(
    const std::string& model_path, ModelConfig config,
    const std::vector<std::pair<std::string, Tensor>>& weights, DType dtype, const std::string& dir,
    const SparseExport* sparse = nullptr) {
  config.torch_dtype = dtype;
  std::set<std::string> sparse_names;
  if (sparse != nullptr) {
    for (int64_t l = 0; l < config.num_layers; ++l) {
      for (LinearSlot slot : kLinearSlots) sparse_names.insert(LinearWeightName(l, slot));
    }
  }
  const bool two_four = sparse != nullptr && sparse->structure == "2:4";
  WriteStats stats;
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(weights.size());
  for (const auto& [name, t] : weights) {
    Tensor out = t.dtype() == dtype ? t : t.To(dtype);
    stats.params += out.numel();
    if (sparse_names.count(name) == 0) {
      stats.bytes += out.nbytes();
      tensors.emplace_back(name, std::move(out));
      continue;
    }
    const std::string module = name.substr(0, name.size() - std::string(".weight").size());
    ASSIGN_OR_RETURN(auto packed,
                     two_four ? PackSparse24Bitmask(module, out) : PackSparseBitmask(module, out));
    for (auto& [pname, pt] : packed) {
      stats.bytes += pt.nbytes();
      tensors.emplace_back(std::move(pname), std::move(pt));
    }
  }
  nlohmann::json config_json = config.ToJson();
  if (sparse != nullptr) {
    config_json["quantization_config"] =
        SparseQuantizationConfig(sparse->structure, sparse->global_sparsity, {"lm_head"});
  }
  RETURN_IF_ERROR(WriteHfDirectory(dir, config_json, tensors));
  ASSIGN_OR_RETURN(auto files, TokenizerFiles(model_path));
  for (const auto& [name, contents] : files) {
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(dir) / name).string(), contents));
  }
  return stats;
}

nlohmann::ordered_json ConfigSummary(const ModelConfig& c) {
  return {{"num_layers", c.num_layers},
          {"num_heads", c.num_heads},
          {"num_kv_heads", c.num_kv_heads},
          {"head_dim", c.head_dim},
          {"intermediate_size", c.intermediate_size},
          {"hidden_size", c.hidden_size}};
}

std::string ConfigLine(const ModelConfig& c) {
  return absl::StrFormat("%d layers, hidden %d, intermediate %d, %d heads, %d kv heads",
                         c.num_layers, c.hidden_size, c.intermediate_size, c.num_heads,
                         c.num_kv_heads);
}

constexpr char kSummary[] =
    "Prune a model. Unstructured or N:M (--method magnitude|wanda|sparsegpt with --sparsity 0.5 "
    "or --pattern 2:4|4:8): zeros in the decoder layers' linears, layer by layer on calibration "
    "data (wanda, sparsegpt), written as a dense HF directory. Structured (--structured with "
    "--target-params or target dimensions): removes layers, attention heads (whole KV groups "
    "where GQA needs it), MLP channels and hidden channels by activation importance, giving a "
    "smaller dense HF model.\n\n"
    "Recovering quality after structured pruning (Minitron's recipe: distill from the unpruned "
    "model):\n"
    "  retort prune BASE PRUNED --structured --target-params 50% --calib data.txt\n"
    "  retort distill PRUNED --teacher BASE --kd-weight 1 --ce-weight 0 --data data.txt "
    "--max-steps 500 -o RECOVERED\n"
    "(the student is written to RECOVERED/final; the teacher must share the tokenizer, which a "
    "pruned model does).";

}  // namespace

int RunPrune(const Args& args) {
  CommandSpec spec{"prune",
                   "MODEL OUT (--method M --sparsity S | --pattern N:M | --structured TARGET) "
                   "[--calib FILE ...] [options]",
                   kSummary};
  spec.default_model = true;
  spec.device = true;
  po::options_description opts("options");
  std::string model_path, out, method_name = "magnitude", sparsity_text, pattern_text,
                               layer_sparsity_text, target_params_text, dtype_name = "auto",
                               format_name = "dense";
  CalibArgs calib;
  prune::SparseGptOptions sgpt;
  prune::StructuredTarget target;
  bool structured = false, json = false;
  int threads = 0;
  opts.add_options()("model", po::value(&model_path)->required(), "HF directory (f32/bf16/f16)")(
      "out", po::value(&out)->required(), "output HF directory")(
      "method", po::value(&method_name)->default_value("magnitude"),
      "unstructured criterion: magnitude, wanda or sparsegpt (the last two need --calib)")(
      "sparsity", po::value(&sparsity_text),
      "fraction of each linear's weights to zero: 0.5 or 50%")(
      "layer-sparsity", po::value(&layer_sparsity_text),
      "per-layer fractions instead of --sparsity: one per decoder layer (0.3,0.4,...) or ranges "
      "covering every layer (0-9=0.4,10-29=0.6)")("pattern", po::value(&pattern_text),
                                                  "N:M sparsity: 2:4 or 4:8 (at most N nonzeros in "
                                                  "every M consecutive inputs)")(
      "dampening", po::value(&sgpt.dampening)->default_value(0.01),
      "SparseGPT: fraction of the mean Hessian diagonal added to it")(
      "block-size", po::value(&sgpt.block_size)->default_value(128),
      "SparseGPT: columns per mask block and lazy update")(
      "structured", po::bool_switch(&structured),
      "structured pruning to a smaller dense model (needs --calib)")(
      "target-params", po::value(&target_params_text),
      "structured: parameter budget (90000000, 90M, or 70% of the model); dimensions not given "
      "below are chosen to fit it")("num-layers", po::value(&target.num_layers),
                                    "structured: decoder layers to keep")(
      "num-heads", po::value(&target.num_heads), "structured: query heads to keep")(
      "num-kv-heads", po::value(&target.num_kv_heads), "structured: key/value heads to keep")(
      "intermediate-size", po::value(&target.intermediate_size),
      "structured: MLP channels to keep")("hidden-size", po::value(&target.hidden_size),
                                          "structured: hidden channels to keep")(
      "dtype", po::value(&dtype_name)->default_value("auto"),
      "output weights: auto (the model's dtype; bf16 when it is not a float type), f32, bf16, f16")(
      "format", po::value(&format_name)->default_value("dense"),
      "dense (zeros stored) or sparse: the decoder linears in compressed-tensors sparse-bitmask "
      "(sparse-24-bitmask with --pattern 2:4) for vLLM-style loaders; retort itself does not "
      "load sparse checkpoints")("json", po::bool_switch(&json),
                                 "print the result as one JSON object")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  AddCalibOptions(opts, calib);
  po::positional_options_description pos;
  pos.add("model", 1).add("out", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (threads > 0) SetNumThreads(threads);
  const auto t0 = Clock::now();
  const std::string format = absl::AsciiStrToLower(format_name);
  if (format != "dense" && format != "sparse") {
    return UsageError(spec.name,
                      absl::StrCat("--format \"", format_name, "\": expected dense or sparse"));
  }
  if (format == "sparse" && structured) {
    return UsageError(spec.name,
                      "--format sparse is for unstructured or N:M pruning; --structured writes a "
                      "smaller dense model");
  }

  // Everything that can be checked from the arguments alone.
  const bool has_dims = target.num_layers != 0 || target.num_heads != 0 ||
                        target.num_kv_heads != 0 || target.intermediate_size != 0 ||
                        target.hidden_size != 0;
  prune::PruneOptions o;
  if (structured) {
    if (!sparsity_text.empty() || !pattern_text.empty() || !layer_sparsity_text.empty() ||
        !vm["method"].defaulted()) {
      return UsageError(spec.name,
                        "--structured does not take --method/--sparsity/--layer-sparsity/--pattern "
                        "(run two "
                        "prune commands to combine them)");
    }
    if (target_params_text.empty() && !has_dims) {
      return UsageError(spec.name,
                        "--structured needs --target-params N or target dimensions "
                        "(--num-layers, --num-heads, --num-kv-heads, "
                        "--intermediate-size, --hidden-size)");
    }
    if (target.num_layers < 0 || target.num_heads < 0 || target.num_kv_heads < 0 ||
        target.intermediate_size < 0 || target.hidden_size < 0) {
      return UsageError(spec.name, "structured target dimensions must be positive");
    }
    if (calib.files.empty()) {
      return UsageError(spec.name,
                        "--structured needs calibration data for importance: "
                        "--calib FILE");
    }
  } else {
    if (!target_params_text.empty() || has_dims) {
      return UsageError(spec.name, "--target-params and target dimensions need --structured");
    }
    auto method = prune::ParsePruneMethod(method_name);
    if (!method.ok()) {
      return UsageError(spec.name, absl::StrCat("--method \"", method_name,
                                                "\": expected magnitude, wanda or sparsegpt"));
    }
    o.method = *method;
    if (static_cast<int>(!sparsity_text.empty()) + static_cast<int>(!pattern_text.empty()) +
            static_cast<int>(!layer_sparsity_text.empty()) !=
        1) {
      return UsageError(spec.name,
                        "give exactly one of --sparsity FRACTION, --layer-sparsity SCHEDULE or "
                        "--pattern N:M (or --structured)");
    }
    // --layer-sparsity leaves o.pattern unstructured; the schedule is parsed
    // against the model's layer count once the model is loaded.
    if (layer_sparsity_text.empty()) {
      const std::string& text = sparsity_text.empty() ? pattern_text : sparsity_text;
      auto p = prune::ParseSparsityPattern(text);
      if (!p.ok()) return UsageError(spec.name, std::string(p.status().message()));
      if (!sparsity_text.empty() && p->is_nm()) {
        return UsageError(spec.name, absl::StrCat("--sparsity takes a fraction; for \"",
                                                  sparsity_text, "\" use --pattern"));
      }
      if (!pattern_text.empty() && !p->is_nm()) {
        return UsageError(spec.name, absl::StrCat("--pattern takes N:M (2:4, 4:8); for \"",
                                                  pattern_text, "\" use --sparsity"));
      }
      o.pattern = *p;
    }
    o.sparsegpt = sgpt;
    if (prune::NeedsCalibration(o) && calib.files.empty()) {
      return UsageError(spec.name, absl::StrCat(prune::PruneMethodName(o.method),
                                                " needs calibration data: --calib FILE"));
    }
    if (o.method == prune::PruneMethod::kSparseGpt && (sgpt.dampening < 0 || sgpt.block_size < 1)) {
      return UsageError(spec.name, "--dampening must be >= 0 and --block-size >= 1");
    }
  }
  if (calib.samples < 1 || calib.seq_len < 2) {
    return UsageError(spec.name, "--calib-samples must be >= 1 and --calib-seq-len >= 2");
  }
  {
    std::error_code ec;
    if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec))) {
      return Fail(spec.name, absl::AlreadyExistsError(absl::StrCat(
                                 out, " already exists (remove it or choose another OUT)")));
    }
  }

  // Then what needs the model, before any long work.
  auto model = LoadEngine(model_path);
  if (!model.ok()) return Fail(spec.name, model.status());
  Transformer& m = **model;
  const ModelConfig config = m.config();
  if (absl::Status s = prune::CheckFloatWeights(m); !s.ok()) {
    return Fail(spec.name, absl::Status(s.code(), absl::StrCat(model_path, ": ", s.message())));
  }
  auto dtype = OutputDType(dtype_name, config);
  if (!dtype.ok()) return UsageError(spec.name, std::string(dtype.status().message()));
  o.dtype = *dtype;
  const int64_t params_before = config.ParameterCount();
  if (structured) {
    if (!target_params_text.empty()) {
      auto n = ParseParamCount(target_params_text, params_before);
      if (!n.ok()) return UsageError(spec.name, std::string(n.status().message()));
      target.target_params = *n;
    }
    if (absl::Status s = prune::CheckStructuredTarget(config, target); !s.ok()) {
      return Fail(spec.name, s);
    }
  } else {
    if (!layer_sparsity_text.empty()) {
      auto schedule = prune::ParseLayerSparsity(layer_sparsity_text, config.num_layers);
      if (!schedule.ok()) return UsageError(spec.name, std::string(schedule.status().message()));
      o.layer_sparsity = std::move(*schedule);
    }
    if (absl::Status s = prune::CheckPruneOptions(m, o); !s.ok()) return Fail(spec.name, s);
  }
  std::vector<std::vector<int32_t>> samples;
  if (!calib.files.empty() && (structured || prune::NeedsCalibration(o))) {
    auto s = LoadCalibration(model_path, m, calib);
    if (!s.ok()) return Fail(spec.name, s.status());
    samples = std::move(*s);
  }
  auto staged = StagedDir::Create(out);
  if (!staged.ok()) return Fail(spec.name, staged.status());

  if (structured) {
    std::cerr << absl::StrFormat("[prune] structured, importance over %d layers\n",
                                 config.num_layers);
    auto importance = prune::CollectModelImportance(m, samples, PrintLayerProgress);
    if (!importance.ok()) return Fail(spec.name, importance.status());
    auto plan = prune::PlanStructuredPruning(config, *importance, target);
    if (!plan.ok()) return Fail(spec.name, plan.status());
    auto pruned = prune::ApplyStructuredPlan(config, m.NamedWeights(), *plan);
    if (!pruned.ok()) return Fail(spec.name, pruned.status());
    const ModelConfig& kept = pruned->first;
    // The engine must run what is written (shares the tensors, copies nothing).
    if (auto check = Transformer::FromNamedWeights(kept, pruned->second, "pruned model");
        !check.ok()) {
      return Fail(spec.name, check.status());
    }
    model->reset();  // the original weights are no longer needed
    auto stats = WritePrunedModel(model_path, kept, pruned->second, *dtype, staged->path());
    if (!stats.ok()) return Fail(spec.name, stats.status());
    if (absl::Status s = staged->Commit(); !s.ok()) return Fail(spec.name, s);
    const double secs = SecondsSince(t0);
    const size_t rss = PeakRssBytes();
    if (json) {
      nlohmann::ordered_json j = {{"output", out},
                                  {"method", "structured"},
                                  {"config", ConfigSummary(kept)},
                                  {"config_before", ConfigSummary(config)},
                                  {"parameters", stats->params},
                                  {"parameters_before", params_before},
                                  {"bytes", stats->bytes},
                                  {"dtype", std::string(DTypeName(*dtype))},
                                  {"seconds", secs},
                                  {"peak_rss_bytes", rss}};
      std::cout << j.dump() << "\n";
    } else {
      std::cout << absl::StrFormat(
          "wrote %s: structured pruning of %s\n  kept %s\n  parameters %s -> %s (%.1f%%), %s "
          "%s; %.1f s, peak RSS %s\n",
          out, ConfigLine(config), ConfigLine(kept), HumanCount(params_before),
          HumanCount(stats->params), 100.0 * stats->params / std::max<int64_t>(params_before, 1),
          HumanBytes(stats->bytes), std::string(DTypeName(*dtype)), secs,
          HumanBytes(static_cast<double>(rss)));
    }
    return kExitOk;
  }

  std::cerr << absl::StrFormat("[prune] %s %s, %d layers\n", prune::PruneMethodName(o.method),
                               prune::DescribeSparsity(o), config.num_layers);
  auto report = prune::PruneModel(m, samples, o, PrintLayerProgress);
  if (!report.ok()) return Fail(spec.name, report.status());
  std::optional<SparseExport> sparse;
  if (format == "sparse") {
    // compressed-tensors' global_sparsity: the fraction of all parameters that are zero.
    sparse = SparseExport{o.pattern.is_nm() ? o.pattern.ToString() : "unstructured",
                          static_cast<double>(report->linear_zeros) /
                              static_cast<double>(std::max<int64_t>(params_before, 1))};
  }
  const std::string written_format =
      sparse ? SparseFormatFor(sparse->structure) : std::string("dense");
  auto stats = WritePrunedModel(model_path, config, m.NamedWeights(), *dtype, staged->path(),
                                sparse ? &*sparse : nullptr);
  if (!stats.ok()) return Fail(spec.name, stats.status());
  if (absl::Status s = staged->Commit(); !s.ok()) return Fail(spec.name, s);
  const double secs = SecondsSince(t0);
  const size_t rss = PeakRssBytes();
  if (json) {
    nlohmann::ordered_json j = {{"output", out},
                                {"method", prune::PruneMethodName(o.method)},
                                {"pattern", prune::DescribeSparsity(o)},
                                {"format", written_format},
                                {"linear_sparsity", report->linear_sparsity()},
                                {"linear_zeros", report->linear_zeros},
                                {"linear_elements", report->linear_elements},
                                {"nm_2_4", report->nm_2_4},
                                {"nm_4_8", report->nm_4_8},
                                {"layer_sparsity", report->layer_sparsity},
                                {"parameters", stats->params},
                                {"nonzero_parameters", stats->params - report->linear_zeros},
                                {"bytes", stats->bytes},
                                {"dtype", std::string(DTypeName(*dtype))},
                                {"calibration_tokens", CountTokens(samples)},
                                {"seconds", secs},
                                {"peak_rss_bytes", rss}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "wrote %s%s: %s %s, %.2f%% of linear weights zero (%d of %d)%s%s; %s parameters (%s "
        "nonzero), %s %s; %.1f s, peak RSS %s\n",
        out, sparse ? absl::StrCat(" (decoder linears ", written_format, ")") : std::string(),
        prune::PruneMethodName(o.method), prune::DescribeSparsity(o),
        100 * report->linear_sparsity(), report->linear_zeros, report->linear_elements,
        report->nm_2_4 ? ", 2:4 holds" : "", report->nm_4_8 ? ", 4:8 holds" : "",
        HumanCount(stats->params), HumanCount(stats->params - report->linear_zeros),
        HumanBytes(stats->bytes), std::string(DTypeName(*dtype)), secs,
        HumanBytes(static_cast<double>(rss)));
  }
  return kExitOk;
}

}  // namespace retort::cli
