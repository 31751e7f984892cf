// GPTQ (Frantar et al., 2022): quantize a weight matrix one input column at a
// time, spreading each column's rounding error over the columns not yet
// quantized so that the layer output X W^T changes as little as possible on
// the calibration inputs X. The second-order information is the layer
// Hessian H = 2/n X^T X, gathered by HessianAccumulator while the calibration
// driver runs the model layer by layer.
//
// The rounding of one value is quantize/scheme.h's (the same as RTN): GPTQ
// only changes which weights get rounded. What follows the reference
// implementation (gptq.py's fasterquant, as in AutoGPTQ / GPTQModel):
//   * dead columns (diag H == 0: an input that is always zero) get H_jj = 1
//     and weight 0;
//   * dampening: H += opts.dampening * mean(diag H) * I;
//   * U = the upper Cholesky factor of H^-1; column j's error (w - q) / U_jj
//     updates the later columns by U_j,k; lazy batches of block_size
//     columns apply the update to the rest of the row once per block;
//   * group schemes: a group's scale/zero are computed when its first column
//     comes up, from the error-updated weights of the group; with act_order
//     the groups are runs of group_size columns in processing order and
//     g_idx records each column's group (compressed-tensors "group" actorder;
//     static_groups instead fixes every group's parameters from the weights
//     before GPTQ, in natural column order, so g_idx stays the identity);
//   * channel, tensor and fp8-block scales are fixed from the weights before
//     GPTQ (after zeroing dead columns) as the reference's find_params does;
//   * act_order processes columns by descending diag(H) (stable order);
//   * every scale (group, channel, tensor, block) comes from the observer
//     (scheme.h's ObserveQuantParams) over the weights it covers at the
//     time it is chosen: minmax is the reference's rule; mse and
//     imatrix-mse search clipped ranges (llm-compressor's GPTQ calls its
//     observer the same way). imatrix-mse weighs column j by the importance
//     given, or by diag(H)_j (= 2 mean x_j^2, the imatrix up to a factor)
//     when none is.
// One deliberate difference: where a group starts inside a lazy block and
// reaches past it, the reference takes the group's range from weights that
// miss the current block's updates; here the group always sees fully updated
// weights (the paper's algorithm), so the result does not depend on
// block_size. With block_size a multiple of group_size (128/128, 128/64, the
// usual settings) the two agree.
//
// Precision: H, its factorisation and the error propagation are f64; each
// value is quantized from the f32 rounding of its updated weight.
// Rows are independent given H: they run in fixed chunks on the thread pool,
// so the result is the same for any thread count.
#ifndef RETORT_QUANTIZE_GPTQ_H_
#define RETORT_QUANTIZE_GPTQ_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant_matrix.h"
#include "quantize/scheme.h"

namespace retort::quant {

// Gathers H = 2/n * sum_i x_i^T x_i over the n calibration rows (tokens) a
// linear layer sees. Kept as an f64 sum and a row count and scaled when read,
// so H does not depend on how the rows were batched (GPTQ's running mean
// gives the same matrix up to its rescaling roundings). Memory: cols^2 f64.
// Not thread-safe; Add runs its product on the thread pool.
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t cols);

  // x: [rows, cols] row-major activations entering the layer. A backend
  // error is kept (status()) and returned by QuantizeGptq.
  void Add(const float* x, int64_t rows);
  // The first error of an Add (OK on the CPU, which cannot fail).
  const absl::Status& status() const { return status_; }
  // Adds another accumulator's rows (e.g. from another process or shard).
  // REQUIRES: other.cols() == cols().
  void Merge(const HessianAccumulator& other);

  int64_t cols() const { return cols_; }
  int64_t samples() const { return samples_; }
  // sum x^T x, [cols, cols] row-major, symmetric.
  const std::vector<double>& sum() const { return sum_; }
  // H = 2/n * sum x^T x (all zeros before the first sample).
  std::vector<double> Hessian() const;

 private:
  int64_t cols_;
  int64_t samples_ = 0;
  std::vector<double> sum_;
  absl::Status status_;
};

struct GptqOptions {
  // Fraction of mean(diag H) added to the diagonal before inverting.
  double dampening = 0.01;
  // Columns per lazy batch (the result does not depend on it; speed does).
  int64_t block_size = 128;
  // Quantize columns by descending diag(H) ("desc_act").
  bool act_order = false;
  // Group parameters from the weights before GPTQ, natural column order.
  bool static_groups = false;
  // How scales are chosen (minmax: the reference's rule).
  ObserverOptions observer;
};

struct GptqStats {
  // The error GPTQ minimises, as the reference reports it:
  // sum over weights of (w - q)^2 / U_jj^2 / 2 (w the updated weight).
  double loss = 0;
  // Columns whose input was always zero.
  int64_t dead_columns = 0;
  // The value added to H's diagonal.
  double damp = 0;
};

// Quantizes w [rows, cols] (row-major f32, nn.Linear layout) under `scheme`
// using the Hessian in h. Errors (naming `what`): scheme does not fit the
// shape (CheckSchemeFits), non-finite weight, h for another column count or
// without any sample, non-finite Hessian, bad options, and a Hessian that is
// not positive definite after dampening (the message says which dampening to
// try next). `importance` ([cols], optional) weighs imatrix-mse's errors
// instead of diag(H) (CheckObserverInput's errors).
absl::StatusOr<QuantizedMatrix> QuantizeGptq(const float* w, int64_t rows, int64_t cols,
                                             const HessianAccumulator& h, const QuantScheme& scheme,
                                             const GptqOptions& opts, const std::string& what,
                                             GptqStats* stats = nullptr,
                                             std::span<const float> importance = {});

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_GPTQ_H_
