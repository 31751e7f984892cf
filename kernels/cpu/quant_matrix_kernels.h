// GEMV kernels of quant_matrix_matmul.h (internal header), written once for
// a vector ISA and compiled twice:
//   quant_matrix_matmul.cc   with the build's flags (AVX2: 8 floats a step),
//   quant_matrix_avx512.cc   with AVX-512 F/BW/VL added (16 floats a step),
//                            chosen at run time by the same switch as the
//                            integer dots (quant_matmul.h, QuantDotPath).
// Everything with code is in an unnamed namespace, so each translation unit
// keeps its own copy built with its own flags (as quant_dot_kernels.h).
//
// Values are widened to f32 in registers: int4 by a broadcast, a variable
// left shift putting each lane's nibble on top and an arithmetic shift right
// (sign-extending); int8 by a sign-extending move; fp8 by moving its bits
// into an f16's and widening with vcvtph2ps (exact, subnormals included).
#ifndef RETORT_KERNELS_CPU_QUANT_MATRIX_KERNELS_H_
#define RETORT_KERNELS_CPU_QUANT_MATRIX_KERNELS_H_

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/convert.h"
#include "core/quant_matrix.h"

namespace retort::cpu::qmm_internal {

// One GEMV call: y[i * ldy + r] = x_i . w[r] (+ bias[r]) for i < m and rows
// [r0, r1). xsum: [m, nseg] input sums per segment (asymmetric w), or null.
struct GemvJob {
  const QuantizedMatrix* w;
  const float* x;
  int64_t m;
  const float* xsum;
  int64_t segment, nseg;  // columns per scale segment, segments per row
  const float* bias;
  float* y;
  int64_t ldy, r0, r1;
};

// The AVX-512 build (quant_matrix_avx512.cc). REQUIRES: the CPU has AVX-512
// F/BW/VL; segment a multiple of 8 or the whole row; no g_idx.
void GemvRowsFastAvx512(const GemvJob& job);

namespace {

// Bytes of one row of stored values.
inline int64_t RowBytes(const QuantizedMatrix& w) {
  return w.value_type == DType::kI4 ? w.cols / 2 : w.cols;
}

// The decoders return q / kValueScale<V>: e4m3 widened through f16 comes out
// as q / 256, and the caller folds 256 into the scale (a power of two, so
// s * 256 and the products stay exact).
template <DType V>
inline constexpr float kValueScale = V == DType::kF8E4M3 ? 256.f : 1.f;

// One value, scaled as the vector decoders.
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

// e4m3 (s eeee mmm, bias 7) -> f16 bits s 0eeee mmm0000000 = value / 2^8:
// the byte sign-extended to 16 bits and shifted left by 7 has the sign in bit
// 15 and a copy of it in bit 14, which the mask clears. e5m2 is the top byte
// of an f16.
constexpr int16_t kE4M3Mask = static_cast<int16_t>(0xbf80);

// 8 floats a step (AVX2 + FMA + F16C).
struct Avx2 {
  using F = __m256;
  static constexpr int kLanes = 8;
  static F Zero() { return _mm256_setzero_ps(); }
  static F Load(const float* p) { return _mm256_loadu_ps(p); }
  static F Set1(float v) { return _mm256_set1_ps(v); }
  static F Fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F Add(F a, F b) { return _mm256_add_ps(a, b); }
  static float Sum(F v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
  }
  // Values [c, c + 8) of a row. int4: c even.
  template <DType V>
  static F Decode(const uint8_t* row, int64_t c) {
    if constexpr (V == DType::kI4) {
      int32_t bits;
      std::memcpy(&bits, row + c / 2, 4);
      const __m256i shifts = _mm256_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0);
      return _mm256_cvtepi32_ps(
          _mm256_srai_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(bits), shifts), 28));
    } else if constexpr (V == DType::kI8) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c));
      return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    } else if constexpr (V == DType::kF8E4M3) {
      const __m128i v =
          _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
      return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(v, 7), _mm_set1_epi16(kE4M3Mask)));
    } else {
      const __m128i v =
          _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
      return _mm256_cvtph_ps(_mm_slli_epi16(v, 8));
    }
  }
};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// 16 floats a step.
struct Avx512 {
  using F = __m512;
  static constexpr int kLanes = 16;
  static F Zero() { return _mm512_setzero_ps(); }
  static F Load(const float* p) { return _mm512_loadu_ps(p); }
  static F Set1(float v) { return _mm512_set1_ps(v); }
  static F Fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F Add(F a, F b) { return _mm512_add_ps(a, b); }
  static float Sum(F v) {
    const __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256(v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return Avx2::Sum(h);
  }
  // Values [c, c + 16) of a row. int4: c even.
  template <DType V>
  static F Decode(const uint8_t* row, int64_t c) {
    if constexpr (V == DType::kI4) {
      // Lanes 0-7 take the first 4 bytes, lanes 8-15 the next 4.
      const __m512i q = _mm512_permutexvar_epi32(
          _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
          _mm512_zextsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c / 2))));
      const __m512i shifts =
          _mm512_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0);
      return _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sllv_epi32(q, shifts), 28));
    } else if constexpr (V == DType::kI8) {
      return _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
    } else if constexpr (V == DType::kF8E4M3) {
      const __m256i v =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c)));
      return _mm512_cvtph_ps(
          _mm256_and_si256(_mm256_slli_epi16(v, 7), _mm256_set1_epi16(kE4M3Mask)));
    } else {
      const __m256i v =
          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c)));
      return _mm512_cvtph_ps(_mm256_slli_epi16(v, 8));
    }
  }
};
#endif

