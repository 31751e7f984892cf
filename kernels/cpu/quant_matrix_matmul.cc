// MatMul with QuantizedMatrix weights (see quant_matrix_matmul.h for the
// paths and their precision).
#include "kernels/cpu/quant_matrix_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu {
namespace {

std::string TypeName(DType t) { return std::string(DTypeName(t)); }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes of one row of stored values.
int64_t RowBytes(const QuantizedMatrix& w) {
  return w.value_type == DType::kI4 ? w.cols / 2 : w.cols;
}

// ---------------------------------------------------------------------------
// Decoding stored values to f32, eight at a time in registers.
//
// The decoders return q * kValueScale<V>^-1: e4m3 is widened through f16 by
// moving its exponent and mantissa bits into an f16's (exact, subnormals
// included), which yields q / 256; the caller folds 256 into the scale (a
// power of two, so s * 256 and the product stay exact).

template <DType V>
inline constexpr float kValueScale = V == DType::kF8E4M3 ? 256.f : 1.f;

template <DType V>
inline __m256 Decode8(const uint8_t* row, int64_t c);

// int4, c even: the 8 nibbles of 4 bytes, element j in bits 4j..4j+3. Each
// lane shifts its nibble to the top, then an arithmetic shift sign-extends.
template <>
inline __m256 Decode8<DType::kI4>(const uint8_t* row, int64_t c) {
  int32_t bits;
  std::memcpy(&bits, row + c / 2, 4);
  const __m256i shifts = _mm256_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0);
  const __m256i v = _mm256_srai_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(bits), shifts), 28);
  return _mm256_cvtepi32_ps(v);
}

template <>
inline __m256 Decode8<DType::kI8>(const uint8_t* row, int64_t c) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

// e4m3 (s eeee mmm, bias 7) -> f16 bits s 0eeee mmm0000000 = value / 2^8:
// the byte sign-extended to 16 bits and shifted left by 7 has the sign in
// bit 15 and a copy of it in bit 14, which the mask clears.
template <>
inline __m256 Decode8<DType::kF8E4M3>(const uint8_t* row, int64_t c) {
  const __m128i v =
      _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
  return _mm256_cvtph_ps(
      _mm_and_si128(_mm_slli_epi16(v, 7), _mm_set1_epi16(static_cast<int16_t>(0xbf80))));
}

// e5m2 is the top byte of an f16.
template <>
inline __m256 Decode8<DType::kF8E5M2>(const uint8_t* row, int64_t c) {
  const __m128i v =
      _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
  return _mm256_cvtph_ps(_mm_slli_epi16(v, 8));
}

// One value, with the same scaling as Decode8.
template <DType V>
inline float Decode1(const uint8_t* row, int64_t c) {
  if constexpr (V == DType::kI4) {
    return UnpackI4(row, c);
  } else if constexpr (V == DType::kI8) {
    return static_cast<int8_t>(row[c]);
  } else if constexpr (V == DType::kF8E4M3) {
    return F8E4M3ToF32(row[c]) * (1.f / 256.f);
  } else {
    return F8E5M2ToF32(row[c]);
  }
}

// Where the scale of weight row r and its segment g lives: segment g covers
// columns [g * segment, min(cols, (g + 1) * segment)).
struct RowScales {
  const float* s;   // s[g]
  const int8_t* z;  // z[g], or null (symmetric)
};

inline RowScales ScalesOfRow(const QuantizedMatrix& w, int64_t r) {
  const int64_t sc = w.scales.dim(1);
  const int64_t off = w.ScaleRow(r) * sc;
  return {w.scales.data<float>() + off,
          w.zero_points.empty() ? nullptr : w.zero_points.data<int8_t>() + off};
}

// ---------------------------------------------------------------------------
// GEMV kernels.

