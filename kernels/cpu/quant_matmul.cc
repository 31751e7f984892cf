// Dot products on ggml blocks (see quant_matmul.h for the scheme).
//
// Every vectorised dot keeps the integer part of a block exact and adds one
// f32 term per block (per super-block for the k-quants), so it agrees with
// the scalar reference up to the order of those f32 additions.
//
// AVX2 has no signed x signed 8-bit multiply; _mm256_maddubs_epi16 takes
// unsigned x signed. Unsigned weights (Q4_1, Q5_1, and the k-quants, whose
// offsets are applied later through the activation sums) go in as they are;
// signed weights w go in as |w| with the activation's sign flipped where w < 0
// (_mm256_sign_epi8), which leaves every product w * a unchanged. Pair sums
// stay within int16: at most 2 * 128 * 127 = 32512 (activations are in
// [-127, 127], never -128).
#include "kernels/cpu/quant_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/convert.h"
#include "core/ggml_blocks.h"
#include "kernels/cpu/kernel_path.h"
#include "kernels/cpu/quant_dot_kernels.h"
#include "kernels/cpu/quant_repack.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu {
namespace {

using ggml::BlockQ4_0;
using ggml::BlockQ4_1;
using ggml::BlockQ4_K;
using ggml::BlockQ5_0;
using ggml::BlockQ5_1;
using ggml::BlockQ5_K;
using ggml::BlockQ6_K;
using ggml::BlockQ8_0;
using ggml::BlockQ8_1;
using ggml::BlockQ8_K;
using ggml::kQK_K;
using quant_internal::Act32;
using quant_internal::BitsToBytes;
using quant_internal::H2F;
using quant_internal::Load256;
using quant_internal::Load32;
using quant_internal::UnpackNibbles16;
inline uint16_t F2H(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

// ---------------------------------------------------------------------------
// Activation quantization. One rule for all three types, applied per block of
// 32 (Q8_0/Q8_1) or 256 (Q8_K): d = max|x| / 127, q = nearest-even(x * (1/d)).

// Quantizes 32 floats (scalar definition).
inline int QuantizeBlock32Scalar(const float* x, int8_t* q, float* d_out) {
  float amax = 0.f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
    sum += q[j];
  }
  *d_out = d;
  return sum;
}

inline float AbsMax8(__m256 v) {
  const __m256 abs = _mm256_andnot_ps(_mm256_set1_ps(-0.f), v);
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(abs), _mm256_extractf128_ps(abs, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// 32 floats times `id`, rounded to nearest-even, packed to int8 in order.
// Returns the 32 values as int8 in a register.
inline __m256i RoundPack32(const float* x, float id) {
  const __m256 mul = _mm256_set1_ps(id);
  __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), mul));
  __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), mul));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), mul));
  __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), mul));
  // packs work within 128-bit lanes: fix the order with one permute.
  __m256i p01 = _mm256_packs_epi32(i0, i1);
  __m256i p23 = _mm256_packs_epi32(i2, i3);
  __m256i p = _mm256_packs_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Vectorised twin of QuantizeBlock32Scalar (cvtps rounds nearest-even under
// the default MXCSR, like nearbyint). Returns the sum of the q's.
inline int QuantizeBlock32(const float* x, int8_t* q, float* d_out) {
  __m256 m = _mm256_max_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_loadu_ps(x)),
                           _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_loadu_ps(x + 8)));
  m = _mm256_max_ps(m, _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_loadu_ps(x + 16)));
  m = _mm256_max_ps(m, _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_loadu_ps(x + 24)));
  const float amax = AbsMax8(m);
  const float d = amax / 127.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  const __m256i v = RoundPack32(x, id);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), v);
  *d_out = d;
  // sum of 32 int8: widen pairs to int16 with maddubs(1, v), then to int32.
  __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
  return _mm_cvtsi128_si32(s4);
}

void QuantizeQ8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    float d;
    QuantizeBlock32(x + b * 32, y[b].qs, &d);
    y[b].d = F2H(d);
  }
}

void QuantizeQ8_1(const float* x, BlockQ8_1* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    float d;
    const int sum = QuantizeBlock32(x + b * 32, y[b].qs, &d);
    y[b].d = F2H(d);
    y[b].s = F2H(d * static_cast<float>(sum));
  }
}

