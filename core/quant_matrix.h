// QuantizedMatrix: a weight matrix [rows, cols] (nn.Linear layout: rows =
// output features, cols = input features) stored as narrow integer or fp8
// values with separate scales (and zero points), the in-memory form shared by
// the quantizers (quantize/), the checkpoint readers/writers
// (formats/compressed_tensors.h: compressed-tensors, GPTQ, AWQ, DeepSeek FP8)
// and the kernels that multiply by it without a dequantized copy
// (kernels/cpu/quant_matrix_matmul.h).
//
// Element (r, c) is
//     w[r, c] = scale(r, c) * (q[r, c] - zero(r, c))
// with q the stored value (an integer for kI4/kI8, an fp8 number for
// kF8E4M3/kF8E5M2), zero 0 when zero_points is empty (symmetric), and
// scale(r, c) / zero(r, c) picked by the granularity:
//   kTensor   one scale                          scales [1, 1]
//   kChannel  one per row                        scales [rows, 1]
//   kGroup    one per row and group of           scales [rows, ceil(cols / group_size)]
//             group_size consecutive columns     (or, with g_idx, group g_idx[c])
//   kBlock    one per group_size x group_size    scales [ceil(rows / B), ceil(cols / B)]
//             tile (DeepSeek-V3 style, B = 128)
// This is compressed-tensors' convention (signed int4 in [-8, 7], signed int8
// in [-128, 127], zero points in the same range), so its checkpoints map 1:1;
// GPTQ/AWQ's unsigned 0..15 values and zeros are both shifted by 8 on read.
// Scales are F32 in memory whatever the file stored (bf16/f16 scales convert
// exactly). Zero points, when present, are I8 with the scales' shape (only for
// kGroup and kChannel integer values).
//
// g_idx (optional, kGroup only): I32 [cols], the group of each column, as
// GPTQ's act-order ("desc_act") checkpoints store it. Empty means column c is
// in group c / group_size.
#ifndef RETORT_CORE_QUANT_MATRIX_H_
#define RETORT_CORE_QUANT_MATRIX_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace retort {

enum class QuantGranularity { kTensor, kChannel, kGroup, kBlock };

// "tensor", "channel", "group", "block".
const char* QuantGranularityName(QuantGranularity g);
// The layout as the scheme names spell it: "tensor", "channel", "g128", "block128".
std::string QuantLayoutName(QuantGranularity g, int64_t group_size);

// The shape of the scales of a [rows, cols] matrix (without g_idx), from
// the table above. REQUIRES: group_size > 0 for kGroup and kBlock.
Shape QuantScaleShape(QuantGranularity g, int64_t rows, int64_t cols, int64_t group_size);

struct QuantizedMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  DType value_type = DType::kI4;  // kI4, kI8, kF8E4M3 or kF8E5M2
  QuantGranularity granularity = QuantGranularity::kGroup;
  int64_t group_size = 0;  // kGroup: columns per group; kBlock: tile edge; else 0
  Tensor values;           // value_type, shape [rows, cols] (kI4 packed, row-major)
  Tensor scales;           // F32, shape per granularity (see above)
  Tensor zero_points;      // empty, or I8 with the shape of scales
  Tensor g_idx;            // empty, or I32 [cols]

  bool symmetric() const { return zero_points.empty(); }
  // Scale / zero-point index of (r, c): row and column in `scales`.
  int64_t ScaleRow(int64_t r) const;
  int64_t ScaleCol(int64_t c) const;
  // Bytes of values + scales + zero points + g_idx as stored here.
  size_t nbytes() const;
  // Storage bits per weight counting the scales at the width a checkpoint
  // keeps them (`scale_bits`, 16 for bf16/f16 scales) and zero points at the
  // value width.
  double BitsPerWeight(int scale_bits = 16) const;
  // "int4 g128 asym", "fp8_e4m3 channel", "fp8_e4m3 block128", ...
  std::string Describe() const;
};

// Checks shapes, dtypes and value ranges against the layout above (cols even
// for kI4; every scale finite and > 0; zero points in the value range; g_idx
// entries inside the scales). Errors name `what` (e.g. the tensor name).
absl::Status ValidateQuantizedMatrix(const QuantizedMatrix& m, const std::string& what);

// The part of ValidateQuantizedMatrix that reads no entries, cheap enough to
// run on every multiply: the value type, the dtypes and shapes of values,
// scales, zero points and g_idx. Messages do not name the matrix.
absl::Status CheckQuantizedMatrixShapes(const QuantizedMatrix& m);

// w[r, c] for rows [r0, r1) into out[(r - r0) * cols + c], computed in f32
// exactly as the formula above (the reference every kernel is tested against).
void DequantizeRows(const QuantizedMatrix& m, int64_t r0, int64_t r1, float* out);

// The whole matrix as an F32 (or, converted, BF16/F16) tensor [rows, cols].
Tensor Dequantize(const QuantizedMatrix& m, DType dtype = DType::kF32);

}  // namespace retort

#endif  // RETORT_CORE_QUANT_MATRIX_H_
