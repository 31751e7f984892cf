// compressed_tensors.h, foreign checkpoints read into QuantizedMatrix: GPTQ,
// AWQ (gemm) and DeepSeek-V3 FP8 block-scaled weights.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"
#include "formats/compressed_tensors_internal.h"

namespace retort {
namespace ct_internal {
namespace {

// AWQ's gemm kernels interleave the 8 nibbles of a word: nibble i holds
// output column 8 j + kAwqOrder[i]; kAwqNibble is its inverse.
constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

}  // namespace

// GPTQ: qweight I32 [cols*b/32, rows] packed along the input dim, qzeros I32
// [groups, rows*b/32] packed along the output dim (v1: zero - 1), scales
// [groups, rows], g_idx I32 [cols]. AWQ gemm: qweight I32 [cols, rows/8] and
// qzeros I32 [groups, rows/8] packed along the output dim in AWQ's nibble
// order, scales [groups, rows].
absl::StatusOr<std::optional<QuantizedMatrix>> ReadGptqOrAwq(const QuantizationConfig& qc,
                                                             const std::string& module,
                                                             const TensorLookup& lookup) {
  const TensorErrors err(module);
  const bool awq = qc.kind == QuantizationConfig::Kind::kAwq;
  std::optional<Tensor> qweight = lookup(err.Name("qweight"));
  if (!qweight.has_value()) {
    if (lookup(err.Name("weight")).has_value()) return std::optional<QuantizedMatrix>();
    return err.Missing("qweight", "neither qweight nor weight is in the checkpoint");
  }
  const QuantSchemeSpec* sp = qc.SchemeFor(module);
  if (sp == nullptr)
    return err.Bad("qweight", "found, but the module is in modules_to_not_convert");
  const QuantSchemeSpec& s = *sp;
  const int bits = s.bits();
  const int per = 32 / bits;
  const int half = 1 << (bits - 1);
  const uint32_t mask = (1u << bits) - 1u;
  if (qweight->dtype() != DType::kI32 || qweight->rank() != 2 || qweight->dim(0) <= 0 ||
      qweight->dim(1) <= 0) {
    return err.Bad("qweight", "is ", ShapeOf(*qweight), ", expected a 2-D I32 tensor");
  }
  const int64_t rows = awq ? qweight->dim(1) * per : qweight->dim(1);
  const int64_t cols = awq ? qweight->dim(0) : qweight->dim(0) * per;
  int64_t groups = 1;
  if (s.granularity == QuantGranularity::kGroup) {
    if (cols % s.group_size != 0) {
      return err.Bad("qweight", "group size ", s.group_size, " does not divide the ", cols,
                     " input columns of ", ShapeOf(*qweight));
    }
    groups = cols / s.group_size;
  }
  if (rows % per != 0) {
    return err.Bad("qweight", rows, " output rows do not fill whole ", bits, "-bit qzeros words");
  }
  std::optional<Tensor> scales = lookup(err.Name("scales"));
  if (!scales) return err.Missing("scales", "every quantized weight has scales");
  std::optional<Tensor> qzeros = lookup(err.Name("qzeros"));
  if (!qzeros) return err.Missing("qzeros", "GPTQ/AWQ checkpoints store zero points");
  if (qzeros->dtype() != DType::kI32 || qzeros->shape() != Shape{groups, rows / per}) {
    return err.Bad("qzeros", "is ", ShapeOf(*qzeros), ", expected I32 [", groups, ", ", rows / per,
                   "]");
  }
  ASSIGN_OR_RETURN(Tensor scales_gr,
                   ScaleTensor(err, "scales", *scales, {groups, rows}, {groups, rows}));

  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = s.value_type;
  m.granularity = s.granularity;
  m.group_size = s.granularity == QuantGranularity::kGroup ? s.group_size : 0;
  m.scales = TransposeF32(scales_gr);  // [rows, groups]
  m.values = Tensor::Zeros(s.value_type, {rows, cols});
  const int32_t* qw = qweight->data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t u;
      if (awq) {
        const uint32_t w = static_cast<uint32_t>(qw[c * (rows / 8) + r / 8]);
        u = (w >> (kAwqNibble[r % 8] * 4)) & 0xfu;
      } else {
        const uint32_t w = static_cast<uint32_t>(qw[(c / per) * rows + r]);
        u = (w >> ((c % per) * bits)) & mask;
      }
      PutValue(m.values, cols, r, c, static_cast<int>(u) - half);
    }
  }
  // GPTQ v1 stores zero - 1 (AutoGPTQ's historical offset), v2 and AWQ the zero.
  const int zero_offset = !awq && qc.format == "gptq" ? 1 : 0;
  m.zero_points = Tensor::Zeros(DType::kI8, {rows, groups});
  int8_t* z = m.zero_points.mutable_data<int8_t>();
  const int32_t* qz = qzeros->data<int32_t>();
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint32_t w = static_cast<uint32_t>(qz[g * (rows / per) + r / per]);
      const int shift = awq ? kAwqNibble[r % 8] * 4 : static_cast<int>(r % per) * bits;
      const int zero = static_cast<int>((w >> shift) & mask) + zero_offset;
      if (zero > static_cast<int>(mask)) {
        return err.Bad("qzeros", "zero point of row ", r, ", group ", g, " is ", zero, " (stored ",
                       zero - 1, " + 1), outside the ", bits, "-bit range");
      }
      z[r * groups + g] = static_cast<int8_t>(zero - half);
    }
  }
  if (AllZero(m.zero_points)) m.zero_points = Tensor();
  if (!awq) {
    std::optional<Tensor> g_idx = lookup(err.Name("g_idx"));
    if (g_idx.has_value()) {
      ASSIGN_OR_RETURN(Tensor g, GIdxTensor(err, "g_idx", *g_idx, cols, groups));
      if (s.granularity == QuantGranularity::kGroup && !TrivialGIdx(g, s.group_size)) m.g_idx = g;
    } else if (s.act_order) {
      return err.Missing("g_idx", "desc_act checkpoints store the group of each column");
    }
  }
  ASSIGN_OR_RETURN(QuantizedMatrix v, Validated(std::move(m), module));
  return std::optional<QuantizedMatrix>(std::move(v));
}

