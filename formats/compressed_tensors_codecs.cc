// compressed_tensors.h, per-layer codecs: packing a QuantizedMatrix into
// compressed-tensors tensors and reading them back, and the dispatch of
// ReadQuantizedLinear to the foreign readers.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"
#include "formats/compressed_tensors_internal.h"

namespace retort {

using ct_internal::AllZero;
using ct_internal::CeilDiv;
using ct_internal::GetValue;
using ct_internal::GIdxTensor;
using ct_internal::IsFloatScaleType;
using ct_internal::IsFp8;
using ct_internal::IsIntValue;
using ct_internal::PutValue;
using ct_internal::ReadDeepSeekFp8;
using ct_internal::ReadGptqOrAwq;
using ct_internal::ScaleTensor;
using ct_internal::ShapeOf;
using ct_internal::TensorErrors;
using ct_internal::TrivialGIdx;
using ct_internal::TypeName;
using ct_internal::Validated;
namespace {

// --------------------------------------------------------- bit packing --
//
// Both compressed-tensors and GPTQ store b-bit unsigned fields (b = 4 or 8)
// LSB-first in int32 words: field i of a packed line is word i / (32 / b),
// bits (i % (32 / b)) * b. For b in {4, 8} no field straddles two words.

uint32_t Field(const int32_t* words, int64_t i, int bits) {
  const int per = 32 / bits;
  const uint32_t w = static_cast<uint32_t>(words[i / per]);
  return (w >> ((i % per) * bits)) & ((1u << bits) - 1u);
}

void SetField(int32_t* words, int64_t i, int bits, uint32_t v) {
  const int per = 32 / bits;
  uint32_t w = static_cast<uint32_t>(words[i / per]);
  w |= (v & ((1u << bits) - 1u)) << ((i % per) * bits);
  words[i / per] = static_cast<int32_t>(w);
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackCompressedTensors(
    const std::string& module, const QuantizedMatrix& m, DType scale_dtype,
    std::optional<float> input_scale) {
  RETURN_IF_ERROR(ValidateQuantizedMatrix(m, module));
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(module, ": ", parts...));
  };
  if (!IsFloatScaleType(scale_dtype)) {
    return bad("scale dtype ", TypeName(scale_dtype), " (expected BF16, F16 or F32)");
  }
  const int64_t rows = m.rows, cols = m.cols;
  std::vector<std::pair<std::string, Tensor>> out;
  // compressed-tensors' scale shapes: [1] per tensor, [rows, 1] per channel,
  // [rows, groups] per group, [ceil(rows/B), ceil(cols/B)] per block -- ours
  // except the tensor case.
  Shape scale_shape = m.scales.shape();
  if (m.granularity == QuantGranularity::kTensor) scale_shape = {1};
  ASSIGN_OR_RETURN(Tensor scales_f32, m.scales.Reshape(scale_shape));
  Tensor scale = scales_f32.To(scale_dtype);

