#include "prune/model_pruner.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/named_values.h"
#include "core/process.h"
#include "core/status.h"
#include "kernels/backend.h"
#include "model/calibration.h"

namespace retort::prune {
namespace {

using Clock = std::chrono::steady_clock;

// f32/bf16/f16, what prune reads and installs (core's IsFloat also admits fp8).
bool IsPrunableFloat(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

// Per distinct linear input of a layer: what the method needs from it.
struct InputStats {
  int64_t cols = 0;
  int64_t rows = 0;
  std::vector<double> sq;    // Wanda: sum over tokens of x_j^2
  std::vector<double> gram;  // SparseGPT: sum over tokens of x x^T [cols, cols]
};

// Observes layer `runner.layer()`'s linear inputs into per-input statistics
// (SparseGPT's Gram matrices scaled to H = 2/n X^T X).
absl::StatusOr<std::map<LinearSlot, InputStats>> CollectInputStats(LayerwiseRunner& runner,
                                                                   PruneMethod method) {
  std::map<LinearSlot, InputStats> stats;
  Backend& be = DefaultBackend();
  absl::Status error;  // the first backend error (observers cannot return one)
  LinearInputObserver observe = [&](LinearSlot slot, const float* x, int64_t rows, int64_t cols) {
    InputStats& s = stats[slot];
    if (s.cols == 0) {
      s.cols = cols;
      if (method == PruneMethod::kWanda) s.sq.assign(cols, 0.0);
      if (method == PruneMethod::kSparseGpt) s.gram.assign(cols * cols, 0.0);
    }
    s.rows += rows;
    absl::Status st = method == PruneMethod::kWanda
                          ? be.AccumulateColumnSquares(x, rows, cols, s.sq.data())
                          : be.AccumulateGram(x, rows, cols, s.gram.data());
    if (error.ok()) error = st;
  };
  RETURN_IF_ERROR(runner.Observe(observe));
  RETURN_IF_ERROR(error);
  if (method == PruneMethod::kSparseGpt) {
    for (auto& [slot, s] : stats) {
      const double scale = 2.0 / static_cast<double>(std::max<int64_t>(s.rows, 1));
      for (double& h : s.gram) h *= scale;
    }
  }
  return stats;
}

}  // namespace

constexpr NamedValue<PruneMethod> kPruneMethods[] = {{PruneMethod::kMagnitude, "magnitude"},
                                                     {PruneMethod::kWanda, "wanda"},
                                                     {PruneMethod::kSparseGpt, "sparsegpt"}};

absl::StatusOr<PruneMethod> ParsePruneMethod(const std::string& name) {
  if (std::optional<PruneMethod> m = FindNamedValue(kPruneMethods, name)) return *m;
  return absl::InvalidArgumentError(
      absl::StrCat("pruning method \"", name, "\": expected ", NamesOf(kPruneMethods)));
}

const char* PruneMethodName(PruneMethod m) { return NameOfValue(kPruneMethods, m); }

absl::StatusOr<std::vector<double>> ParseLayerSparsity(const std::string& text,
                                                       int64_t num_layers) {
  auto err = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("layer sparsity \"", text, "\": ", msg));
  };
  auto fraction = [&](const std::string& item) -> absl::StatusOr<double> {
    auto p = ParseSparsityPattern(item);
    if (!p.ok()) return err(std::string(p.status().message()));
    if (p->is_nm()) return err(absl::StrCat("\"", item, "\" is N:M; give fractions per layer"));
    return p->sparsity;
  };
  if (num_layers < 1) return err("the model has no decoder layers");
  std::vector<std::string> items = absl::StrSplit(text, ',');
  std::vector<double> out;
  if (text.find('=') == std::string::npos) {
    if (static_cast<int64_t>(items.size()) != num_layers) {
      return err(absl::StrCat(items.size(), " fractions for ", num_layers,
                              " layers (give one per layer, or ranges such as 0-", num_layers - 1,
                              "=0.5)"));
    }
    for (const std::string& item : items) {
      ASSIGN_OR_RETURN(double v, fraction(std::string(absl::StripAsciiWhitespace(item))));
      out.push_back(v);
    }
    return out;
  }
  out.assign(num_layers, -1.0);
  for (const std::string& raw : items) {
    const std::string item(absl::StripAsciiWhitespace(raw));
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      return err(absl::StrCat("\"", item, "\": expected LAYER=FRACTION or FIRST-LAST=FRACTION"));
    }
    const std::string range = item.substr(0, eq);
    const size_t dash = range.find('-');
    int64_t first = 0, last = 0;
    if (!absl::SimpleAtoi(range.substr(0, dash), &first) ||
        (dash != std::string::npos && !absl::SimpleAtoi(range.substr(dash + 1), &last))) {
      return err(absl::StrCat("\"", range, "\" is not a layer or a FIRST-LAST range"));
    }
    if (dash == std::string::npos) last = first;
    if (first < 0 || last < first || last >= num_layers) {
      return err(absl::StrCat("layers ", range, " are outside 0-", num_layers - 1));
    }
    ASSIGN_OR_RETURN(double v, fraction(item.substr(eq + 1)));
    for (int64_t l = first; l <= last; ++l) {
      if (out[l] >= 0) return err(absl::StrCat("layer ", l, " is given twice"));
      out[l] = v;
    }
  }
  for (int64_t l = 0; l < num_layers; ++l) {
    if (out[l] < 0) return err(absl::StrCat("layer ", l, " has no sparsity"));
  }
  return out;
}