// y[i * ldy + r] for M input rows (x + i * cols) and weight rows [r0, r1).
// Per segment: U independent accumulators per input row hide the FMA
// latency; the segment's sum is scaled into one vector total per input row
// (one FMA per segment), reduced once per row. xsum: [M, nseg] (asymmetric).
template <DType V, int M>
void GemvRowsFast(const QuantizedMatrix& w, const float* x, const float* xsum, int64_t segment,
                  int64_t nseg, const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int U = M == 1 ? 4 : 2;
  const int64_t cols = w.cols;
  const int64_t row_bytes = RowBytes(w);
  const uint8_t* values = w.values.data<uint8_t>();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = values + r * row_bytes;
    const RowScales rs = ScalesOfRow(w, r);
    __m256 total[M];
    float extra[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      total[i] = _mm256_setzero_ps();
      extra[i] = 0.f;
    }
    for (int64_t g = 0; g < nseg; ++g) {
      const int64_t c0 = g * segment, c1 = std::min(cols, c0 + segment);
      __m256 acc[M][U];
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc[i][u] = _mm256_setzero_ps();
      }
      int64_t c = c0;
      for (; c + 8 * U <= c1; c += 8 * U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          const __m256 wv = Decode8<V>(row, c + 8 * u);
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) {
            acc[i][u] =
                _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * cols + c + 8 * u), acc[i][u]);
          }
        }
      }
      for (; c + 8 <= c1; c += 8) {
        const __m256 wv = Decode8<V>(row, c);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i)
          acc[i][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * cols + c), acc[i][0]);
      }
      const float s = rs.s[g] * kValueScale<V>;
      const __m256 sv = _mm256_set1_ps(s);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        __m256 sum = acc[i][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[i][u]);
        total[i] = _mm256_fmadd_ps(sum, sv, total[i]);
        if (c < c1) {  // tail of a segment that is not whole groups of 8
          float t = 0.f;
          for (int64_t j = c; j < c1; ++j) t += Decode1<V>(row, j) * x[i * cols + j];
          extra[i] += s * t;
        }
        if (rs.z != nullptr) extra[i] -= s * static_cast<float>(rs.z[g]) * xsum[i * nseg + g];
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      y[i * ldy + r] = simd::HorizontalSum(total[i]) + extra[i] + (bias ? bias[r] : 0.f);
    }
  }
}

template <DType V>
void GemvRowsFastAnyM(const QuantizedMatrix& w, const float* x, int64_t m, const float* xsum,
                      int64_t segment, int64_t nseg, const float* bias, float* y, int64_t ldy,
                      int64_t r0, int64_t r1) {
  // Four input rows per pass over the weights; more rows take more passes
  // (MatMul sends m > kQuantMatrixGemvMaxRows to the GEMM path anyway).
  for (int64_t i0 = 0; i0 < m; i0 += 4) {
    const float* xi = x + i0 * w.cols;
    const float* si = xsum == nullptr ? nullptr : xsum + i0 * nseg;
    float* yi = y + i0 * ldy;
    switch (std::min<int64_t>(4, m - i0)) {
      case 1:
        GemvRowsFast<V, 1>(w, xi, si, segment, nseg, bias, yi, ldy, r0, r1);
        break;
      case 2:
        GemvRowsFast<V, 2>(w, xi, si, segment, nseg, bias, yi, ldy, r0, r1);
        break;
      case 3:
        GemvRowsFast<V, 3>(w, xi, si, segment, nseg, bias, yi, ldy, r0, r1);
        break;
      default:
        GemvRowsFast<V, 4>(w, xi, si, segment, nseg, bias, yi, ldy, r0, r1);
    }
  }
}

// Any layout: each weight row dequantized into a scratch row, then dotted.
void GemvRowsGeneric(const QuantizedMatrix& w, const float* x, int64_t m, const float* bias,
                     float* y, int64_t ldy, int64_t r0, int64_t r1) {
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    DequantizeRowsFast(w, r, r + 1, row.data());
    const float b = bias ? bias[r] : 0.f;
    for (int64_t i = 0; i < m; ++i) y[i * ldy + r] = simd::Dot(row.data(), x + i * w.cols, w.cols) + b;
  }
}

// ---------------------------------------------------------------------------
// Dequantization (GEMM path): out = s * (q - z) in f32, as DequantizeRows.