void QuantizeQ8_K(const float* x, BlockQ8_K* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += kQK_K) {
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < kQK_K; j += 8)
      m = _mm256_max_ps(m, _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_loadu_ps(x + j)));
    const float d = AbsMax8(m) / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    y[b].d = d;
    for (int j = 0; j < kQK_K; j += 32) {
      const __m256i v = RoundPack32(x + j, id);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs + j), v);
      // Two sums of 16: int16 pair sums, then horizontal within each lane.
      __m256i s =
          _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
      s = _mm256_hadd_epi32(s, s);
      s = _mm256_hadd_epi32(s, s);
      y[b].bsums[j / 16] = static_cast<int16_t>(_mm256_extract_epi32(s, 0));
      y[b].bsums[j / 16 + 1] = static_cast<int16_t>(_mm256_extract_epi32(s, 4));
    }
  }
}

// ---------------------------------------------------------------------------
// Scalar references.

void QuantizeRowReference(DType act, const float* x, void* dst, int64_t n) {
  switch (act) {
    case DType::kQ8_0: {
      auto* y = static_cast<BlockQ8_0*>(dst);
      for (int64_t b = 0; b < n / 32; ++b) {
        float d;
        QuantizeBlock32Scalar(x + b * 32, y[b].qs, &d);
        y[b].d = F2H(d);
      }
      return;
    }
    case DType::kQ8_1: {
      auto* y = static_cast<BlockQ8_1*>(dst);
      for (int64_t b = 0; b < n / 32; ++b) {
        float d;
        const int sum = QuantizeBlock32Scalar(x + b * 32, y[b].qs, &d);
        y[b].d = F2H(d);
        y[b].s = F2H(d * static_cast<float>(sum));
      }
      return;
    }
    case DType::kQ8_K: {
      auto* y = static_cast<BlockQ8_K*>(dst);
      for (int64_t b = 0; b < n / kQK_K; ++b) {
        const float* xb = x + b * kQK_K;
        float amax = 0.f;
        for (int j = 0; j < kQK_K; ++j) amax = std::max(amax, std::fabs(xb[j]));
        const float d = amax / 127.f;
        const float id = d != 0.f ? 1.f / d : 0.f;
        y[b].d = d;
        for (int j = 0; j < kQK_K; ++j)
          y[b].qs[j] = static_cast<int8_t>(std::nearbyint(xb[j] * id));
        for (int s = 0; s < kQK_K / 16; ++s) {
          int sum = 0;
          for (int j = 0; j < 16; ++j) sum += y[b].qs[s * 16 + j];
          y[b].bsums[s] = static_cast<int16_t>(sum);
        }
      }
      return;
    }
    default:
      std::memcpy(dst, x, n * sizeof(float));
  }
}