SparsityPattern LayerPattern(const PruneOptions& options, int64_t layer) {
  SparsityPattern p = options.pattern;
  if (!options.layer_sparsity.empty() && layer >= 0 &&
      layer < static_cast<int64_t>(options.layer_sparsity.size())) {
    p.sparsity = options.layer_sparsity[layer];
  }
  return p;
}

std::string DescribeSparsity(const PruneOptions& options) {
  const std::vector<double>& s = options.layer_sparsity;
  if (s.empty()) return options.pattern.ToString();
  double sum = 0;
  for (double v : s) sum += v;
  const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
  return absl::StrFormat("per-layer %.2f-%.2f (mean %.2f)", *lo, *hi, sum / s.size());
}

bool NeedsCalibration(const PruneOptions& options) {
  return options.method != PruneMethod::kMagnitude;
}

absl::Status CheckFloatWeights(const Transformer& model) {
  if (!model.QuantizedWeights().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(model.QuantizedWeights().begin()->first,
                     " is quantized; prune the original float weights instead"));
  }
  for (const auto& [name, t] : model.NamedWeights()) {
    if (!IsPrunableFloat(t.dtype())) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor ", name, " is stored as ", std::string(DTypeName(t.dtype())),
                       "; pruning reads f32/bf16/f16 weights (load the model with LoadFloatEngine, "
                       "which dequantizes the others)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPruneOptions(const Transformer& model, const PruneOptions& options) {
  if (options.method == PruneMethod::kSparseGpt &&
      (options.sparsegpt.dampening < 0 || options.sparsegpt.block_size < 1)) {
    return absl::InvalidArgumentError("SparseGPT dampening must be >= 0 and block size >= 1");
  }
  if (!IsPrunableFloat(options.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pruned weights are installed as f32, bf16 or f16, not ",
                     std::string(DTypeName(options.dtype))));
  }
  const ModelConfig& c = model.config();
  if (!options.layer_sparsity.empty()) {
    if (options.pattern.is_nm()) {
      return absl::InvalidArgumentError(
          "a per-layer sparsity schedule is for unstructured pruning, not N:M");
    }
    if (static_cast<int64_t>(options.layer_sparsity.size()) != c.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("per-layer sparsity has ", options.layer_sparsity.size(),
                       " entries; the model has ", c.num_layers, " decoder layers"));
    }
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const SparsityPattern pattern = LayerPattern(options, l);
    for (LinearSlot slot : kLinearSlots) {
      const std::string name = LinearWeightName(l, slot);
      const Tensor* t = model.FindWeight(name);
      if (t == nullptr) return absl::NotFoundError(absl::StrCat("the model has no weight ", name));
      RETURN_IF_ERROR(ValidateSparsityPattern(pattern, t->dim(1), name));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PruneReport> PruneModel(Transformer& model,
                                       const std::vector<std::vector<int32_t>>& calibration,
                                       const PruneOptions& options, const ProgressFn& progress) {
  const auto t_start = Clock::now();
  const ModelConfig& c = model.config();
  RETURN_IF_ERROR(CheckFloatWeights(model));
  RETURN_IF_ERROR(CheckPruneOptions(model, options));
  const bool calibrate = NeedsCalibration(options);
  PruneReport report;
  std::optional<LayerwiseRunner> runner;
  if (calibrate) {
    report.calibration_tokens = CountTokens(calibration);
    if (report.calibration_tokens == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(PruneMethodName(options.method), " needs calibration samples (none given)"));
    }
    ASSIGN_OR_RETURN(LayerwiseRunner r, LayerwiseRunner::Start(model, calibration));
    runner.emplace(std::move(r));
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto t_layer = Clock::now();
    std::map<LinearSlot, InputStats> stats;
    if (calibrate) {
      ASSIGN_OR_RETURN(stats, CollectInputStats(*runner, options.method));
    }
    const SparsityPattern pattern = LayerPattern(options, l);
    int64_t layer_elements = 0, layer_zeros = 0;
    for (LinearSlot slot : kLinearSlots) {
      const std::string name = LinearWeightName(l, slot);
      const Tensor* stored = model.FindWeight(name);
      if (stored == nullptr) {
        return absl::NotFoundError(absl::StrCat("the model has no weight ", name));
      }
      Tensor w = stored->To(DType::kF32);  // a private copy to prune in place
      float* data = w.mutable_data<float>();
      const int64_t rows = w.dim(0), cols = w.dim(1);
      const InputStats* in = nullptr;
      if (calibrate) {
        auto it = stats.find(InputSlot(slot));
        if (it == stats.end() || it->second.cols != cols) {
          return absl::InternalError(absl::StrCat("no calibration statistics for ", name));
        }
        in = &it->second;
      }
      switch (options.method) {
        case PruneMethod::kMagnitude:
          RETURN_IF_ERROR(PruneMagnitude(data, rows, cols, pattern, name));
          break;
        case PruneMethod::kWanda:
          RETURN_IF_ERROR(PruneWanda(data, rows, cols, in->sq.data(), pattern, name));
          break;
        case PruneMethod::kSparseGpt:
          RETURN_IF_ERROR(
              PruneSparseGpt(data, rows, cols, in->gram.data(), pattern, options.sparsegpt, name));
          break;
      }
      Tensor installed = options.dtype == DType::kF32 ? std::move(w) : w.To(options.dtype);
      ASSIGN_OR_RETURN(SparsityStats st, CountSparsity(installed));
      report.linear_elements += st.elements;
      report.linear_zeros += st.zeros;
      layer_elements += st.elements;
      layer_zeros += st.zeros;
      report.nm_2_4 = report.nm_2_4 && st.nm_2_4;
      report.nm_4_8 = report.nm_4_8 && st.nm_4_8;
      RETURN_IF_ERROR(model.ReplaceWeight(name, installed));
    }
    report.layer_sparsity.push_back(
        layer_elements > 0 ? static_cast<double>(layer_zeros) / layer_elements : 0.0);
    stats.clear();
    // The next layer's inputs, through this layer as pruned.
    if (calibrate && l + 1 < c.num_layers) RETURN_IF_ERROR(runner->Advance().status());
    const double secs = SecondsSince(t_layer);
    report.layer_seconds.push_back(secs);
    if (progress)
      progress(LayerProgress{l, c.num_layers, secs, SecondsSince(t_start), PeakRssBytes()});
  }
  report.seconds = SecondsSince(t_start);
  report.peak_rss = PeakRssBytes();
  return report;
}