absl::StatusOr<std::optional<QuantizedMatrix>> ReadDeepSeekFp8(const QuantizationConfig& qc,
                                                               const std::string& module,
                                                               const TensorLookup& lookup) {
  const TensorErrors err(module);
  std::optional<Tensor> weight = lookup(err.Name("weight"));
  if (!weight.has_value()) return err.Missing("weight", "no weight tensor for this module");
  std::optional<Tensor> scale_inv = lookup(err.Name("weight_scale_inv"));
  if (weight->dtype() != DType::kF8E4M3) {
    if (IsFp8(weight->dtype()))
      return err.Bad("weight", "is ", TypeName(weight->dtype()), ", expected F8_E4M3");
    if (scale_inv.has_value()) {
      return err.Bad("weight", "is ", TypeName(weight->dtype()),
                     " but has a weight_scale_inv (expected F8_E4M3)");
    }
    return std::optional<QuantizedMatrix>();  // stored unquantized
  }
  if (!scale_inv) return err.Missing("weight_scale_inv", "F8_E4M3 weights need their block scales");
  const QuantSchemeSpec* s = qc.SchemeFor(module);
  if (s == nullptr)
    return err.Bad("weight", "is F8_E4M3, but the module is in modules_to_not_convert");
  if (weight->rank() != 2 || weight->dim(0) <= 0 || weight->dim(1) <= 0) {
    return err.Bad("weight", "is ", ShapeOf(*weight), ", expected a matrix");
  }
  const int64_t rows = weight->dim(0), cols = weight->dim(1), b = s->group_size;
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = DType::kF8E4M3;
  m.granularity = QuantGranularity::kBlock;
  m.group_size = b;
  m.values = *weight;
  const Shape shape = {CeilDiv(rows, b), CeilDiv(cols, b)};
  ASSIGN_OR_RETURN(m.scales, ScaleTensor(err, "weight_scale_inv", *scale_inv, shape, shape));
  ASSIGN_OR_RETURN(QuantizedMatrix v, Validated(std::move(m), module));
  return std::optional<QuantizedMatrix>(std::move(v));
}

}  // namespace ct_internal

using ct_internal::CeilDiv;
using ct_internal::FloatToF32;
using ct_internal::IsFloatScaleType;
using ct_internal::ShapeOf;

absl::StatusOr<Tensor> DequantizeFp8BlockToBf16(const Tensor& weight,
                                                const Tensor& weight_scale_inv,
                                                const std::string& what) {
  constexpr int64_t kBlock = 128;
  if (weight.dtype() != DType::kF8E4M3 || weight.rank() != 2 || weight.dim(0) <= 0 ||
      weight.dim(1) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": weight is ", ShapeOf(weight), ", expected an F8_E4M3 matrix"));
  }
  const int64_t rows = weight.dim(0), cols = weight.dim(1);
  const Shape shape = {CeilDiv(rows, kBlock), CeilDiv(cols, kBlock)};
  if (!IsFloatScaleType(weight_scale_inv.dtype()) || weight_scale_inv.shape() != shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": weight_scale_inv is ", ShapeOf(weight_scale_inv), ", expected F32 ",
                     ShapeString(shape), " (128x128 blocks of ", ShapeString(weight.shape()), ")"));
  }
  const Tensor s = FloatToF32(weight_scale_inv, shape);
  const float* sp = s.data<float>();
  for (int64_t i = 0; i < s.numel(); ++i) {
    if (!std::isfinite(sp[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": weight_scale_inv entry ", i, " is not finite"));
    }
  }
  Tensor out = Tensor::Zeros(DType::kBF16, {rows, cols});
  uint16_t* o = out.mutable_data<uint16_t>();
  const uint8_t* w = weight.data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* srow = sp + (r / kBlock) * shape[1];
    for (int64_t c = 0; c < cols; ++c) {
      o[r * cols + c] = F32ToBF16(F8E4M3ToF32(w[r * cols + c]) * srow[c / kBlock]);
    }
  }
  return out;
}

}  // namespace retort