// The 6-bit scales and mins of Q4_K/Q5_K's eight sub-blocks (12 bytes).
inline void UnpackScalesMinsK4(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    mn[j] = s[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The 32 weights of a legacy block as the integers its dot multiplies:
// Q8_0's bytes; the nibbles (plus the fifth bit from qh for Q5_*), less 8 or
// 16 for the symmetric Q4_0 / Q5_0.
template <typename Block>
void LegacyWeights(const Block& b, int* q) {
  if constexpr (std::is_same_v<Block, BlockQ8_0>) {
    for (int j = 0; j < 32; ++j) q[j] = b.qs[j];
  } else {
    constexpr bool kFiveBits = requires { b.qh; };
    for (int j = 0; j < 16; ++j) {
      q[j] = b.qs[j] & 0x0f;
      q[j + 16] = b.qs[j] >> 4;
    }
    if constexpr (kFiveBits) {
      const uint32_t qh = Load32(b.qh);
      for (int j = 0; j < 32; ++j) q[j] |= ((qh >> j) & 1) << 4;
    }
    if constexpr (!requires { b.m; }) {
      for (int j = 0; j < 32; ++j) q[j] -= kFiveBits ? 16 : 8;
    }
  }
}

// Q8_0 / Q4_0 / Q5_0 against Q8_0 activations, Q4_1 / Q5_1 (plus their min
// times the activations' sum) against Q8_1.
template <typename WBlock, typename ABlock>
float DotLegacyReference(const void* wv, const void* av, int64_t n) {
  const auto* w = static_cast<const WBlock*>(wv);
  const auto* a = static_cast<const ABlock*>(av);
  float acc = 0.f;
  int q[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    LegacyWeights(w[b], q);
    int s = 0;
    for (int j = 0; j < 32; ++j) s += q[j] * a[b].qs[j];
    float block = H2F(w[b].d) * H2F(a[b].d) * static_cast<float>(s);
    if constexpr (requires { w[b].m; }) block += H2F(w[b].m) * H2F(a[b].s);
    acc += block;
  }
  return acc;
}

float DotReference(DType wt, const void* wv, const void* av, int64_t n) {
  float acc = 0.f;
  switch (wt) {
    case DType::kQ8_0:
      return DotLegacyReference<BlockQ8_0, BlockQ8_0>(wv, av, n);
    case DType::kQ4_0:
      return DotLegacyReference<BlockQ4_0, BlockQ8_0>(wv, av, n);
    case DType::kQ4_1:
      return DotLegacyReference<BlockQ4_1, BlockQ8_1>(wv, av, n);
    case DType::kQ5_0:
      return DotLegacyReference<BlockQ5_0, BlockQ8_0>(wv, av, n);
    case DType::kQ5_1:
      return DotLegacyReference<BlockQ5_1, BlockQ8_1>(wv, av, n);
    case DType::kQ4_K:
    case DType::kQ5_K: {
      const bool five = wt == DType::kQ5_K;
      auto* a = static_cast<const BlockQ8_K*>(av);
      for (int64_t b = 0; b < n / kQK_K; ++b) {
        const uint8_t *scales, *qs, *qh = nullptr;
        uint16_t d16, dmin16;
        if (five) {
          auto& w = static_cast<const BlockQ5_K*>(wv)[b];
          scales = w.scales, qs = w.qs, qh = w.qh, d16 = w.d, dmin16 = w.dmin;
        } else {
          auto& w = static_cast<const BlockQ4_K*>(wv)[b];
          scales = w.scales, qs = w.qs, d16 = w.d, dmin16 = w.dmin;
        }
        uint8_t sc[8], mn[8];
        UnpackScalesMinsK4(scales, sc, mn);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 4; ++j) {  // 64 elements: 32 low nibbles, then 32 high
          int s_lo = 0, s_hi = 0;
          for (int l = 0; l < 32; ++l) {
            int lo = qs[32 * j + l] & 0x0f, hi = qs[32 * j + l] >> 4;
            if (five) {
              lo |= ((qh[l] >> (2 * j)) & 1) << 4;
              hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
            }
            s_lo += lo * a[b].qs[64 * j + l];
            s_hi += hi * a[b].qs[64 * j + 32 + l];
          }
          sumi += sc[2 * j] * s_lo + sc[2 * j + 1] * s_hi;
        }
        for (int j = 0; j < 8; ++j) summ += mn[j] * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        acc += a[b].d * H2F(d16) * static_cast<float>(sumi) -
               a[b].d * H2F(dmin16) * static_cast<float>(summ);
      }
      return acc;
    }
    case DType::kQ6_K: {
      auto* w = static_cast<const BlockQ6_K*>(wv);
      auto* a = static_cast<const BlockQ8_K*>(av);
      for (int64_t b = 0; b < n / kQK_K; ++b) {
        int sumi = 0;
        for (int h = 0; h < 2; ++h) {  // halves of 128
          const uint8_t* ql = w[b].ql + 64 * h;
          const uint8_t* qh = w[b].qh + 32 * h;
          const int8_t* sc = w[b].scales + 8 * h;
          const int8_t* q8 = a[b].qs + 128 * h;
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            sumi += sc[is] * q1 * q8[l] + sc[is + 2] * q2 * q8[l + 32] +
                    sc[is + 4] * q3 * q8[l + 64] + sc[is + 6] * q4 * q8[l + 96];
          }
        }
        acc += a[b].d * H2F(w[b].d) * static_cast<float>(sumi);
      }
      return acc;
    }
    default: {
      std::vector<float> row(n);
      ggml::DequantizeRow(wt, wv, row.data(), n);
      const float* x = static_cast<const float*>(av);
      for (int64_t j = 0; j < n; ++j) acc += row[j] * x[j];
      return acc;
    }
  }
}

// ---------------------------------------------------------------------------
// AVX2 dots.

