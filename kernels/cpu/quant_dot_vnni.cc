// The 32-block GEMV kernels (quant_dot_kernels.h) built with AVX-512
// VL/BW/VNNI: vpdpbusd does u8 x s8 -> int32 in one instruction where AVX2
// needs maddubs + madd (+ add). This file alone is compiled with those flags
// (kernels/cpu/CMakeLists.txt); quant_matmul.cc calls it only on CPUs that
// report them. Keep it free of anything that could be shared with other
// translation units (no std containers or algorithms).
#include <immintrin.h>

#include "kernels/cpu/quant_dot_kernels.h"

#if !defined(__AVX512VNNI__) || !defined(__AVX512VL__) || !defined(__AVX512BW__)
#error "quant_dot_vnni.cc needs -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif

namespace retort::cpu::quant_internal {
namespace {

// Lanes as Avx2Dots::Dot gives them, from one vpdpbusd whose accumulator
// starts at the offset term (zero for Q4_1/Q5_1).
struct VnniDots {
  static constexpr int kRows = 4;
  template <typename Kind>
  static __m256i Dot(const typename Kind::Block& w, const int8_t* aq, const __m256i* off) {
    const __m256i base = Kind::kOffset == 0 ? _mm256_setzero_si256() : _mm256_loadu_si256(off);
    return _mm256_dpbusd_epi32(base, Kind::Unsigned(w), Load256(aq));
  }
};

// Avx2R8::Dot with vpdpbusd, in two chains. The high nibbles go in unshifted
// (16 * nibble, at most 240, fine for an unsigned byte): their chain sums to
// exactly 16 times theirs (|sum| <= 16 * 16 * 15 * 127, far inside int32),
// and one arithmetic shift recovers it, saving a shift per chunk.
struct VnniR8 {
  static constexpr int kBlockBytes = kR8BlockBytes;
  static __m256i Dot(const uint8_t* qs, const int8_t* a, int32_t off) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), high4 = _mm256_set1_epi8(static_cast<char>(0xf0));
    __m256i s_lo = _mm256_set1_epi32(off), s_hi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      const __m256i q = Load256(qs + 32 * t);
      s_lo = _mm256_dpbusd_epi32(s_lo, _mm256_and_si256(q, low4), Bcast4(a + 4 * t));
      s_hi = _mm256_dpbusd_epi32(s_hi, _mm256_and_si256(q, high4), Bcast4(a + 16 + 4 * t));
    }
    return _mm256_add_epi32(s_lo, _mm256_srai_epi32(s_hi, 4));
  }
};

// Avx2Q8R8::Dot with vpdpbusd on the stored unsigned bytes w + 128, the
// accumulator starting at off = -128 * sum(a); two chains.
struct VnniQ8R8 {
  static constexpr int kBlockBytes = kQ8R8BlockBytes;
  static __m256i Dot(const uint8_t* qs, const int8_t* a, int32_t off) {
    __m256i s0 = _mm256_set1_epi32(off), s1 = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int t = 0; t < 8; t += 2) {
      s0 = _mm256_dpbusd_epi32(s0, Load256(qs + 32 * t), Bcast4(a + 4 * t));
      s1 = _mm256_dpbusd_epi32(s1, Load256(qs + 32 * t + 32), Bcast4(a + 4 * t + 4));
    }
    return _mm256_add_epi32(s0, s1);
  }
};

}  // namespace

void GemvRowsQ4_0R8Vnni(const char* w, int64_t nb, const ActR8* acts, int64_t m, const float* bias,
                        float* y, int64_t ldy, int64_t r0, int64_t r1) {
  GemvRowsR8<VnniR8>(w, nb, acts, m, bias, y, ldy, r0, r1);
}

void GemvRowsQ8_0R8Vnni(const char* w, int64_t nb, const ActR8* acts, int64_t m, const float* bias,
                        float* y, int64_t ldy, int64_t r0, int64_t r1) {
  GemvRowsR8<VnniQ8R8>(w, nb, acts, m, bias, y, ldy, r0, r1);
}

void GemvRows32Vnni(DType wt, const char* w, size_t row_bytes, int64_t nb, const Act32* acts,
                    int64_t m, const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  GemvRows32ByType<VnniDots>(wt, w, row_bytes, nb, acts, m, bias, y, ldy, r0, r1);
}

}  // namespace retort::cpu::quant_internal
