// Quantization schemes (what a weight becomes) and round-to-nearest (RTN),
// the rule every method shares: GPTQ and AWQ change which weights are
// rounded, not how one value is.
//
// Scales follow compressed-tensors (llm-compressor's observers), so a matrix
// we quantize equals what they write for the same weights:
//   symmetric int:  scale = max(|min|, |max|) / ((qmax - qmin) / 2)
//                   (int4: absmax / 7.5, int8: absmax / 127.5), zero 0
//   asymmetric int: scale = (max - min) / (qmax - qmin), with min <= 0 <= max
//                   (the range always holds 0), zero = clamp(round(qmin - min / scale))
//   fp8:            scale = absmax / fp8_max (448 for e4m3, 57344 for e5m2)
//   q = clamp(round_half_even(w / scale) + zero, qmin, qmax); fp8: q = fp8(w / scale)
// A group of zeros gets scale 1 (any scale represents it exactly).
// Scales are rounded to `scale_dtype` (the width the checkpoint stores them
// at; compressed-tensors keeps them in the model's bf16/f16) before any value
// is chosen, so the file decodes to exactly the weights the method computed.
#ifndef RETORT_QUANTIZE_SCHEME_H_
#define RETORT_QUANTIZE_SCHEME_H_

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/quant_matrix.h"

namespace retort::quant {

struct QuantScheme {
  DType value_type = DType::kI4;  // kI4, kI8, kF8E4M3, kF8E5M2
  QuantGranularity granularity = QuantGranularity::kGroup;
  int64_t group_size = 128;         // kGroup: columns per group; kBlock: tile edge
  bool symmetric = true;            // fp8 is always symmetric
  DType scale_dtype = DType::kF32;  // kF32, kBF16 or kF16: how scales are stored