  if (IsFp8(m.value_type)) {
    if (m.value_type != DType::kF8E4M3) {
      return bad("fp8 e5m2 weights have no compressed-tensors format (it stores float8_e4m3fn)");
    }
    out.emplace_back(module + ".weight", m.values);
    out.emplace_back(module + ".weight_scale", scale);
    if (input_scale.has_value()) {
      if (!std::isfinite(*input_scale) || *input_scale <= 0) {
        return bad("input_scale ", *input_scale, " must be finite and positive");
      }
      Tensor s = Tensor::Zeros(DType::kF32, {1});
      s.mutable_data<float>()[0] = *input_scale;
      out.emplace_back(module + ".input_scale", s.To(scale_dtype));
    }
    return out;
  }
  if (input_scale.has_value()) return bad("input_scale is only written for fp8 weights");
  if (m.granularity == QuantGranularity::kBlock) {
    return bad("int weights with block scales have no compressed-tensors format");
  }
  const int bits = DTypeBits(m.value_type);
  const int per = 32 / bits;
  const int half = 1 << (bits - 1);
  const int64_t packed_cols = CeilDiv(cols, per);
  Tensor packed = Tensor::Zeros(DType::kI32, {rows, packed_cols});
  int32_t* p = packed.mutable_data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      SetField(p + r * packed_cols, c, bits, static_cast<uint32_t>(GetValue(m, r, c) + half));
    }
  }
  out.emplace_back(module + ".weight_packed", packed);
  out.emplace_back(module + ".weight_scale", scale);
  if (!m.zero_points.empty()) {
    // Packed along the output dim (packed_dim=0): column g of the result
    // holds the zero points of every row for scale column g.
    const int64_t zcols = m.zero_points.dim(1);
    const int64_t zrows = CeilDiv(rows, per);
    Tensor zp = Tensor::Zeros(DType::kI32, {zrows, zcols});
    int32_t* z = zp.mutable_data<int32_t>();
    const int8_t* src = m.zero_points.data<int8_t>();
    for (int64_t g = 0; g < zcols; ++g) {
      for (int64_t r = 0; r < rows; ++r) {
        const uint32_t v = static_cast<uint32_t>(src[r * zcols + g] + half);
        z[(r / per) * zcols + g] |=
            static_cast<int32_t>((v & ((1u << bits) - 1u)) << ((r % per) * bits));
      }
    }
    out.emplace_back(module + ".weight_zero_point", zp);
  }
  Tensor shape = Tensor::Zeros(DType::kI64, {2});
  shape.mutable_data<int64_t>()[0] = rows;
  shape.mutable_data<int64_t>()[1] = cols;
  out.emplace_back(module + ".weight_shape", shape);
  if (!m.g_idx.empty()) out.emplace_back(module + ".weight_g_idx", m.g_idx);
  return out;
}