// UnpackScalesMinsK4 on 32-bit words: byte j of *sc / *mn is sub-block j's
// 6-bit scale / min. Scales 0-3 and mins 0-3 are the low 6 bits of bytes 0-3
// and 4-7; scales 4-7 take the low nibbles of bytes 8-11 and, as bits 4-5,
// the top two bits of bytes 0-3; mins 4-7 the high nibbles of bytes 8-11 and
// the top two bits of bytes 4-7.
inline void UnpackScalesMinsK4Words(const uint8_t* s, uint64_t* sc, uint64_t* mn) {
  const uint32_t w0 = Load32(s), w1 = Load32(s + 4), w2 = Load32(s + 8);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kBits45 = 0x30303030;
  const uint32_t sc_hi = (w2 & kLow4) | ((w0 >> 2) & kBits45);
  const uint32_t mn_hi = ((w2 >> 4) & kLow4) | ((w1 >> 2) & kBits45);
  *sc = (w0 & kLow6) | (static_cast<uint64_t>(sc_hi) << 32);
  *mn = (w1 & kLow6) | (static_cast<uint64_t>(mn_hi) << 32);
}

// Sum of mins[j] * (bsums[2j] + bsums[2j+1]) over the 8 sub-blocks (byte j
// of mn8 is mins[j]).
inline int MinsTermK4(uint64_t mn8, const int16_t* bsums) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bsums));
  const __m128i b2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bsums + 8));
  const __m128i pair = _mm_hadd_epi16(b, b2);  // bsums[2j] + bsums[2j+1], j = 0..7
  const __m128i m = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(mn8)));
  __m128i s = _mm_madd_epi16(pair, m);
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

template <bool kFive>
inline float DotQ45K(const void* wv, const void* av, int64_t n) {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  const Block* w = static_cast<const Block*>(wv);
  const BlockQ8_K* a = static_cast<const BlockQ8_K*>(av);
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps();
  float summ = 0.f;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    uint64_t sc8, mn8;
    UnpackScalesMinsK4Words(w[b].scales, &sc8, &mn8);
    // The 8 scales as int16 in both 128-bit lanes; ScaleOf(j) broadcasts one.
    const __m256i sc16 = _mm256_broadcastsi128_si256(
        _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(sc8))));
    auto scale_of = [&](int j) {
      return _mm256_shuffle_epi8(sc16,
                                 _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * j)));
    };
    __m256i hbits;
    if constexpr (kFive) hbits = Load256(w[b].qh);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i q = Load256(w[b].qs + 32 * j);
      __m256i lo = _mm256_and_si256(q, low4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      if constexpr (kFive) {
        const __m256i one = _mm256_set1_epi8(1);
        const __m256i h = _mm256_srli_epi16(hbits, 2 * j);
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
        hi = _mm256_or_si256(hi,
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4));
      }
      const __m256i p_lo =
          _mm256_madd_epi16(_mm256_maddubs_epi16(lo, Load256(a[b].qs + 64 * j)), scale_of(2 * j));
      const __m256i p_hi = _mm256_madd_epi16(
          _mm256_maddubs_epi16(hi, Load256(a[b].qs + 64 * j + 32)), scale_of(2 * j + 1));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(a[b].d * H2F(w[b].d)), _mm256_cvtepi32_ps(sumi), acc);
    summ += a[b].d * H2F(w[b].dmin) * static_cast<float>(MinsTermK4(mn8, a[b].bsums));
  }
  return simd::HorizontalSum(acc) - summ;
}

inline float DotQ6K(const void* wv, const void* av, int64_t n) {
  const BlockQ6_K* w = static_cast<const BlockQ6_K*>(wv);
  const BlockQ8_K* a = static_cast<const BlockQ8_K*>(av);
  const __m256i low4 = _mm256_set1_epi8(0x0f), bits45 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    // The -32 offset: sum over the 16 sub-blocks of scale * bsum, times 32.
    const __m256i sc16 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales)));
    __m256i offs = _mm256_madd_epi16(sc16, Load256(a[b].bsums));
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[b].ql + 64 * h;
      const int8_t* sc = w[b].scales + 8 * h;
      const int8_t* q8 = a[b].qs + 128 * h;
      const __m256i qh = Load256(w[b].qh + 32 * h);
      const __m256i ql0 = Load256(ql), ql1 = Load256(ql + 32);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
          _mm256_or_si256(_mm256_and_si256(ql1, low4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                          _mm256_and_si256(qh, bits45)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
      };
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        const __m256i scale =
            _mm256_set_m128i(_mm_set1_epi16(sc[2 * t + 1]), _mm_set1_epi16(sc[2 * t]));
        sumi = _mm256_add_epi32(
            sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[t], Load256(q8 + 32 * t)), scale));
      }
    }
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offs, 5));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(a[b].d * H2F(w[b].d)), _mm256_cvtepi32_ps(sumi), acc);
  }
  return simd::HorizontalSum(acc);
}

