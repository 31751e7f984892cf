// Prunes a whole model, one decoder layer at a time: the library side of
// `retort prune` (the CLI parses, calls these and writes the result).
//
// Unstructured / N:M (prune/unstructured.h): PruneModel zeroes entries of
// every decoder layer's linears (q/k/v/o, gate/up/down) in place, layer by
// layer. Wanda and SparseGPT read statistics of each linear's input on the
// calibration samples (Wanda: sum over tokens of x_j^2 per input column;
// SparseGPT: H = 2/n X^T X), taken on the model whose earlier layers are
// already pruned (model/calibration.h LayerwiseRunner, sequential order), and
// the pruned weights are installed in PruneOptions::dtype before the next
// layer is calibrated, so each layer sees what the written model computes.
// Embeddings, norms, biases and lm_head are untouched.
//
// Structured (prune/structured.h): CollectModelImportance runs the samples
// once through the unchanged model and feeds every activation Minitron-style
// importance needs (heads, MLP channels, hidden channels, block influence);
// PlanStructuredPruning and ApplyStructuredPlan then build the smaller model.
//
// Memory: the model as loaded plus one linear's f32 working copy, the
// calibration hidden states and one layer's input statistics (SparseGPT: one
// cols x cols f64 Gram matrix per distinct linear input); never a second
// copy of the model.
//
// Thread-safety: uses the process thread pool; call from one thread at a time.
#ifndef RETORT_PRUNE_MODEL_PRUNER_H_
#define RETORT_PRUNE_MODEL_PRUNER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "model/calibration.h"
#include "model/config.h"
#include "model/transformer.h"
#include "prune/structured.h"
#include "prune/unstructured.h"

namespace retort::prune {

enum class PruneMethod { kMagnitude, kWanda, kSparseGpt };
// "magnitude", "wanda", "sparsegpt".
absl::StatusOr<PruneMethod> ParsePruneMethod(const std::string& name);
const char* PruneMethodName(PruneMethod m);

struct PruneOptions {
  PruneMethod method = PruneMethod::kMagnitude;
  SparsityPattern pattern;
  // Per decoder layer target sparsity (unstructured only; one entry per
  // layer, each in (0, 1)); empty: pattern.sparsity in every layer.
  std::vector<double> layer_sparsity;
  SparseGptOptions sparsegpt;
  // The pruned linears are installed in this dtype (F32, BF16 or F16), the
  // one the caller writes, so later layers calibrate on the written weights.
  DType dtype = DType::kBF16;
};

using ProgressFn = LayerProgressFn;  // model/calibration.h

// Parses a per-layer sparsity schedule for a model of `num_layers` decoder
// layers: either one fraction per layer ("0.3,0.4,0.5,0.6") or ranges that
// cover every layer exactly once ("0-9=0.4,10-29=0.6", "0=0.3,1-29=0.55";
// fractions as in ParseSparsityPattern, "50%" too). Errors name the item:
// not a number, outside (0, 1), a layer out of range, given twice or missing,
// a list of the wrong length.
absl::StatusOr<std::vector<double>> ParseLayerSparsity(const std::string& text, int64_t num_layers);

// The pattern layer `layer` is pruned to: pattern with the layer's own
// sparsity when options.layer_sparsity is set.
SparsityPattern LayerPattern(const PruneOptions& options, int64_t layer);

// "0.5", "2:4", or "per-layer 0.30-0.70 (mean 0.50)".
std::string DescribeSparsity(const PruneOptions& options);

struct PruneReport {
  // Over all pruned linears, counted on the installed (output dtype) weights.
  int64_t linear_elements = 0;
  int64_t linear_zeros = 0;
  bool nm_2_4 = true;                  // every pruned linear satisfies 2:4
  bool nm_4_8 = true;                  // every pruned linear satisfies 4:8
  std::vector<double> layer_sparsity;  // achieved, per decoder layer
  double linear_sparsity() const {
    return linear_elements > 0 ? static_cast<double>(linear_zeros) / linear_elements : 0;
  }
  std::vector<double> layer_seconds;
  int64_t calibration_tokens = 0;
  double seconds = 0;
  size_t peak_rss = 0;
};

// Whether the method reads calibration samples (Wanda, SparseGPT).
bool NeedsCalibration(const PruneOptions& options);

// Pruning reads and rewrites float weights: error when a weight is quantized
// (a QuantizedMatrix, or stored in a non-float dtype such as GGUF blocks),
// naming the tensor.
absl::Status CheckFloatWeights(const Transformer& model);

// Every check PruneModel makes before any work, except the calibration set:
// the options (SparseGPT dampening >= 0 and block size >= 1, a float output
// dtype) and that every decoder linear exists and fits its layer's pattern
// (sparsity in (0, 1), M dividing its input width; ValidateSparsityPattern's
// errors naming the tensor; a per-layer schedule has one entry per layer and
// no N:M pattern). Does not repeat CheckFloatWeights.
absl::Status CheckPruneOptions(const Transformer& model, const PruneOptions& options);

// Prunes every decoder layer's linears of `model` in place (see the file
// comment). `calibration` may be empty for magnitude. Checks up front:
// CheckFloatWeights, CheckPruneOptions, calibration present when needed. On
// error the model may be partly pruned: callers discard it. `progress`, if
// set, is called after each layer.
absl::StatusOr<PruneReport> PruneModel(Transformer& model,
                                       const std::vector<std::vector<int32_t>>& calibration,
                                       const PruneOptions& options,
                                       const ProgressFn& progress = nullptr);

// Structured importance of every layer from one pass of `calibration` through
// `model` (unchanged). Error for an empty calibration set or a token outside
// the vocabulary. `progress`, if set, is called after each layer.
absl::StatusOr<ModelImportance> CollectModelImportance(
    const Transformer& model, const std::vector<std::vector<int32_t>>& calibration,
    const ProgressFn& progress = nullptr);

// Checks that `target` can be planned for `config` (GQA grouping, sizes,
// budget) before the calibration pass: PlanStructuredPruning on importance of
// the right sizes carrying no information.
absl::Status CheckStructuredTarget(const ModelConfig& config, const StructuredTarget& target);

}  // namespace retort::prune

#endif  // RETORT_PRUNE_MODEL_PRUNER_H_