template <DType V>
void DequantizeRowsFastT(const QuantizedMatrix& w, int64_t segment, int64_t r0, int64_t r1,
                         float* out) {
  const int64_t cols = w.cols, nseg = CeilDiv(cols, segment);
  const int64_t row_bytes = RowBytes(w);
  const uint8_t* values = w.values.data<uint8_t>();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = values + r * row_bytes;
    float* o = out + (r - r0) * cols;
    const RowScales rs = ScalesOfRow(w, r);
    for (int64_t g = 0; g < nseg; ++g) {
      const int64_t c0 = g * segment, c1 = std::min(cols, c0 + segment);
      // e4m3: (q / 256) * (s * 256) == q * s, rounded once, like the reference.
      const float s = rs.s[g] * kValueScale<V>;
      const float z = rs.z != nullptr ? static_cast<float>(rs.z[g]) : 0.f;
      const __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(z);
      int64_t c = c0;
      for (; c + 8 <= c1; c += 8) {
        __m256 q = Decode8<V>(row, c);
        if (rs.z != nullptr) q = _mm256_sub_ps(q, zv);
        _mm256_storeu_ps(o + c, _mm256_mul_ps(sv, q));
      }
      for (; c < c1; ++c) o[c] = s * (Decode1<V>(row, c) - z);
    }
  }
}

// Columns per scale segment: the group/block size, or the whole row.
int64_t SegmentOf(const QuantizedMatrix& w) {
  return w.granularity == QuantGranularity::kGroup || w.granularity == QuantGranularity::kBlock
             ? w.group_size
             : w.cols;
}

// Whether the register kernels take w: contiguous segments whose starts are
// multiples of 8 columns (so int4 chunks start on a byte).
bool FastLayout(const QuantizedMatrix& w) {
  if (!w.g_idx.empty()) return false;
  const int64_t seg = SegmentOf(w);
  return seg == w.cols || seg % 8 == 0;
}

}  // namespace

absl::Status CheckQuantizedMatrixLayout(const QuantizedMatrix& w, int64_t k) {
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: quantized weight ", w.Describe(), " [", w.rows, ", ", w.cols,
                     "]: ", parts...));
  };
  if (w.rows <= 0 || w.cols <= 0) return bad("is empty");
  if (w.cols != k) return bad("does not take inputs of width ", k);
  if (w.value_type != DType::kI4 && w.value_type != DType::kI8 &&
      w.value_type != DType::kF8E4M3 && w.value_type != DType::kF8E5M2) {
    return bad("value type ", TypeName(w.value_type), " (expected I4, I8, F8_E4M3 or F8_E5M2)");
  }
  if (w.value_type == DType::kI4 && w.cols % 2 != 0) return bad("int4 rows need even columns");
  if (w.values.dtype() != w.value_type || w.values.shape() != Shape{w.rows, w.cols}) {
    return bad("values are ", TypeName(w.values.dtype()), " ", ShapeString(w.values.shape()));
  }
  Shape scale_shape;
  switch (w.granularity) {
    case QuantGranularity::kTensor:
      scale_shape = {1, 1};
      break;
    case QuantGranularity::kChannel:
      scale_shape = {w.rows, 1};
      break;
    case QuantGranularity::kGroup:
      if (w.group_size <= 0) return bad("group size ", w.group_size);
      if (!w.g_idx.empty()) {
        if (w.g_idx.dtype() != DType::kI32 || w.g_idx.shape() != Shape{w.cols}) {
          return bad("g_idx is ", TypeName(w.g_idx.dtype()), " ", ShapeString(w.g_idx.shape()),
                     ", expected I32 [", w.cols, "]");
        }
        if (w.scales.rank() != 2) return bad("scales are not rank 2");
        scale_shape = {w.rows, w.scales.dim(1)};
      } else {
        scale_shape = {w.rows, CeilDiv(w.cols, w.group_size)};
      }
      break;
    case QuantGranularity::kBlock:
      if (w.group_size <= 0) return bad("block size ", w.group_size);
      scale_shape = {CeilDiv(w.rows, w.group_size), CeilDiv(w.cols, w.group_size)};
      break;
  }
  if (w.granularity != QuantGranularity::kGroup && !w.g_idx.empty()) {
    return bad("g_idx needs group scales");
  }
  if (w.scales.dtype() != DType::kF32 || w.scales.shape() != scale_shape) {
    return bad("scales are ", TypeName(w.scales.dtype()), " ", ShapeString(w.scales.shape()),
               ", expected F32 ", ShapeString(scale_shape));
  }
  if (!w.zero_points.empty()) {
    if (w.value_type != DType::kI4 && w.value_type != DType::kI8) {
      return bad("zero points need integer values");
    }
    if (w.granularity != QuantGranularity::kGroup &&
        w.granularity != QuantGranularity::kChannel) {
      return bad("zero points need channel or group scales");
    }
    if (w.zero_points.dtype() != DType::kI8 || w.zero_points.shape() != scale_shape) {
      return bad("zero points are ", TypeName(w.zero_points.dtype()), " ",
                 ShapeString(w.zero_points.shape()), ", expected I8 ", ShapeString(scale_shape));
    }
  }
  return absl::OkStatus();
}