absl::StatusOr<ModelImportance> CollectModelImportance(
    const Transformer& model, const std::vector<std::vector<int32_t>>& calibration,
    const ProgressFn& progress) {
  const auto t_start = Clock::now();
  const ModelConfig& c = model.config();
  if (CountTokens(calibration) == 0) {
    return absl::InvalidArgumentError(
        "structured importance needs calibration samples (none given)");
  }
  ImportanceCollector collector(c);
  ASSIGN_OR_RETURN(LayerwiseRunner runner, LayerwiseRunner::Start(model, calibration));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto t_layer = Clock::now();
    absl::Status failed;  // the observer cannot return one
    LinearInputObserver observe = [&](LinearSlot slot, const float* x, int64_t rows, int64_t) {
      if (!failed.ok()) return;
      switch (slot) {
        case LinearSlot::kQ:
        case LinearSlot::kGate:
          failed = collector.AddNormedHidden(x, rows);
          break;
        case LinearSlot::kO:
          failed = collector.AddAttentionOutput(l, x, rows);
          break;
        case LinearSlot::kDown:
          failed = collector.AddMlpActivation(l, x, rows);
          break;
        default:
          break;
      }
    };
    std::vector<std::vector<float>> inputs(runner.num_samples());
    for (int64_t i = 0; i < runner.num_samples(); ++i) inputs[i] = runner.hidden(i);
    RETURN_IF_ERROR(runner.Advance(&observe).status());
    RETURN_IF_ERROR(failed);
    for (int64_t i = 0; i < runner.num_samples(); ++i) {
      const int64_t n = static_cast<int64_t>(inputs[i].size()) / c.hidden_size;
      RETURN_IF_ERROR(collector.AddBlock(l, inputs[i].data(), runner.hidden(i).data(), n));
    }
    if (progress) {
      progress(LayerProgress{l, c.num_layers, SecondsSince(t_layer), SecondsSince(t_start),
                             PeakRssBytes()});
    }
  }
  return collector.Importance();
}

absl::Status CheckStructuredTarget(const ModelConfig& config, const StructuredTarget& target) {
  ModelImportance imp;
  imp.layers.resize(config.num_layers);
  for (LayerImportance& layer : imp.layers) {
    layer.head.assign(config.num_heads, 0.0);
    layer.mlp.assign(config.intermediate_size, 0.0);
  }
  imp.hidden.assign(config.hidden_size, 0.0);
  return PlanStructuredPruning(config, imp, target).status();
}

}  // namespace retort::prune
