// Structured pruning (Minitron-style): remove attention heads, MLP channels,
// hidden (embedding) channels and whole decoder layers, giving a smaller
// DENSE model with a consistent config (Muralidharan et al. 2024, "Compact
// Language Models via Pruning and Knowledge Distillation"; block influence
// from ShortGPT, Men et al. 2024). Distillation from the original model is
// what recovers the quality afterwards.
//
// Three steps:
//   1. Importance from activations on calibration text. ImportanceCollector
//      takes, one calibration sequence at a time, the activations a layer-by-
//      layer driver sees and turns them into a ModelImportance.
//   2. PlanStructuredPruning picks what to keep for a StructuredTarget.
//   3. ApplyStructuredPlan slices the HF-named weights into the new model.
//
// Activation aggregation (Minitron's best width setting, "mean over the
// sequence, L2 over the batch"): for one sequence of T tokens, the score of a
// channel is the mean over its tokens of |a_t| (for a head: of the L2 norm of
// the head's head_dim slice of the attention output); the importance is the
// L2 norm of those per-sequence scores over all calibration sequences.
// Hidden channels are scored on the RMS-normalized hidden states every layer
// feeds its q/k/v and gate/up linears; each (layer, norm) occurrence counts
// as one more sequence in the L2 sum. Block influence of a layer is
// 1 - mean over all calibration tokens of cos(layer input, layer output).
#ifndef RETORT_PRUNE_STRUCTURED_H_
#define RETORT_PRUNE_STRUCTURED_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "model/config.h"

namespace retort::prune {

struct LayerImportance {
  std::vector<double> head;    // [num_heads] attention (query) head importance
  std::vector<double> mlp;     // [intermediate_size] MLP channel importance
  double block_influence = 0;  // 1 - mean cos(input, output) of the layer
};

struct ModelImportance {
  std::vector<LayerImportance> layers;  // [num_layers]
  std::vector<double> hidden;           // [hidden_size] hidden channel importance
};

// Accumulates ModelImportance over calibration sequences. Each Add* call
// passes the activations of ONE whole sequence (n tokens, row-major [n, width],
// f32), because the sequence mean needs all of its tokens. Not thread-safe.
class ImportanceCollector {
 public:
  explicit ImportanceCollector(const ModelConfig& config);

  // Input of layer `layer`'s o_proj: [n, num_heads * head_dim].
  absl::Status AddAttentionOutput(int64_t layer, const float* x, int64_t n);
  // Input of layer `layer`'s down_proj: [n, intermediate_size].
  absl::Status AddMlpActivation(int64_t layer, const float* x, int64_t n);
  // A normalized hidden state [n, hidden_size] (input of q/k/v or gate/up).
  absl::Status AddNormedHidden(const float* x, int64_t n);
  // Input and output (residual stream) of layer `layer`: [n, hidden_size] each.
  absl::Status AddBlock(int64_t layer, const float* input, const float* output, int64_t n);

  // The importance so far. Parts never fed are left empty (head/mlp/hidden)
  // or 0 (block influence); PlanStructuredPruning asks only for the parts the
  // target prunes.
  ModelImportance Importance() const;

 private:
  absl::Status CheckLayer(int64_t layer, const char* what, const float* x, int64_t n) const;