// Where the scales of weight row r live: segment g (columns [g * segment,
// min(cols, (g + 1) * segment))) has scale s[g] and zero point z[g].
struct RowScales {
  const float* s;
  const int8_t* z;  // null: symmetric
};

inline RowScales ScalesOfRow(const QuantizedMatrix& w, int64_t r) {
  const int64_t off = w.ScaleRow(r) * w.scales.dim(1);
  return {w.scales.data<float>() + off,
          w.zero_points.empty() ? nullptr : w.zero_points.data<int8_t>() + off};
}

// The job's rows for M input rows starting at input row i0. Per segment: U
// independent accumulators per input row hide the FMA latency; the segment's
// sum is scaled into one vector total per input row (one FMA per segment),
// reduced once per row. The part of a segment short of a whole vector (and
// the asymmetric term -s * z * sum(x)) goes to a scalar.
template <class Isa, DType V, int M>
void GemvRowsFast(const GemvJob& job, int64_t i0) {
  using F = typename Isa::F;
  constexpr int L = Isa::kLanes;
  constexpr int U = M == 1 ? 4 : 2;
  const QuantizedMatrix& w = *job.w;
  const int64_t cols = w.cols, segment = job.segment, nseg = job.nseg;
  const float* x = job.x + i0 * cols;
  const float* xsum = job.xsum == nullptr ? nullptr : job.xsum + i0 * nseg;
  float* y = job.y + i0 * job.ldy;
  const int64_t row_bytes = RowBytes(w);
  const uint8_t* values = w.values.data<uint8_t>();
  for (int64_t r = job.r0; r < job.r1; ++r) {
    const uint8_t* row = values + r * row_bytes;
    const RowScales rs = ScalesOfRow(w, r);
    F total[M];
    float extra[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      total[i] = Isa::Zero();
      extra[i] = 0.f;
    }
    for (int64_t g = 0; g < nseg; ++g) {
      const int64_t c0 = g * segment, c1 = std::min(cols, c0 + segment);
      F acc[M][U];
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc[i][u] = Isa::Zero();
      }
      int64_t c = c0;
      for (; c + L * U <= c1; c += L * U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          const F wv = Isa::template Decode<V>(row, c + L * u);
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i)
            acc[i][u] = Isa::Fma(wv, Isa::Load(x + i * cols + c + L * u), acc[i][u]);
        }
      }
      for (; c + L <= c1; c += L) {
        const F wv = Isa::template Decode<V>(row, c);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i)
          acc[i][0] = Isa::Fma(wv, Isa::Load(x + i * cols + c), acc[i][0]);
      }
      const float s = rs.s[g] * kValueScale<V>;
      const F sv = Isa::Set1(s);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        F sum = acc[i][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; ++u) sum = Isa::Add(sum, acc[i][u]);
        total[i] = Isa::Fma(sum, sv, total[i]);
        if (c < c1) {
          float t = 0.f;
          for (int64_t j = c; j < c1; ++j) t += Decode1<V>(row, j) * x[i * cols + j];
          extra[i] += s * t;
        }
        if (rs.z != nullptr) extra[i] -= s * static_cast<float>(rs.z[g]) * xsum[i * nseg + g];
      }
    }
    const float b = job.bias ? job.bias[r] : 0.f;
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) y[i * job.ldy + r] = Isa::Sum(total[i]) + extra[i] + b;
  }
}

// Four input rows per pass over the weights; more rows take more passes
// (MatMul sends m > kQuantMatrixGemvMaxRows to the GEMM path anyway).
template <class Isa, DType V>
void GemvRowsFastAnyM(const GemvJob& job) {
  for (int64_t i0 = 0; i0 < job.m; i0 += 4) {
    switch (std::min<int64_t>(4, job.m - i0)) {
      case 1:
        GemvRowsFast<Isa, V, 1>(job, i0);
        break;
      case 2:
        GemvRowsFast<Isa, V, 2>(job, i0);
        break;
      case 3:
        GemvRowsFast<Isa, V, 3>(job, i0);
        break;
      default:
        GemvRowsFast<Isa, V, 4>(job, i0);
    }
  }
}

template <class Isa>
void GemvRowsFastByType(const GemvJob& job) {
  switch (job.w->value_type) {
    case DType::kI4:
      return GemvRowsFastAnyM<Isa, DType::kI4>(job);
    case DType::kI8:
      return GemvRowsFastAnyM<Isa, DType::kI8>(job);
    case DType::kF8E4M3:
      return GemvRowsFastAnyM<Isa, DType::kF8E4M3>(job);
    default:
      return GemvRowsFastAnyM<Isa, DType::kF8E5M2>(job);
  }
}

}  // namespace
}  // namespace retort::cpu::qmm_internal

#endif  // RETORT_KERNELS_CPU_QUANT_MATRIX_KERNELS_H_
