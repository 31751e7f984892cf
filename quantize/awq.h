// AWQ (Lin et al., 2023, activation-aware weight quantization): before
// rounding, scale each input channel of a group of linear layers that share
// one input by s (W <- W * s, and the op that produces the input divides its
// output by s), with s chosen on calibration activations so that the
// channels carrying large activations lose less to rounding. Then optionally
// clip each weight group's range (AwqClip). The rounding itself is
// quantize/scheme.h's RTN; AWQ only changes what gets rounded.
//
// What follows the reference implementations (llm-awq, AutoAWQ,
// llm-compressor):
//   * x_mean = mean |x| per input channel over the calibration tokens;
//     w_mean = mean over all rows of all linears of |w| / (absmax of w's
//     quantization group + 1e-6) (AutoAWQ's concatenated weights);
//   * for ratio a = i / grid, i = 0 .. grid - 1:
//       s = x_mean^a / (w_mean^(1-a) + 1e-4)   (duo_scaling)
//       s = x_mean^a                             (otherwise)
//     clamped to >= 1e-4, divided by sqrt(max(s) * min(s)), non-finite -> 1;
//   * the loss of s is sum over linears of ||x W^T - x (Q(W s) / s)^T||^2 on
//     the calibration tokens; the lowest loss wins (the first on ties);
//   * unlike the references, s = 1 (plain RTN) is always the first
//     candidate, so AWQ never does worse than RTN on this loss (with duo
//     scaling no grid point is the identity);
//   * clipping: per row and quantization group, max |w| shrunk by
//     (1 - i / clip_grid) for i < max_shrink * clip_grid (i = 0 is no clip),
//     w clamped to [-max, max] (symmetric, also for asymmetric schemes), the
//     shrink with the lowest mean squared output error of the group over at
//     most max_tokens evenly strided tokens wins.
// Errors compute in f32 products with f64 sums; the work is split over the
// thread pool in fixed tiles, so results do not depend on the thread count.
#ifndef RETORT_QUANTIZE_AWQ_H_
#define RETORT_QUANTIZE_AWQ_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quantize/scheme.h"

namespace retort::quant {

// One linear layer reading the shared input: weight [rows, cols] row-major
// f32 (cols = the input width). `name` appears in error messages.
struct LinearRef {
  const float* w = nullptr;
  int64_t rows = 0;
  std::string name;
};

struct AwqOptions {
  int grid = 20;             // scale ratios a = 0, 1/grid, ..., (grid-1)/grid
  bool duo_scaling = true;   // divide by w_mean^(1-a) as AutoAWQ does
  int clip_grid = 20;        // AwqClip: shrink steps of 1/clip_grid
  float max_shrink = 0.5f;   // AwqClip: shrink at most this fraction
  int64_t max_tokens = 512;  // AwqClip: tokens used (strided subsample)
};

// Per-input-channel scales s [cols] for the linears sharing input x
// [tokens, cols] (row-major f32). The caller multiplies each weight's
// columns by s and divides the previous op's output channels by s. When
// best_loss is given it receives the loss of the returned s (for s = 1, the
// RTN loss). Errors: no linear, empty x, a scheme that does not fit a
// linear (CheckSchemeFits), non-finite weights or activations, grid < 1.
absl::StatusOr<std::vector<float>> AwqSearchScales(const float* x, int64_t tokens, int64_t cols,
                                                   const std::vector<LinearRef>& linears,
                                                   const QuantScheme& scheme,
                                                   const AwqOptions& opts,
                                                   double* best_loss = nullptr);

// Clips w [rows, cols] in place, per row and quantization group (kGroup, or
// the whole row for kChannel), to the max value that minimises the group's
// output error on x [tokens, cols]. Run after applying the AWQ scales (w and
// x both already scaled). Errors: tensor/block schemes (scales shared across
// rows), scheme does not fit, non-finite input, bad options.
absl::Status AwqClip(float* w, int64_t rows, int64_t cols, const float* x, int64_t tokens,
                     const QuantScheme& scheme, const AwqOptions& opts,
                     const std::string& what = "weight");

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_AWQ_H_