  ModelConfig config_;
  std::vector<std::vector<double>> head_sq_, mlp_sq_;  // per layer: sum of squared seq means
  std::vector<double> hidden_sq_;
  std::vector<double> cos_sum_;
  std::vector<int64_t> cos_tokens_;
};

// The per-channel building blocks of ImportanceCollector, for drivers that
// keep their own sums: adds (mean over the n rows of |x[t, c]|)^2 to
// sum_sq[c] for each of `width` channels.
void AccumulateChannelImportance(const float* x, int64_t n, int64_t width, double* sum_sq);
// Adds (mean over rows of ||x[t, h*head_dim : (h+1)*head_dim]||_2)^2 to sum_sq[h].
void AccumulateHeadImportance(const float* x, int64_t n, int64_t num_heads, int64_t head_dim,
                              double* sum_sq);
// Sum over the n rows of cos(input[t], output[t]) (a zero row counts as cos 1).
double SumCosine(const float* input, const float* output, int64_t n, int64_t width);

// What to prune to; 0 keeps a dimension unless target_params asks for it.
struct StructuredTarget {
  int num_layers = 0;
  int num_heads = 0;     // query heads
  int num_kv_heads = 0;  // key/value heads (GQA groups)
  int intermediate_size = 0;
  int hidden_size = 0;
  // > 0: a parameter budget (ModelConfig::ParameterCount). Dimensions given
  // above stay as given; the rest is chosen by the rule of
  // PlanStructuredPruning.
  int64_t target_params = 0;
};

// What is kept, as indices into the original model (ascending). Every kept
// layer keeps the same NUMBER of heads and channels (a config has one value
// per field) but may keep different ones.
struct StructuredPlan {
  std::vector<int64_t> layers;                 // kept layers, renumbered 0.. in order
  std::vector<std::vector<int64_t>> heads;     // per kept layer: kept query heads
  std::vector<std::vector<int64_t>> kv_heads;  // per kept layer: kept kv heads
  std::vector<std::vector<int64_t>> mlp;       // per kept layer: kept intermediate channels
  std::vector<int64_t> hidden;                 // kept hidden channels (all layers)

  // The plan that keeps everything of `config`.
  static StructuredPlan KeepAll(const ModelConfig& config);
  // The config of the pruned model (head_dim explicit and unchanged).
  absl::StatusOr<ModelConfig> PrunedConfig(const ModelConfig& config) const;
  // Errors naming the field: an index out of range or repeated or not
  // ascending, layers keeping different counts, query heads that do not fill
  // the kept KV groups evenly (each kept kv head needs num_heads/num_kv_heads
  // kept query heads of its own group).
  absl::Status Validate(const ModelConfig& config) const;
};

// Picks the most important parts for `target`:
//   * layers: drop those of lowest block influence (ShortGPT);
//   * heads, GQA-aware: kv groups are ranked by the sum of their query heads'
//     importance and the top num_kv_heads kept; inside each kept group the
//     top num_heads/num_kv_heads query heads are kept. num_kv_heads 0 keeps
//     every group (pruning query heads evenly per group). Errors: num_heads
//     not a multiple of the (kept) num_kv_heads, more kv heads or more heads
//     per group than the model has;
//   * MLP channels per layer and hidden channels: the top ones by importance.
// target_params rule: dimensions set explicitly are fixed; the free width
// dimensions (intermediate_size, hidden_size) shrink together by one factor
// r in [0.5, 1] (rounded down to a multiple of 64, or of 8 for small
// sizes), the largest r that fits the budget -- Minitron found width
// pruning recovers better than depth, and pruning one axis beyond ~50% hard
// to recover. If r = 0.5 still does not fit and num_layers is free, layers
// are dropped (lowest block influence first) to the largest count that fits
// at r = 0.5, and then r is grown again to use the slack. Error when the
// budget cannot be met.
// Other errors: importance missing or of the wrong size for a dimension that
// is pruned, a target larger than the model or negative.
absl::StatusOr<StructuredPlan> PlanStructuredPruning(const ModelConfig& config,
                                                     const ModelImportance& importance,
                                                     const StructuredTarget& target);

// Slices HF-named weights (as Transformer::NamedWeights gives them) into the
// pruned model: q/k/v rows and o_proj columns per kept head (biases along),
// Qwen3's q_norm/k_norm kept as is (they act per head_dim), gate/up rows and
// down_proj columns per kept channel, hidden channels out of embed_tokens,
// lm_head, every norm, every linear and the o/down biases; dropped layers
// removed and the rest renumbered. Tied embeddings stay tied (no lm_head in
// the output). Tensors keep their dtype (F32/F16/BF16/F64). Errors naming
// the tensor: unknown name, missing tensor, wrong shape, unsupported dtype,
// and Validate's errors.
absl::StatusOr<std::pair<ModelConfig, std::vector<std::pair<std::string, Tensor>>>>
ApplyStructuredPlan(const ModelConfig& config,
                    const std::vector<std::pair<std::string, Tensor>>& weights,
                    const StructuredPlan& plan);

}  // namespace retort::prune

#endif  // RETORT_PRUNE_STRUCTURED_H_