// Generic path: dequantize the row into a per-thread scratch, f32 dot.
inline float DotGeneric(DType wt, const void* w, const void* a, int64_t n) {
  thread_local std::vector<float> row;
  if (static_cast<int64_t>(row.size()) < n) row.resize(n);
  ggml::DequantizeRow(wt, w, row.data(), n);
  return simd::Dot(row.data(), static_cast<const float*>(a), n);
}

// ---------------------------------------------------------------------------
// 32-block types: the shared kernels of quant_dot_kernels.h, AVX2 or VNNI.

bool Is32BlockType(DType wt) {
  return wt == DType::kQ4_0 || wt == DType::kQ5_0 || wt == DType::kQ8_0 || wt == DType::kQ4_1 ||
         wt == DType::kQ5_1;
}

int Offset32(DType wt) {
  switch (wt) {
    case DType::kQ4_0:
      return quant_internal::KindQ4_0::kOffset;
    case DType::kQ5_0:
      return quant_internal::KindQ5_0::kOffset;
    case DType::kQ8_0:
      return quant_internal::KindQ8_0::kOffset;
    default:
      return 0;
  }
}

bool CpuHasVnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

using Paths =
    KernelPathChoice<QuantDotPath, QuantDotPath::kAvx2, QuantDotPath::kAvx512Vnni, CpuHasVnni>;

// Per-thread scratch for the Act32 tables of up to m input rows.
struct Act32Scratch {
  std::vector<float> d, s;
  std::vector<int32_t> off;  // 8 lanes per block
  std::vector<Act32> acts;
};

// Fills acts[0, m) for input rows act + i * act_row_bytes (nb blocks each).
const Act32* PrepareAct32(DType wt, const char* act, size_t act_row_bytes, int64_t m, int64_t nb,
                          Act32Scratch& sc) {
  const bool q8_1 = QuantDotActivationType(wt) == DType::kQ8_1;
  const int offset = Offset32(wt);
  const size_t total = static_cast<size_t>(m * nb);
  if (sc.d.size() < total) sc.d.resize(total);
  if (q8_1 && sc.s.size() < total) sc.s.resize(total);
  if (offset != 0 && sc.off.size() < 8 * total) sc.off.resize(8 * total);
  if (sc.acts.size() < static_cast<size_t>(m)) sc.acts.resize(m);
  // offset is a power of two: -offset * sums as a negated shift.
  const int shift = offset == 0 ? 0 : __builtin_ctz(static_cast<unsigned>(offset));
  for (int64_t i = 0; i < m; ++i) {
    const char* blocks = act + i * act_row_bytes;
    float* d = sc.d.data() + i * nb;
    float* s = q8_1 ? sc.s.data() + i * nb : nullptr;
    __m256i* off = offset != 0 ? reinterpret_cast<__m256i*>(sc.off.data() + 8 * i * nb) : nullptr;
    if (q8_1) {
      const auto* a = reinterpret_cast<const BlockQ8_1*>(blocks);
      for (int64_t b = 0; b < nb; ++b) {
        d[b] = H2F(a[b].d);
        s[b] = H2F(a[b].s);
      }
    } else {
      const auto* a = reinterpret_cast<const BlockQ8_0*>(blocks);
      for (int64_t b = 0; b < nb; ++b) {
        d[b] = H2F(a[b].d);
        if (off != nullptr) {
          const __m256i sums = quant_internal::LaneSums(Load256(a[b].qs));
          _mm256_storeu_si256(
              off + b, _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sums, shift)));
        }
      }
    }
    sc.acts[i] = Act32{blocks, d, s, off};
  }
  return sc.acts.data();
}

