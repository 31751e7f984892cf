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

#include <cstdint>
#include <string>
#include <string_view>

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

// Round-to-nearest: w [rows, cols] row-major f32. Checks CheckSchemeFits and
// that every weight is finite (the error names `what`, the row and column).
// Deterministic; rows run on the thread pool.
absl::StatusOr<QuantizedMatrix> QuantizeRtn(const float* w, int64_t rows, int64_t cols,
                                            const QuantScheme& scheme,
                                            const std::string& what = "weight");

// First non-finite element of w, as "row R, column C (value)", or empty.
std::string FindNonFinite(const float* w, int64_t rows, int64_t cols);

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_SCHEME_H_