  bool is_fp8() const { return value_type == DType::kF8E4M3 || value_type == DType::kF8E5M2; }
  // Integer range [qmin, qmax] (fp8: [-max, max]).
  float qmin() const;
  float qmax() const;
  // Canonical spelling, accepted back by ParseQuantScheme: "int4-g128",
  // "int4-g128-asym", "int8-channel", "fp8-channel", "fp8-e5m2-tensor",
  // "fp8-block128".
  std::string Name() const;
};

// Parses the spelling above: int4|int8|fp8|fp8-e4m3|fp8-e5m2, then one of
// g32/g64/g128/gN, channel, tensor, blockN (fp8 only), then an optional
// "-asym" / "-sym" (int only). Errors list what is accepted.
absl::StatusOr<QuantScheme> ParseQuantScheme(std::string_view name);

// Whether a [rows, cols] weight can take the scheme: group size must divide
// cols (compressed-tensors and vLLM need whole groups), int4 needs even cols.
// The error names `what` and says which shape/group failed.
absl::Status CheckSchemeFits(const QuantScheme& scheme, int64_t rows, int64_t cols,
                             const std::string& what);

// Scale and zero point of values spanning [lo, hi] (see the file comment).
struct QuantParams {
  float scale = 1;
  float zero = 0;
};
QuantParams ComputeQuantParams(const QuantScheme& scheme, float lo, float hi);

// The stored value for w under p: an integer in [qmin, qmax] (as float) or,
// for fp8, the fp8 number nearest w / scale (saturated).
float QuantizeValue(const QuantScheme& scheme, const QuantParams& p, float w);
// scale * (q - zero): what the stored value decodes to.
inline float DequantizeValue(const QuantParams& p, float q) { return p.scale * (q - p.zero); }

// A QuantizedMatrix of the scheme's layout with every scale/zero set to 1/0
// and values 0: quantizers fill it group by group with StoreValue/StoreParams.
QuantizedMatrix AllocateQuantized(const QuantScheme& scheme, int64_t rows, int64_t cols);
void StoreValue(QuantizedMatrix& m, int64_t r, int64_t c, float q);
void StoreParams(QuantizedMatrix& m, int64_t scale_row, int64_t scale_col, const QuantParams& p);

// How a group's (or channel's, block's, tensor's) scale is chosen: the
// observer of llm-compressor's vocabulary.
//   minmax       the range of the values (the rule above); today's output
//   mse          a grid search over clipped ranges minimising the squared
//                reconstruction error sum (w - dq(q(w)))^2 of the group
//   imatrix-mse  the same, each error weighted by its input column's
//                importance (mean squared calibration activation, the
//                imatrix; llm-compressor's imatrix_mse)
// Candidates: symmetric (and fp8) schemes shrink the range by
// p = 1 - i / grid, i = 0 .. round(max_shrink * grid) (i = 0 is minmax);
// asymmetric schemes shrink min and max separately, every (i, j) of that
// grid, so the zero point moves too. Each candidate goes through
// ComputeQuantParams, i.e. its scale is rounded to scheme.scale_dtype (the
// width the file stores) before its error is measured; errors are f64 sums
// of f32 reconstructions (what the file decodes to). The lowest error wins,
// the first in that order on ties, so mse never does worse than minmax.
// Unlike llm-compressor (norm 2.4, an early stop after 5 steps without
// improvement) the error is squared and the grid always searched in full.
enum class ScaleObserver { kMinMax, kMse, kImatrixMse };
// "minmax", "mse", "imatrix-mse" (also "imatrix_mse").
absl::StatusOr<ScaleObserver> ParseScaleObserver(std::string_view name);
const char* ScaleObserverName(ScaleObserver o);

struct ObserverOptions {
  ScaleObserver kind = ScaleObserver::kMinMax;
  int grid = 100;           // shrink steps of 1 / grid (llm-compressor's mse default)
  double max_shrink = 0.2;  // shrink at most this fraction (llm-compressor's mse default)
};
// grid >= 1 and 0 <= max_shrink < 1, else an error naming the option.
absl::Status CheckObserverOptions(const ObserverOptions& o);

// The parameters the observer picks for the n values v. `importance` is
// per value (n of them; empty: all 1; only read by kImatrixMse). minmax:
// exactly ComputeQuantParams over v's range.
QuantParams ObserveQuantParams(const QuantScheme& scheme, const ObserverOptions& o, const float* v,
                               int64_t n, std::span<const float> importance = {});

// The parameters the observer picks for the block rows [r0, r1) x columns
// [c0, c1) of a matrix whose weight (r, c) is value(r, c); `importance` is
// per column of the whole matrix (read only by kImatrixMse). minmax scans the
// block in place; a search gathers it first.
template <typename Value>
QuantParams ObserveBlockParams(const QuantScheme& scheme, const ObserverOptions& o, int64_t r0,
                               int64_t r1, int64_t c0, int64_t c1, const Value& value,
                               std::span<const float> importance) {
  if (o.kind == ScaleObserver::kMinMax) {
    float lo = 0, hi = 0;
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = c0; c < c1; ++c) {
        const float v = value(r, c);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
    return ComputeQuantParams(scheme, lo, hi);
  }
  const bool weighted = o.kind == ScaleObserver::kImatrixMse;
  std::vector<float> v, imp;
  v.reserve(static_cast<size_t>((r1 - r0) * (c1 - c0)));
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) {
      v.push_back(value(r, c));
      if (weighted) imp.push_back(importance[static_cast<size_t>(c)]);
    }
  }
  return ObserveQuantParams(scheme, o, v.data(), static_cast<int64_t>(v.size()), imp);
}
// sum_k importance_k * (v_k - dq(q(v_k)))^2 in f64 (importance empty: 1).
double QuantError(const QuantScheme& scheme, const QuantParams& p, const float* v, int64_t n,
                  std::span<const float> importance = {});

// What QuantizeRtn and QuantizeGptq take beside the scheme: the observer
// and, for kImatrixMse, the importance of each input column ([cols]).
// Errors (naming `what`): bad options, kImatrixMse without importance for
// every column, a negative or non-finite importance.
absl::Status CheckObserverInput(const ObserverOptions& o, std::span<const float> importance,
                                int64_t cols, const std::string& what);

// Round-to-nearest: w [rows, cols] row-major f32. Checks CheckSchemeFits and
// that every weight is finite (the error names `what`, the row and column).
// Deterministic; rows run on the thread pool. Scales come from `observer`
// (importance: [cols], for kImatrixMse; see CheckObserverInput).
absl::StatusOr<QuantizedMatrix> QuantizeRtn(const float* w, int64_t rows, int64_t cols,
                                            const QuantScheme& scheme,
                                            const std::string& what = "weight",
                                            const ObserverOptions& observer = {},
                                            std::span<const float> importance = {});

// First non-finite element of w, as "row R, column C (value)", or empty.
std::string FindNonFinite(const float* w, int64_t rows, int64_t cols);

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_SCHEME_H_
