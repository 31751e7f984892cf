// MatMul with QuantizedMatrix weights (see quant_matrix_matmul.h for the
// paths and their precision).
#include "kernels/cpu/quant_matrix_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/quant_matrix_kernels.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu {
namespace {

using qmm_internal::Avx2;
using qmm_internal::Decode1;
using qmm_internal::kValueScale;
using qmm_internal::RowBytes;
using qmm_internal::RowScales;
using qmm_internal::ScalesOfRow;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Any layout: each weight row dequantized into a scratch row, then dotted.
void GemvRowsGeneric(const QuantizedMatrix& w, const float* x, int64_t m, const float* bias,
                     float* y, int64_t ldy, int64_t r0, int64_t r1) {
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(w.cols));
  for (int64_t r = r0; r < r1; ++r) {
    DequantizeRowsFast(w, r, r + 1, row.data());
    const float b = bias ? bias[r] : 0.f;
    for (int64_t i = 0; i < m; ++i)
      y[i * ldy + r] = simd::Dot(row.data(), x + i * w.cols, w.cols) + b;
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
        __m256 q = Avx2::Decode<V>(row, c);
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
    return absl::InvalidArgumentError(absl::StrCat("MatMul: quantized weight ", w.Describe(), " [",
                                                   w.rows, ", ", w.cols, "]: ", parts...));
  };
  if (w.rows > 0 && w.cols > 0 && w.cols != k) return bad("does not take inputs of width ", k);
  if (absl::Status s = CheckQuantizedMatrixShapes(w); !s.ok()) return bad(s.message());
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

void QuantMatrixGemv::Rows(const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) const {
  if (!fast_) return GemvRowsGeneric(w_, x_, m_, bias, y, ldy, r0, r1);
  const qmm_internal::GemvJob job{
      &w_, x_, m_, xsum_.empty() ? nullptr : xsum_.data(), segment_, nseg_, bias, y, ldy, r0, r1};
  // AVX-512 where the integer dots use it too (same CPU check, same
  // RETORT_NO_AVX512 switch).
  if (ActiveQuantDotPath() == QuantDotPath::kAvx512Vnni) {
    return qmm_internal::GemvRowsFastAvx512(job);
  }
  qmm_internal::GemvRowsFastByType<Avx2>(job);
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
  Sgemm(false, true, static_cast<int>(m), static_cast<int>(rows), static_cast<int>(k), 1.f, x,
        static_cast<int>(k), scratch.data(), static_cast<int>(k), beta, y + r0,
        static_cast<int>(ldy));
}

absl::Status MatMul(const float* x, int64_t m, const QuantizedMatrix& w, const float* bias,
                    float* y) {
  return MatMulGroup(x, m, w.cols, {MatMulOutput{nullptr, bias, y, &w}});
}

}  // namespace retort::cpu