namespace {

// compressed-tensors pack-quantized: weight_packed I32 [rows, ceil(cols*b/32)]
// (values + 2^(b-1), packed along the input dim), weight_shape [rows, cols],
// weight_scale, weight_zero_point I32 [ceil(rows*b/32), groups] (asymmetric,
// packed along the output dim), weight_g_idx I32 [cols] (act-order).
absl::StatusOr<QuantizedMatrix> ReadCtPacked(const QuantSchemeSpec& s, const std::string& module,
                                             const Tensor& packed, const TensorLookup& lookup) {
  const TensorErrors err(module);
  if (!IsIntValue(s.value_type)) {
    return err.Bad("weight_packed", "found, but the config group for this module has ",
                   TypeName(s.value_type), " weights (pack-quantized is for int4/int8)");
  }
  std::optional<Tensor> shape_t = lookup(err.Name("weight_shape"));
  if (!shape_t) return err.Missing("weight_shape", "pack-quantized weights store their shape");
  if ((shape_t->dtype() != DType::kI64 && shape_t->dtype() != DType::kI32) ||
      shape_t->shape() != Shape{2}) {
    return err.Bad("weight_shape", "is ", ShapeOf(*shape_t), ", expected I64 [2]");
  }
  const int64_t rows =
      shape_t->dtype() == DType::kI64 ? shape_t->data<int64_t>()[0] : shape_t->data<int32_t>()[0];
  const int64_t cols =
      shape_t->dtype() == DType::kI64 ? shape_t->data<int64_t>()[1] : shape_t->data<int32_t>()[1];
  if (rows <= 0 || cols <= 0 || rows > (int64_t{1} << 31) || cols > (int64_t{1} << 31)) {
    return err.Bad("weight_shape", "[", rows, ", ", cols, "] is not a valid matrix shape");
  }
  const int bits = s.bits();
  const int per = 32 / bits;
  const int half = 1 << (bits - 1);
  const int64_t packed_cols = CeilDiv(cols, per);
  if (packed.dtype() != DType::kI32 || packed.shape() != Shape{rows, packed_cols}) {
    return err.Bad("weight_packed", "is ", ShapeOf(packed), ", expected I32 [", rows, ", ",
                   packed_cols, "] for weight_shape [", rows, ", ", cols, "] at ", bits, " bits");
  }
  if (s.value_type == DType::kI4 && cols % 2 != 0) {
    return err.Bad("weight_shape", "int4 weights need an even number of columns, got ", cols);
  }
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = s.value_type;
  m.granularity = s.granularity;
  Shape file_scale_shape;
  switch (s.granularity) {
    case QuantGranularity::kTensor:
      file_scale_shape = {1};
      break;
    case QuantGranularity::kChannel:
      file_scale_shape = {rows, 1};
      break;
    case QuantGranularity::kGroup:
      if (cols % s.group_size != 0) {
        return err.Bad("weight_shape", "group size ", s.group_size, " does not divide the ", cols,
                       " input columns");
      }
      m.group_size = s.group_size;
      file_scale_shape = {rows, cols / s.group_size};
      break;
    case QuantGranularity::kBlock:
      return err.Bad("weight_packed", "int weights with block scales are not supported");
  }
  const Shape scale_shape =
      s.granularity == QuantGranularity::kTensor ? Shape{1, 1} : file_scale_shape;
  std::optional<Tensor> scale_t = lookup(err.Name("weight_scale"));
  if (!scale_t) return err.Missing("weight_scale", "every quantized weight has scales");
  if (s.granularity == QuantGranularity::kTensor && scale_t->numel() == 1 && scale_t->rank() <= 2) {
    file_scale_shape = scale_t->shape();  // [1], [1, 1] and [] all mean one scale
  }
  ASSIGN_OR_RETURN(m.scales,
                   ScaleTensor(err, "weight_scale", *scale_t, file_scale_shape, scale_shape));

  m.values = Tensor::Zeros(s.value_type, {rows, cols});
  const int32_t* p = packed.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      PutValue(m.values, cols, r, c, static_cast<int>(Field(p + r * packed_cols, c, bits)) - half);
    }
  }
  if (!s.symmetric) {
    std::optional<Tensor> zp = lookup(err.Name("weight_zero_point"));
    if (!zp) return err.Missing("weight_zero_point", "the scheme is asymmetric");
    const int64_t zcols = scale_shape[1];
    const int64_t zrows = CeilDiv(rows, per);
    if (zp->dtype() != DType::kI32 || zp->shape() != Shape{zrows, zcols}) {
      return err.Bad("weight_zero_point", "is ", ShapeOf(*zp), ", expected I32 [", zrows, ", ",
                     zcols, "] (", bits, "-bit zero points of ", rows,
                     " rows packed along the output dim)");
    }
    m.zero_points = Tensor::Zeros(DType::kI8, scale_shape);
    int8_t* z = m.zero_points.mutable_data<int8_t>();
    const int32_t* src = zp->data<int32_t>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < zcols; ++g) {
        const uint32_t w = static_cast<uint32_t>(src[(r / per) * zcols + g]);
        const int v = static_cast<int>((w >> ((r % per) * bits)) & ((1u << bits) - 1u)) - half;
        z[r * zcols + g] = static_cast<int8_t>(v);
      }
    }
    if (AllZero(m.zero_points)) m.zero_points = Tensor();
  }
  std::optional<Tensor> g_idx = lookup(err.Name("weight_g_idx"));
  if (g_idx.has_value()) {
    if (s.granularity != QuantGranularity::kGroup) {
      return err.Bad("weight_g_idx", "present, but the scheme has ",
                     QuantGranularityName(s.granularity), " scales (g_idx needs group scales)");
    }
    ASSIGN_OR_RETURN(Tensor g, GIdxTensor(err, "weight_g_idx", *g_idx, cols, scale_shape[1]));
    if (!TrivialGIdx(g, s.group_size)) m.g_idx = g;
  } else if (s.act_order) {
    return err.Missing("weight_g_idx", "the scheme has group activation ordering");
  }
  return Validated(std::move(m), module);
}

