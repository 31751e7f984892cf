#include "prune/prune_job.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"
#include "formats/hf_dir.h"
#include "model/model_files.h"
#include "model/transformer.h"
#include "prune/unstructured.h"

namespace retort::prune {
namespace fs = std::filesystem;
namespace {

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
    return OptionError(absl::StrCat("--target-params \"", text,
                                    "\" is not a positive count (e.g. 90000000, 90M or 70%)"));
  }
  if (percent) {
    if (v >= 100) {
      return OptionError(absl::StrCat("--target-params ", text, " must be below 100%"));
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

}  // namespace

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

absl::StatusOr<PruneJobResult> PruneModelToDirectory(const PruneJobOptions& o,
                                                     ProgressSink& progress) {
  PruneOptions po = o.unstructured;
  auto log_layer = [&progress](const LayerProgress& p) {
    const double eta = p.total_seconds / (p.layer + 1) * (p.num_layers - p.layer - 1);
    progress.Line(
        absl::StrFormat("[prune] layer %d/%d  %.2f s  (%.1f s so far, ETA %.0f s)  peak RSS %s",
                        p.layer + 1, p.num_layers, p.seconds, p.total_seconds, eta,
                        HumanBytes(static_cast<double>(p.peak_rss))));
  };
  if (!o.replace_existing) {
    std::error_code ec;
    if (fs::exists(o.out, ec) && !(fs::is_directory(o.out, ec) && fs::is_empty(o.out, ec))) {
      return absl::AlreadyExistsError(
          absl::StrCat(o.out, " already exists (use --force to replace it)"));
    }
  }
  // What needs the model, before any long work. Weights stored quantized (a
  // GGUF's blocks) are pruned from their f32 dequantization.
  std::string dequantized;
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model, LoadFloatEngine(o.model_path, &dequantized));
  if (!dequantized.empty()) {
    progress.Line(absl::StrCat("[prune] ", o.model_path, ": ", dequantized,
                               " weights dequantized to f32 for pruning"));
  }
  Transformer& m = *model;
  PruneJobResult r;
  r.config_before = m.config();
  const ModelConfig& config = r.config_before;
  if (absl::Status s = CheckFloatWeights(m); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(o.model_path, ": ", s.message()));
  }
  {
    auto dtype = OutputDType(o.dtype, config);
    if (!dtype.ok()) return OptionError(dtype.status().message());
    r.dtype = po.dtype = *dtype;
  }
  r.params_before = config.ParameterCount();
  StructuredTarget target = o.target;
  if (o.structured) {
    if (!o.target_params.empty()) {
      ASSIGN_OR_RETURN(target.target_params, ParseParamCount(o.target_params, r.params_before));
    }
    RETURN_IF_ERROR(CheckStructuredTarget(config, target));
  } else {
    if (!o.layer_sparsity.empty()) {
      auto schedule = ParseLayerSparsity(o.layer_sparsity, config.num_layers);
      if (!schedule.ok()) return OptionError(schedule.status().message());
      po.layer_sparsity = std::move(*schedule);
    }
    RETURN_IF_ERROR(CheckPruneOptions(m, po));
  }
  std::vector<std::vector<int32_t>> samples;
  if (!o.calib.files.empty() && (o.structured || NeedsCalibration(po))) {
    ASSIGN_OR_RETURN(samples,
                     LoadModelCalibration(o.model_path, config.vocab_size, o.calib, progress));
  }
  r.calibration_tokens = CountTokens(samples);
  ASSIGN_OR_RETURN(StagedDirectory staged,
                   StagedDirectory::Create(o.out, {.temp_path = {},
                                                   .replace_existing = o.replace_existing,
                                                   .must_be_new = !o.replace_existing}));

  if (o.structured) {
    progress.Line(
        absl::StrFormat("[prune] structured, importance over %d layers", config.num_layers));
    ASSIGN_OR_RETURN(auto importance, CollectModelImportance(m, samples, log_layer));
    ASSIGN_OR_RETURN(auto plan, PlanStructuredPruning(config, importance, target));
    ASSIGN_OR_RETURN(auto pruned, ApplyStructuredPlan(config, m.NamedWeights(), plan));
    // The engine must run what is written (shares the tensors, copies nothing).
    RETURN_IF_ERROR(
        Transformer::FromNamedWeights(pruned.first, pruned.second, "pruned model").status());
    model.reset();  // the original weights are no longer needed
    r.config = pruned.first;
    ASSIGN_OR_RETURN(WriteStats stats, WritePrunedModel(o.model_path, r.config, pruned.second,
                                                        r.dtype, staged.path()));
    RETURN_IF_ERROR(staged.Commit());
    r.params = stats.params;
    r.bytes = stats.bytes;
    return r;
  }

  progress.Line(absl::StrFormat("[prune] %s %s, %d layers", PruneMethodName(po.method),
                                DescribeSparsity(po), config.num_layers));
  ASSIGN_OR_RETURN(r.report, PruneModel(m, samples, po, log_layer));
  r.applied = po;
  std::optional<SparseExport> sparse;
  if (o.sparse_format) {
    // compressed-tensors' global_sparsity: the fraction of all parameters that are zero.
    sparse = SparseExport{po.pattern.is_nm() ? po.pattern.ToString() : "unstructured",
                          static_cast<double>(r.report.linear_zeros) /
                              static_cast<double>(std::max<int64_t>(r.params_before, 1))};
    r.format = SparseFormatFor(sparse->structure);
  }
  r.config = config;
  ASSIGN_OR_RETURN(WriteStats stats,
                   WritePrunedModel(o.model_path, config, m.NamedWeights(), r.dtype, staged.path(),
                                    sparse ? &*sparse : nullptr));
  RETURN_IF_ERROR(staged.Commit());
  r.params = stats.params;
  r.bytes = stats.bytes;
  return r;
}

LinearSparsity CountLinearSparsity(const HfDirectory& dir) {
  LinearSparsity out;
  for (const std::string& name : dir.TensorNames()) {
    if (!absl::StartsWith(name, "model.layers.") || !absl::EndsWith(name, "_proj.weight")) continue;
    auto t = dir.Get(name);
    if (!t.ok()) {
      out.error = std::string(t.status().message());
      return out;
    }
    auto s = CountSparsity(*t);
    if (!s.ok()) {
      out.error = absl::StrCat(name, ": ", std::string(s.status().message()));
      return out;
    }
    out.elements += s->elements;
    out.zeros += s->zeros;
    out.nm_2_4 = out.nm_2_4 && s->nm_2_4;
    out.nm_4_8 = out.nm_4_8 && s->nm_4_8;
  }
  if (out.elements == 0) out.nm_2_4 = out.nm_4_8 = false;
  return out;
}

}  // namespace retort::prune
