// Encoders for ggml's block-quantized formats (the GGUF tensor types).
//
// The legacy types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 are bit-exact with gguf-py's
// `gguf.quants.quantize` (same f32 operations in the same order; this file is
// built with -ffp-contract=off so no fused multiply-add changes a rounding).
// gguf-py has no k-quant encoder; checked against ggml's own (through the
// ggml-python package, tests/reference/ggml_blocks/make_ggml_fixtures.py),
// Q3_K and Q6_K match it byte for byte; Q2_K, Q4_K and Q5_K use the same kind
// of search (per sub-block scale/min fit, then 6-bit or 4-bit scales against
// an f16 super-scale) but not the same bytes, with reconstruction error within
// about 2% of ggml's. Q8_1 and Q8_K (the activation formats) follow ggml's
// reference quantizers.
//
// Importance weights (an "imatrix": mean squared activation per input column)
// steer the search toward the columns that matter: element i of a block is
// weighted by importance[i] * sqrt(sigma2 + x[i]^2), sigma2 the mean square of
// the row (llama.cpp's weighting). Without them each type uses its unweighted
// reference method. Q8_0, Q8_1 and Q8_K ignore importance (nothing to search).
//
// Thread-safety: pure functions; QuantizeTensor runs rows on the global pool.
#ifndef RETORT_QUANTIZE_GGUF_QUANTS_H_
#define RETORT_QUANTIZE_GGUF_QUANTS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace retort::ggml {

// True for the block types QuantizeRow can produce.
bool CanQuantize(DType type);

// Quantizes n f32 values (one or more whole blocks) into DTypeBytes(type, n)
// bytes at `out`. `importance`, if given, holds n non-negative weights that
// line up with x. Errors: type not a block type we encode, n not a positive
// multiple of the block size, a non-finite input or a negative/non-finite
// weight (nothing is guaranteed about `out` then).
absl::Status QuantizeRow(DType type, const float* x, int64_t n, void* out,
                         const float* importance = nullptr);

// Quantizes every row (the last dimension) of a float tensor (F32, F16 or
// BF16) to `type`, keeping its shape. `importance_per_column`, if given, has
// one weight per column, shared by all rows. Rows run in parallel.
absl::StatusOr<Tensor> QuantizeTensor(const Tensor& f32_rows, DType type,
                                      const float* importance_per_column = nullptr);

}  // namespace retort::ggml

#endif  // RETORT_QUANTIZE_GGUF_QUANTS_H_