// Scale shapes for unpacked values (float-quantized / naive-quantized fp8 or
// int8, DeepSeek fp8): file shape and our shape.
absl::Status UnpackedScaleShapes(const TensorErrors& err, const QuantSchemeSpec& s, int64_t rows,
                                 int64_t cols, const Tensor& scale, Shape* file, Shape* ours) {
  switch (s.granularity) {
    case QuantGranularity::kTensor:
      *ours = {1, 1};
      *file = scale.numel() == 1 && scale.rank() <= 2 ? scale.shape() : Shape{1};
      return absl::OkStatus();
    case QuantGranularity::kChannel:
      *ours = {rows, 1};
      *file = scale.rank() == 1 ? Shape{rows} : Shape{rows, 1};
      return absl::OkStatus();
    case QuantGranularity::kGroup:
      if (cols % s.group_size != 0) {
        return err.Bad("weight", "group size ", s.group_size, " does not divide the ", cols,
                       " input columns");
      }
      *ours = *file = {rows, cols / s.group_size};
      return absl::OkStatus();
    case QuantGranularity::kBlock:
      *ours = *file = {CeilDiv(rows, s.group_size), CeilDiv(cols, s.group_size)};
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

// compressed-tensors float-quantized / naive-quantized / int-quantized: the
// values stored one per element in `weight` (F8_E4M3 or I8) + weight_scale
// (+ weight_zero_point I8 with the scales' shape when asymmetric).
absl::StatusOr<QuantizedMatrix> ReadCtUnpacked(const QuantSchemeSpec& s, const std::string& module,
                                               const Tensor& weight, const TensorLookup& lookup) {
  const TensorErrors err(module);
  if (weight.rank() != 2 || weight.dim(0) <= 0 || weight.dim(1) <= 0) {
    return err.Bad("weight", "is ", ShapeOf(weight), ", expected a matrix");
  }
  const bool fp8 = weight.dtype() == DType::kF8E4M3;
  if (fp8 != IsFp8(s.value_type)) {
    return err.Bad("weight", "is ", TypeName(weight.dtype()),
                   " but the config group for this module has ", TypeName(s.value_type),
                   " weights");
  }
  const int64_t rows = weight.dim(0), cols = weight.dim(1);
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = s.value_type;
  m.granularity = s.granularity;
  m.group_size =
      s.granularity == QuantGranularity::kGroup || s.granularity == QuantGranularity::kBlock
          ? s.group_size
          : 0;
  std::optional<Tensor> scale_t = lookup(err.Name("weight_scale"));
  if (!scale_t) return err.Missing("weight_scale", "every quantized weight has scales");
  Shape file_shape, our_shape;
  RETURN_IF_ERROR(UnpackedScaleShapes(err, s, rows, cols, *scale_t, &file_shape, &our_shape));
  ASSIGN_OR_RETURN(m.scales, ScaleTensor(err, "weight_scale", *scale_t, file_shape, our_shape));
  if (fp8) {
    m.values = weight;  // shares the checkpoint's bytes
  } else {
    if (s.value_type == DType::kI4 && cols % 2 != 0) {
      return err.Bad("weight", "int4 weights need an even number of columns, got ", cols);
    }
    const int lo = s.value_type == DType::kI4 ? -8 : -128;
    const int hi = s.value_type == DType::kI4 ? 7 : 127;
    m.values = Tensor::Zeros(s.value_type, {rows, cols});
    const int8_t* src = weight.data<int8_t>();
    for (int64_t i = 0; i < rows * cols; ++i) {
      if (src[i] < lo || src[i] > hi) {
        return err.Bad("weight", "value ", int{src[i]}, " at element ", i, " is outside [", lo,
                       ", ", hi, "]");
      }
      PutValue(m.values, cols, i / cols, i % cols, src[i]);
    }
    if (!s.symmetric) {
      std::optional<Tensor> zp = lookup(err.Name("weight_zero_point"));
      if (!zp) return err.Missing("weight_zero_point", "the scheme is asymmetric");
      if (zp->dtype() != DType::kI8 || zp->numel() != NumElements(our_shape)) {
        return err.Bad("weight_zero_point", "is ", ShapeOf(*zp), ", expected I8 ",
                       ShapeString(our_shape));
      }
      ASSIGN_OR_RETURN(m.zero_points, zp->Clone().Reshape(our_shape));
      if (AllZero(m.zero_points)) m.zero_points = Tensor();
    }
  }
  return Validated(std::move(m), module);
}

absl::StatusOr<std::optional<QuantizedMatrix>> ReadCompressedTensors(const QuantizationConfig& qc,
                                                                     const std::string& module,
                                                                     const TensorLookup& lookup) {
  const TensorErrors err(module);
  const QuantSchemeSpec* s = qc.SchemeFor(module);
  std::optional<Tensor> packed = lookup(err.Name("weight_packed"));
  if (packed.has_value()) {
    if (s == nullptr) {
      return err.Bad("weight_packed", "found, but no quantization config group targets ", module,
                     " (or it is in the ignore list)");
    }
    ASSIGN_OR_RETURN(QuantizedMatrix m, ReadCtPacked(*s, module, *packed, lookup));
    return std::optional<QuantizedMatrix>(std::move(m));
  }
  std::optional<Tensor> weight = lookup(err.Name("weight"));
  if (!weight.has_value())
    return err.Missing("weight", "neither weight nor weight_packed is in the checkpoint");
  const bool quantized_storage =
      IsFp8(weight->dtype()) ||
      (weight->dtype() == DType::kI8 && lookup(err.Name("weight_scale")).has_value());
  if (!quantized_storage) return std::optional<QuantizedMatrix>();  // stored unquantized
  if (weight->dtype() == DType::kF8E5M2) {
    return err.Bad("weight",
                   "F8_E5M2 weights are not a compressed-tensors format (expected F8_E4M3)");
  }
  if (s == nullptr) {
    return err.Bad("weight", "is ", TypeName(weight->dtype()),
                   " with scales, but no quantization config group "
                   "targets ",
                   module, " (or it is in the ignore list)");
  }
  ASSIGN_OR_RETURN(QuantizedMatrix m, ReadCtUnpacked(*s, module, *weight, lookup));
  return std::optional<QuantizedMatrix>(std::move(m));
}

}  // namespace

absl::StatusOr<std::optional<QuantizedMatrix>> ReadQuantizedLinear(const QuantizationConfig& qc,
                                                                   const std::string& module,
                                                                   const TensorLookup& lookup) {
  switch (qc.kind) {
    case QuantizationConfig::Kind::kNone:
      return std::optional<QuantizedMatrix>();
    case QuantizationConfig::Kind::kCompressedTensors:
      return ReadCompressedTensors(qc, module, lookup);
    case QuantizationConfig::Kind::kGptq:
    case QuantizationConfig::Kind::kAwq:
      return ReadGptqOrAwq(qc, module, lookup);
    case QuantizationConfig::Kind::kFp8Block:
      return ReadDeepSeekFp8(qc, module, lookup);
  }
  return absl::InternalError("unknown quantization kind");
}

absl::StatusOr<std::optional<float>> ReadInputScale(const std::string& module,
                                                    const TensorLookup& lookup) {
  const TensorErrors err(module);
  std::optional<Tensor> t = lookup(err.Name("input_scale"));
  if (!t.has_value()) return std::optional<float>();
  if (!IsFloatScaleType(t->dtype()) || t->numel() != 1 || t->rank() > 2) {
    return err.Bad("input_scale", "is ", ShapeOf(*t), ", expected one F32/BF16/F16 value");
  }
  float v;
  ConvertToF32(t->dtype(), t->raw(), &v, 1);
  if (!std::isfinite(v) || v <= 0)
    return err.Bad("input_scale", "is ", v, " (expected finite and positive)");
  return std::optional<float>(v);
}

}  // namespace retort