void GemvRows32(DType wt, const char* w, size_t row_bytes, int64_t nb, const Act32* acts, int64_t m,
                const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  if (Paths::Active().load(std::memory_order_relaxed) == QuantDotPath::kAvx512Vnni) {
    quant_internal::GemvRows32Vnni(wt, w, row_bytes, nb, acts, m, bias, y, ldy, r0, r1);
  } else {
    quant_internal::GemvRows32ByType<quant_internal::Avx2Dots>(wt, w, row_bytes, nb, acts, m, bias,
                                                               y, ldy, r0, r1);
  }
}

// Q4_0 / Q8_0 in the kR8 layout: per input row, the Q8_0 scales as f32 and
// the offset term (-8 or -128) * sum(q) per block.
struct ActR8Scratch {
  std::vector<float> d;
  std::vector<int32_t> off;
  std::vector<quant_internal::ActR8> acts;
};

// Q4_0 and Q8_0 (`q8`) in the kR8 layout: the offset term is -8 or -128
// times sum(q).
void GemvR8(bool q8, const char* w, int64_t k, const char* act, size_t act_row_bytes, int64_t m,
            const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  const int32_t offset = q8 ? -128 : -8;
  thread_local ActR8Scratch sc;
  const int64_t nb = k / 32;
  const size_t total = static_cast<size_t>(m * nb);
  if (sc.d.size() < total) sc.d.resize(total);
  if (sc.off.size() < total) sc.off.resize(total);
  if (sc.acts.size() < static_cast<size_t>(m)) sc.acts.resize(m);
  for (int64_t i = 0; i < m; ++i) {
    const auto* a = reinterpret_cast<const BlockQ8_0*>(act + i * act_row_bytes);
    float* d = sc.d.data() + i * nb;
    int32_t* off = sc.off.data() + i * nb;
    for (int64_t b = 0; b < nb; ++b) {
      d[b] = H2F(a[b].d);
      const __m256i s = quant_internal::LaneSums(Load256(a[b].qs));
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
      off[b] = offset * _mm_cvtsi128_si32(s4);
    }
    sc.acts[i] = quant_internal::ActR8{a, d, off};
  }
  const bool vnni = Paths::Active().load(std::memory_order_relaxed) == QuantDotPath::kAvx512Vnni;
  const quant_internal::ActR8* acts = sc.acts.data();
  if (q8 && vnni) {
    quant_internal::GemvRowsQ8_0R8Vnni(w, nb, acts, m, bias, y, ldy, r0, r1);
  } else if (q8) {
    quant_internal::GemvRowsR8<quant_internal::Avx2Q8R8>(w, nb, acts, m, bias, y, ldy, r0, r1);
  } else if (vnni) {
    quant_internal::GemvRowsQ4_0R8Vnni(w, nb, acts, m, bias, y, ldy, r0, r1);
  } else {
    quant_internal::GemvRowsR8<quant_internal::Avx2R8>(w, nb, acts, m, bias, y, ldy, r0, r1);
  }
}

template <typename DotFn>
void GemvLoop(DotFn dot, const char* w, size_t row_bytes, int64_t k, const char* act,
              size_t act_row_bytes, int64_t m, const float* bias, float* y, int64_t ldy, int64_t r0,
              int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const char* wr = w + r * row_bytes;
    const float b = bias ? bias[r] : 0.f;
    for (int64_t i = 0; i < m; ++i) y[i * ldy + r] = dot(wr, act + i * act_row_bytes, k) + b;
  }
}

}  // namespace

bool IsValidWeightLayout(DType wt, WeightLayout layout, int64_t rows, int64_t k) {
  if (layout == WeightLayout::kRowMajor) return true;
  return (wt == DType::kQ4_0 || wt == DType::kQ8_0) && rows % quant_internal::kR8Rows == 0 &&
         k % 32 == 0;
}

// Q8_1 and Q8_K only ever hold activations (the right-hand side of the dots).
bool IsQuantizedWeightDType(DType w) {
  return IsBlockQuantized(w) && w != DType::kQ8_1 && w != DType::kQ8_K;
}

DType QuantDotActivationType(DType w) {
  switch (w) {
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ8_0:
      return DType::kQ8_0;
    case DType::kQ4_1:
    case DType::kQ5_1:
      return DType::kQ8_1;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return DType::kQ8_K;
    default:
      return DType::kF32;
  }
}

