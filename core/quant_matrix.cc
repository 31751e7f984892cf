#include "core/quant_matrix.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/named_values.h"
#include "core/thread_pool.h"

namespace retort {
namespace {
// DTypeName is a std::string_view, which this Abseil's StrCat does not take.
std::string TypeName(DType t) { return std::string(DTypeName(t)); }
}  // namespace

constexpr NamedValue<QuantGranularity> kGranularities[] = {{QuantGranularity::kTensor, "tensor"},
                                                           {QuantGranularity::kChannel, "channel"},
                                                           {QuantGranularity::kGroup, "group"},
                                                           {QuantGranularity::kBlock, "block"}};

// Describe()'s names of the value types.
constexpr NamedValue<DType> kValueTypeNames[] = {{DType::kI4, "int4"},
                                                 {DType::kI8, "int8"},
                                                 {DType::kF8E4M3, "fp8_e4m3"},
                                                 {DType::kF8E5M2, "fp8_e5m2"}};

const char* QuantGranularityName(QuantGranularity g) { return NameOfValue(kGranularities, g); }

std::string QuantLayoutName(QuantGranularity g, int64_t group_size) {
  if (g == QuantGranularity::kGroup) return absl::StrCat("g", group_size);
  if (g == QuantGranularity::kBlock) return absl::StrCat("block", group_size);
  return QuantGranularityName(g);
}

namespace {
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

Shape QuantScaleShape(QuantGranularity g, int64_t rows, int64_t cols, int64_t group_size) {
  switch (g) {
    case QuantGranularity::kTensor:
      return {1, 1};
    case QuantGranularity::kChannel:
      return {rows, 1};
    case QuantGranularity::kGroup:
      return {rows, CeilDiv(cols, group_size)};
    case QuantGranularity::kBlock:
      return {CeilDiv(rows, group_size), CeilDiv(cols, group_size)};
  }
  return {};
}

int64_t QuantizedMatrix::ScaleRow(int64_t r) const {
  switch (granularity) {
    case QuantGranularity::kTensor:
      return 0;
    case QuantGranularity::kBlock:
      return r / group_size;
    default:
      return r;
  }
}

int64_t QuantizedMatrix::ScaleCol(int64_t c) const {
  switch (granularity) {
    case QuantGranularity::kGroup:
      return g_idx.empty() ? c / group_size : g_idx.data<int32_t>()[c];
    case QuantGranularity::kBlock:
      return c / group_size;
    default:
      return 0;
  }
}

size_t QuantizedMatrix::nbytes() const {
  size_t n = values.nbytes() + scales.nbytes();
  if (!zero_points.empty()) n += zero_points.nbytes();
  if (!g_idx.empty()) n += g_idx.nbytes();
  return n;
}

double QuantizedMatrix::BitsPerWeight(int scale_bits) const {
  const double elems = static_cast<double>(rows) * static_cast<double>(cols);
  if (elems == 0) return 0;
  const double value_bits = DTypeBits(value_type);
  const double nscales = static_cast<double>(scales.numel());
  double bits = elems * value_bits + nscales * scale_bits;
  if (!zero_points.empty()) bits += nscales * value_bits;
  return bits / elems;
}

std::string QuantizedMatrix::Describe() const {
  const char* value_name = NameOfValue(kValueTypeNames, value_type, nullptr);
  std::string s = value_name != nullptr ? value_name : TypeName(value_type);
  absl::StrAppend(&s, " ", QuantLayoutName(granularity, group_size));
  if (value_type == DType::kI4 || value_type == DType::kI8) {
    absl::StrAppend(&s, symmetric() ? " sym" : " asym");
  }
  if (!g_idx.empty()) absl::StrAppend(&s, " act-order");
  return s;
}

namespace {

bool IsIntValue(DType t) { return t == DType::kI4 || t == DType::kI8; }

// ValidateQuantizedMatrix's checks in order, the scans of the entries only
// when `scan`; messages without the matrix's name.
absl::Status CheckQuantizedMatrix(const QuantizedMatrix& m, bool scan) {
  auto bad = [&](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (m.rows <= 0 || m.cols <= 0) return bad("empty quantized matrix [", m.rows, ", ", m.cols, "]");
  if (m.value_type != DType::kI4 && m.value_type != DType::kI8 && m.value_type != DType::kF8E4M3 &&
      m.value_type != DType::kF8E5M2) {
    return bad("quantized values of type ", TypeName(m.value_type),
               " (expected I4, I8, F8_E4M3 or F8_E5M2)");
  }
  if (m.value_type == DType::kI4 && m.cols % 2 != 0) {
    return bad("int4 rows need an even number of columns, got ", m.cols);
  }
  if (m.values.dtype() != m.value_type || m.values.shape() != Shape{m.rows, m.cols}) {
    return bad("values are ", TypeName(m.values.dtype()), " ", ShapeString(m.values.shape()),
               ", expected ", TypeName(m.value_type), " [", m.rows, ", ", m.cols, "]");
  }
  if (m.granularity == QuantGranularity::kGroup && m.group_size <= 0) {
    return bad("group size ", m.group_size, " must be positive");
  }
  if (m.granularity == QuantGranularity::kBlock && m.group_size <= 0) {
    return bad("block size ", m.group_size, " must be positive");
  }
  Shape scale_shape = QuantScaleShape(m.granularity, m.rows, m.cols, m.group_size);
  if (m.granularity == QuantGranularity::kGroup && !m.g_idx.empty()) {
    if (m.g_idx.dtype() != DType::kI32 || m.g_idx.shape() != Shape{m.cols}) {
      return bad("g_idx is ", TypeName(m.g_idx.dtype()), " ", ShapeString(m.g_idx.shape()),
                 ", expected I32 [", m.cols, "]");
    }
    if (m.scales.rank() != 2 || m.scales.dim(0) != m.rows) {
      return bad("scales ", ShapeString(m.scales.shape()), " do not have ", m.rows, " rows");
    }
    scale_shape = {m.rows, m.scales.dim(1)};
    const int32_t* g = m.g_idx.data<int32_t>();
    for (int64_t c = 0; scan && c < m.cols; ++c) {
      if (g[c] < 0 || g[c] >= scale_shape[1]) {
        return bad("g_idx[", c, "] = ", g[c], " is outside the ", scale_shape[1], " groups");
      }
    }
  }
  if (m.granularity != QuantGranularity::kGroup && !m.g_idx.empty()) {
    return bad("g_idx is only meaningful with group scales");
  }
  if (m.scales.dtype() != DType::kF32 || m.scales.shape() != scale_shape) {
    return bad("scales are ", TypeName(m.scales.dtype()), " ", ShapeString(m.scales.shape()),
               ", expected F32 ", ShapeString(scale_shape));
  }
  const float* s = m.scales.data<float>();
  for (int64_t i = 0; scan && i < m.scales.numel(); ++i) {
    if (!std::isfinite(s[i]) || s[i] <= 0) {
      return bad("scale ", i, " is ", s[i], " (scales must be finite and positive)");
    }
  }
  if (!m.zero_points.empty()) {
    if (!IsIntValue(m.value_type)) return bad("zero points are only for integer values");
    if (m.granularity != QuantGranularity::kGroup && m.granularity != QuantGranularity::kChannel) {
      return bad("zero points need channel or group scales");
    }
    if (m.zero_points.dtype() != DType::kI8 || m.zero_points.shape() != scale_shape) {
      return bad("zero points are ", TypeName(m.zero_points.dtype()), " ",
                 ShapeString(m.zero_points.shape()), ", expected I8 ", ShapeString(scale_shape));
    }
    if (scan && m.value_type == DType::kI4) {
      const int8_t* z = m.zero_points.data<int8_t>();
      for (int64_t i = 0; i < m.zero_points.numel(); ++i) {
        if (z[i] < -8 || z[i] > 7) return bad("int4 zero point ", i, " is ", int{z[i]});
      }
    }
  }
  if (scan && (m.value_type == DType::kF8E4M3 || m.value_type == DType::kF8E5M2)) {
    const uint8_t* v = m.values.data<uint8_t>();
    const int64_t n = m.rows * m.cols;
    for (int64_t i = 0; i < n; ++i) {
      const float f = m.value_type == DType::kF8E4M3 ? F8E4M3ToF32(v[i]) : F8E5M2ToF32(v[i]);
      if (!std::isfinite(f)) return bad("fp8 value ", i, " is not finite");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateQuantizedMatrix(const QuantizedMatrix& m, const std::string& what) {
  absl::Status s = CheckQuantizedMatrix(m, /*scan=*/true);
  if (s.ok()) return s;
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
}

absl::Status CheckQuantizedMatrixShapes(const QuantizedMatrix& m) {
  return CheckQuantizedMatrix(m, /*scan=*/false);
}

void DequantizeRows(const QuantizedMatrix& m, int64_t r0, int64_t r1, float* out) {
  const int64_t cols = m.cols;
  const float* scales = m.scales.data<float>();
  const int8_t* zeros = m.zero_points.empty() ? nullptr : m.zero_points.data<int8_t>();
  const int64_t scale_cols = m.scales.dim(1);
  for (int64_t r = r0; r < r1; ++r) {
    float* o = out + (r - r0) * cols;
    const int64_t sr = m.ScaleRow(r);
    for (int64_t c = 0; c < cols; ++c) {
      float q;
      switch (m.value_type) {
        case DType::kI4:
          q = UnpackI4(m.values.data<uint8_t>() + r * (cols / 2), c);
          break;
        case DType::kI8:
          q = m.values.data<int8_t>()[r * cols + c];
          break;
        case DType::kF8E4M3:
          q = F8E4M3ToF32(m.values.data<uint8_t>()[r * cols + c]);
          break;
        default:
          q = F8E5M2ToF32(m.values.data<uint8_t>()[r * cols + c]);
      }
      const int64_t si = sr * scale_cols + m.ScaleCol(c);
      const float z = zeros != nullptr ? static_cast<float>(zeros[si]) : 0.0f;
      o[c] = scales[si] * (q - z);
    }
  }
}

Tensor Dequantize(const QuantizedMatrix& m, DType dtype) {
  Tensor f32 = Tensor::Zeros(DType::kF32, {m.rows, m.cols});
  float* out = f32.mutable_data<float>();
  ParallelFor(m.rows, std::max<int64_t>(1, 65536 / m.cols),
              [&](int64_t r0, int64_t r1) { DequantizeRows(m, r0, r1, out + r0 * m.cols); });
  return dtype == DType::kF32 ? f32 : f32.To(dtype);
}

}  // namespace retort