void DequantizeRowsFast(const QuantizedMatrix& w, int64_t r0, int64_t r1, float* out) {
  if (!FastLayout(w)) return DequantizeRows(w, r0, r1, out);
  const int64_t seg = SegmentOf(w);
  switch (w.value_type) {
    case DType::kI4:
      return DequantizeRowsFastT<DType::kI4>(w, seg, r0, r1, out);
    case DType::kI8:
      return DequantizeRowsFastT<DType::kI8>(w, seg, r0, r1, out);
    case DType::kF8E4M3:
      return DequantizeRowsFastT<DType::kF8E4M3>(w, seg, r0, r1, out);
    default:
      return DequantizeRowsFastT<DType::kF8E5M2>(w, seg, r0, r1, out);
  }
}

QuantMatrixGemv::QuantMatrixGemv(const QuantizedMatrix& w, const float* x, int64_t m)
    : w_(w), x_(x), m_(m), segment_(SegmentOf(w)), fast_(FastLayout(w)) {
  nseg_ = CeilDiv(w.cols, segment_);
  if (!fast_ || w.zero_points.empty()) return;
  xsum_.resize(static_cast<size_t>(m * nseg_));
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * w.cols;
    for (int64_t g = 0; g < nseg_; ++g) {
      double s = 0;
      for (int64_t c = g * segment_; c < std::min(w.cols, (g + 1) * segment_); ++c) s += xi[c];
      xsum_[i * nseg_ + g] = static_cast<float>(s);
    }
  }
}

void QuantMatrixGemv::Rows(const float* bias, float* y, int64_t ldy, int64_t r0,
                           int64_t r1) const {
  if (!fast_) return GemvRowsGeneric(w_, x_, m_, bias, y, ldy, r0, r1);
  const float* xs = xsum_.empty() ? nullptr : xsum_.data();
  switch (w_.value_type) {
    case DType::kI4:
      return GemvRowsFastAnyM<DType::kI4>(w_, x_, m_, xs, segment_, nseg_, bias, y, ldy, r0, r1);
    case DType::kI8:
      return GemvRowsFastAnyM<DType::kI8>(w_, x_, m_, xs, segment_, nseg_, bias, y, ldy, r0, r1);
    case DType::kF8E4M3:
      return GemvRowsFastAnyM<DType::kF8E4M3>(w_, x_, m_, xs, segment_, nseg_, bias, y, ldy, r0,
                                              r1);
    default:
      return GemvRowsFastAnyM<DType::kF8E5M2>(w_, x_, m_, xs, segment_, nseg_, bias, y, ldy, r0,
                                              r1);
  }
}

void QuantMatrixGemmBlock(const float* x, int64_t m, const QuantizedMatrix& w, const float* bias,
                          float* y, int64_t ldy, int64_t r0, int64_t r1,
                          std::vector<float>& scratch) {
  const int64_t k = w.cols, rows = r1 - r0;
  scratch.resize(static_cast<size_t>(rows * k));
  DequantizeRowsFast(w, r0, r1, scratch.data());
  float beta = 0.f;
  if (bias) {
    for (int64_t i = 0; i < m; ++i) std::copy(bias + r0, bias + r1, y + i * ldy + r0);
    beta = 1.f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(rows),
              static_cast<int>(k), 1.f, x, static_cast<int>(k), scratch.data(),
              static_cast<int>(k), beta, y + r0, static_cast<int>(ldy));
}

absl::Status MatMul(const float* x, int64_t m, const QuantizedMatrix& w, const float* bias,
                    float* y) {
  return MatMulGroup(x, m, w.cols, {MatMulOutput{nullptr, bias, y, &w}});
}

}  // namespace retort::cpu
