#include "formats/compressed_tensors_internal.h"

#include "core/convert.h"
#include "core/status.h"

namespace retort::ct_internal {

Tensor FloatToF32(const Tensor& t, Shape shape) {
  Tensor out = Tensor::Zeros(DType::kF32, std::move(shape));
  ConvertToF32(t.dtype(), t.raw(), out.mutable_data<float>(), t.numel());
  return out;
}

Tensor TransposeF32(const Tensor& t) {
  const int64_t a = t.dim(0), b = t.dim(1);
  Tensor out = Tensor::Zeros(DType::kF32, {b, a});
  const float* src = t.data<float>();
  float* dst = out.mutable_data<float>();
  for (int64_t i = 0; i < a; ++i) {
    for (int64_t j = 0; j < b; ++j) dst[j * a + i] = src[i * b + j];
  }
  return out;
}

void PutValue(Tensor& values, int64_t cols, int64_t r, int64_t c, int q) {
  if (values.dtype() == DType::kI4) {
    PackI4(values.mutable_data<uint8_t>() + r * (cols / 2), c, q);
  } else {
    values.mutable_data<int8_t>()[r * cols + c] = static_cast<int8_t>(q);
  }
}

int GetValue(const QuantizedMatrix& m, int64_t r, int64_t c) {
  if (m.value_type == DType::kI4) return UnpackI4(m.values.data<uint8_t>() + r * (m.cols / 2), c);
  return m.values.data<int8_t>()[r * m.cols + c];
}

bool AllZero(const Tensor& zeros) {
  const int8_t* z = zeros.data<int8_t>();
  for (int64_t i = 0; i < zeros.numel(); ++i) {
    if (z[i] != 0) return false;
  }
  return true;
}

bool TrivialGIdx(const Tensor& g_idx, int64_t group_size) {
  const int32_t* g = g_idx.data<int32_t>();
  for (int64_t c = 0; c < g_idx.numel(); ++c) {
    if (g[c] != c / group_size) return false;
  }
  return true;
}

std::string ShapeOf(const Tensor& t) { return TypeName(t.dtype()) + " " + ShapeString(t.shape()); }

absl::StatusOr<Tensor> ScaleTensor(const TensorErrors& err, const std::string& suffix,
                                   const Tensor& t, const Shape& shape, const Shape& out_shape) {
  if (!IsFloatScaleType(t.dtype()) || t.shape() != shape) {
    return err.Bad(suffix, "is ", ShapeOf(t), ", expected F32/BF16/F16 ", ShapeString(shape));
  }
  return FloatToF32(t, out_shape);
}

absl::StatusOr<Tensor> GIdxTensor(const TensorErrors& err, const std::string& suffix,
                                  const Tensor& t, int64_t cols, int64_t groups) {
  if ((t.dtype() != DType::kI32 && t.dtype() != DType::kI64) || t.shape() != Shape{cols}) {
    return err.Bad(suffix, "is ", ShapeOf(t), ", expected I32 [", cols, "]");
  }
  Tensor out = Tensor::Zeros(DType::kI32, {cols});
  int32_t* g = out.mutable_data<int32_t>();
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t v = t.dtype() == DType::kI32 ? t.data<int32_t>()[c] : t.data<int64_t>()[c];
    if (v < 0 || v >= groups) {
      return err.Bad(suffix, "entry ", c, " is ", v, ", outside the ", groups, " groups");
    }
    g[c] = static_cast<int32_t>(v);
  }
  return out;
}

absl::StatusOr<QuantizedMatrix> Validated(QuantizedMatrix m, const std::string& module) {
  RETURN_IF_ERROR(ValidateQuantizedMatrix(m, module));
  return m;
}

}  // namespace retort::ct_internal