size_t ActivationRowBytes(DType act, int64_t n) { return DTypeBytes(act, n); }

void QuantizeActivationRow(DType act, const float* x, void* dst, int64_t n) {
  switch (act) {
    case DType::kQ8_0:
      return QuantizeQ8_0(x, static_cast<BlockQ8_0*>(dst), n / 32);
    case DType::kQ8_1:
      return QuantizeQ8_1(x, static_cast<BlockQ8_1*>(dst), n / 32);
    case DType::kQ8_K:
      return QuantizeQ8_K(x, static_cast<BlockQ8_K*>(dst), n / kQK_K);
    default:
      std::memcpy(dst, x, n * sizeof(float));
  }
}

QuantDotPath DefaultQuantDotPath() { return Paths::Default(); }

bool QuantDotPathSupported(QuantDotPath path) { return Paths::Supported(path); }

QuantDotPath ActiveQuantDotPath() { return Paths::Active().load(); }

bool SetQuantDotPath(QuantDotPath path) { return Paths::Set(path); }

const char* QuantDotPathName(QuantDotPath path) {
  return path == QuantDotPath::kAvx512Vnni ? "avx512vnni" : "avx2";
}

float QuantDot(DType wt, const void* w, const void* a, int64_t n) {
  if (Is32BlockType(wt)) {
    thread_local Act32Scratch scratch;
    const Act32* acts = PrepareAct32(wt, static_cast<const char*>(a), 0, 1, n / 32, scratch);
    float y;
    GemvRows32(wt, static_cast<const char*>(w), DTypeBytes(wt, n), n / 32, acts, 1, nullptr, &y, 1,
               0, 1);
    return y;
  }
  switch (wt) {
    case DType::kQ4_K:
      return DotQ45K<false>(w, a, n);
    case DType::kQ5_K:
      return DotQ45K<true>(w, a, n);
    case DType::kQ6_K:
      return DotQ6K(w, a, n);
    default:
      return DotGeneric(wt, w, a, n);
  }
}

void QuantizeActivationRowReference(DType act, const float* x, void* dst, int64_t n) {
  QuantizeRowReference(act, x, dst, n);
}

float QuantDotReference(DType wt, const void* w, const void* a, int64_t n) {
  return DotReference(wt, w, a, n);
}

void QuantGemvRows(DType wt, WeightLayout layout, const void* w, int64_t k, const void* act,
                   size_t act_row_bytes, int64_t m, const float* bias, float* y, int64_t ldy,
                   int64_t r0, int64_t r1) {
  const char* wc = static_cast<const char*>(w);
  const char* ac = static_cast<const char*>(act);
  if (layout == WeightLayout::kR8)
    return GemvR8(wt == DType::kQ8_0, wc, k, ac, act_row_bytes, m, bias, y, ldy, r0, r1);
  const size_t rb = DTypeBytes(wt, k);
  if (Is32BlockType(wt)) {
    thread_local Act32Scratch scratch;
    const Act32* acts = PrepareAct32(wt, ac, act_row_bytes, m, k / 32, scratch);
    return GemvRows32(wt, wc, rb, k / 32, acts, m, bias, y, ldy, r0, r1);
  }
  auto run = [&](auto dot) {
    GemvLoop(dot, wc, rb, k, ac, act_row_bytes, m, bias, y, ldy, r0, r1);
  };
  switch (wt) {
    case DType::kQ4_K:
      return run(DotQ45K<false>);
    case DType::kQ5_K:
      return run(DotQ45K<true>);
    case DType::kQ6_K:
      return run(DotQ6K);
    default:
      return run(
          [wt](const void* wr, const void* a, int64_t n) { return DotGeneric(wt, wr, a, n); });
  }
}

void DequantizeRows(DType wt, WeightLayout layout, const void* w, int64_t k, int64_t r0,
                    int64_t rows, float* dst) {
  if (layout == WeightLayout::kR8) {
    return wt == DType::kQ8_0 ? DequantizeRowsQ8_0R8(w, k, r0, rows, dst)
                              : DequantizeRowsQ4_0R8(w, k, r0, rows, dst);
  }
  const char* src = static_cast<const char*>(w) + r0 * DTypeBytes(wt, k);
  ggml::DequantizeRow(wt, src, dst, rows * k);
}

}  // namespace retort::cpu
