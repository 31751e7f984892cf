// Integer-dot GEMV kernels for the 32-element ggml blocks (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0), written once and compiled twice (internal header):
//   quant_matmul.cc   with the build's flags (AVX2: maddubs + madd), and
//   quant_dot_vnni.cc with AVX-512 VL/BW/VNNI added (vpdpbusd), chosen at run
//                     time when the CPU has it (quant_matmul.h, QuantDotPath).
// Everything with code is in an unnamed namespace, so each translation unit
// keeps its own copy built with its own flags and the linker never swaps an
// AVX-512 body into the AVX2 build.
//
// Both instruction sets produce the same eight int32 lanes per block (lane j
// = the sum of w*a over bytes 4j..4j+3 of the block's 32 unpacked weights:
// maddubs + madd and vpdpbusd group the bytes the same way, and every sum is
// exact), and the f32 work after that is the same code, so the two paths give
// the same bits.
//
// Weights are fed to the byte multiply as unsigned values u = w + offset
// (offset 8 for Q4_0, 16 for Q5_0, 128 for Q8_0, 0 for Q4_1/Q5_1); the
// offset's share, -offset * (sum of the 4 activations of each lane), is
// computed once per activation row (Act32::off) and starts the accumulator.
// AVX2 keeps sign tricks for Q8_0, whose unsigned form could saturate maddubs.
#ifndef RETORT_KERNELS_CPU_QUANT_DOT_KERNELS_H_
#define RETORT_KERNELS_CPU_QUANT_DOT_KERNELS_H_

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"
#include "core/ggml_blocks.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu::quant_internal {

// One input row quantized to Q8_0 / Q8_1, with what every weight row's dot
// against it needs, computed once: the block scales as f32 and the lane sums
// of the offset term.
struct Act32 {
  const void* blocks;  // BlockQ8_0 or BlockQ8_1, nb of them
  const float* d;      // d of each block, as f32
  const float* s;      // Q8_1: s of each block, as f32; else null
  const __m256i* off;  // -offset * lane sums of each block; null if offset 0
};

// One input row quantized to Q8_0, for the 8-row interleaved Q4_0 layout
// (WeightLayout::kR8, quant_repack.h): per block, d as f32 and -8 * sum(q) (the
// offset term, the same for every weight row).
struct ActR8 {
  const ggml::BlockQ8_0* blocks;
  const float* d;
  const int32_t* off;
};

// The VNNI build of GemvRowsQ4_0R8 (quant_dot_vnni.cc).
void GemvRowsQ4_0R8Vnni(const char* w, int64_t nb, const ActR8* acts, int64_t m, const float* bias,
                        float* y, int64_t ldy, int64_t r0, int64_t r1);
// The same for Q8_0 in the kR8 layout; there ActR8::off is -128 * sum(q).
void GemvRowsQ8_0R8Vnni(const char* w, int64_t nb, const ActR8* acts, int64_t m, const float* bias,
                        float* y, int64_t ldy, int64_t r0, int64_t r1);

// The VNNI build of GemvRows32 (quant_dot_vnni.cc). REQUIRES: the CPU has
// AVX-512 F/BW/VL/VNNI; wt one of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
void GemvRows32Vnni(DType wt, const char* w, size_t row_bytes, int64_t nb, const Act32* acts,
                    int64_t m, const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1);

namespace {

inline float H2F(uint16_t h) { return _cvtsh_ss(h); }

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high.
inline __m256i UnpackNibbles16(const uint8_t* qs) {
  // Both lanes get the 16 bytes (a load, no shuffle); the high lane keeps the
  // bytes shifted right by 4.
  const __m256i v =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i both = _mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xf0);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// Byte j = 0xff where bit j of `bits` is set, else 0.
inline __m256i BitsToBytes(uint32_t bits) {
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), spread);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

inline __m256i SumPairs16(__m256i p16) { return _mm256_madd_epi16(p16, _mm256_set1_epi16(1)); }

// Int32 lanes: the sums of each 4 consecutive int8 of `a`.
inline __m256i LaneSums(__m256i a) {
  return SumPairs16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), a));
}

// The weight kinds: block layout, activation type, offset, and the 32
// weights as unsigned bytes u = w + kOffset.
//
// Q4_0 / Q4_1 / Q5_0 / Q5_1: nibbles in qs, and for the 5-bit types (the
// blocks with a qh) the fifth bit of each weight in qh. The _0 types are
// symmetric (offset 2^(bits-1), dotted with Q8_0), the _1 types carry a min
// (offset 0, dotted with Q8_1 for its sum term).
template <typename B, typename A, int kOff>
struct NibbleKind {
  using Block = B;
  using ABlock = A;
  static constexpr int kOffset = kOff;
  static __m256i Unsigned(const Block& b) {
    if constexpr (requires { b.qh; }) {
      return _mm256_or_si256(UnpackNibbles16(b.qs),
                             _mm256_and_si256(BitsToBytes(Load32(b.qh)), _mm256_set1_epi8(0x10)));
    } else {
      return UnpackNibbles16(b.qs);
    }
  }
};
using KindQ4_0 = NibbleKind<ggml::BlockQ4_0, ggml::BlockQ8_0, 8>;
using KindQ5_0 = NibbleKind<ggml::BlockQ5_0, ggml::BlockQ8_0, 16>;
using KindQ4_1 = NibbleKind<ggml::BlockQ4_1, ggml::BlockQ8_1, 0>;
using KindQ5_1 = NibbleKind<ggml::BlockQ5_1, ggml::BlockQ8_1, 0>;

struct KindQ8_0 {
  using Block = ggml::BlockQ8_0;
  using ABlock = ggml::BlockQ8_0;
  static constexpr int kOffset = 128;
  static __m256i Signed(const Block& b) { return Load256(b.qs); }
  static __m256i Unsigned(const Block& b) {
    return _mm256_xor_si256(Load256(b.qs), _mm256_set1_epi8(static_cast<char>(0x80)));
  }
};

template <typename Kind>
constexpr bool kAsym = std::is_same_v<typename Kind::ABlock, ggml::BlockQ8_1>;

// AVX2 integer dots: maddubs (u8 x s8 -> int16 pairs) then madd with ones.
// Pair sums stay within int16: 2 * 31 * 127 for the 4- and 5-bit kinds; Q8_0
// goes in as |w| with a's sign flipped where w < 0 (2 * 128 * 127 at most;
// activations are in [-127, 127]).
struct Avx2Dots {
  static constexpr int kRows = 4;
  template <typename Kind>
  static __m256i Dot(const typename Kind::Block& w, const int8_t* aq, const __m256i* off) {
    const __m256i a = Load256(aq);
    if constexpr (std::is_same_v<Kind, KindQ8_0>) {
      const __m256i s = Kind::Signed(w);
      return SumPairs16(_mm256_maddubs_epi16(_mm256_sign_epi8(s, s), _mm256_sign_epi8(a, s)));
    } else if constexpr (Kind::kOffset == 0) {
      return SumPairs16(_mm256_maddubs_epi16(Kind::Unsigned(w), a));
    } else {
      return _mm256_add_epi32(SumPairs16(_mm256_maddubs_epi16(Kind::Unsigned(w), a)),
                              _mm256_loadu_si256(off));
    }
  }
};

// f32 dots of R consecutive weight rows (stride row_bytes) with one
// activation row. Per row: even blocks accumulate into acc0, odd into acc1
// (a lone last block into acc0), each block as fma(d_w * d_a, lanes, acc);
// Q4_1/Q5_1 add m_w * s_a block by block in order. The R rows run
// interleaved only to overlap their dependency chains.
template <typename Isa, typename Kind, int R>
inline void DotRows32(const char* w, size_t row_bytes, const Act32& act, int64_t nb, float* out) {
  using Block = typename Kind::Block;
  using ABlock = typename Kind::ABlock;
  const ABlock* a = static_cast<const ABlock*>(act.blocks);
  const Block* wr[R];
  __m256 acc0[R], acc1[R];
  float summ[R];
  for (int r = 0; r < R; ++r) {
    wr[r] = reinterpret_cast<const Block*>(w + r * row_bytes);
    acc0[r] = _mm256_setzero_ps();
    acc1[r] = _mm256_setzero_ps();
    summ[r] = 0.f;
  }
  auto step = [&](int r, int64_t b, __m256& acc) {
    const __m256i p = Isa::template Dot<Kind>(wr[r][b], a[b].qs, act.off + b);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(H2F(wr[r][b].d) * act.d[b]), _mm256_cvtepi32_ps(p), acc);
    if constexpr (kAsym<Kind>) summ[r] += H2F(wr[r][b].m) * act.s[b];
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      step(r, b, acc0[r]);
      step(r, b + 1, acc1[r]);
    }
  }
  if (b < nb) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) step(r, b, acc0[r]);
  }
  for (int r = 0; r < R; ++r) {
    out[r] = simd::HorizontalSum(_mm256_add_ps(acc0[r], acc1[r]));
    if constexpr (kAsym<Kind>) out[r] += summ[r];
  }
}

// y[i * ldy + r] = dot(weight row r, input i) (+ bias[r]) for r in [r0, r1).
template <typename Isa, typename Kind>
void GemvRows32(const char* w, size_t row_bytes, int64_t nb, const Act32* acts, int64_t m,
                const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int R = Isa::kRows;
  int64_t r = r0;
  for (; r + R <= r1; r += R) {
    for (int64_t i = 0; i < m; ++i) {
      float out[R];
      DotRows32<Isa, Kind, R>(w + r * row_bytes, row_bytes, acts[i], nb, out);
      for (int j = 0; j < R; ++j) y[i * ldy + r + j] = out[j] + (bias ? bias[r + j] : 0.f);
    }
  }
  for (; r < r1; ++r) {
    for (int64_t i = 0; i < m; ++i) {
      float out;
      DotRows32<Isa, Kind, 1>(w + r * row_bytes, row_bytes, acts[i], nb, &out);
      y[i * ldy + r] = out + (bias ? bias[r] : 0.f);
    }
  }
}

template <typename Isa>
void GemvRows32ByType(DType wt, const char* w, size_t row_bytes, int64_t nb, const Act32* acts,
                      int64_t m, const float* bias, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  switch (wt) {
    case DType::kQ4_0:
      return GemvRows32<Isa, KindQ4_0>(w, row_bytes, nb, acts, m, bias, y, ldy, r0, r1);
    case DType::kQ5_0:
      return GemvRows32<Isa, KindQ5_0>(w, row_bytes, nb, acts, m, bias, y, ldy, r0, r1);
    case DType::kQ8_0:
      return GemvRows32<Isa, KindQ8_0>(w, row_bytes, nb, acts, m, bias, y, ldy, r0, r1);
    case DType::kQ4_1:
      return GemvRows32<Isa, KindQ4_1>(w, row_bytes, nb, acts, m, bias, y, ldy, r0, r1);
    case DType::kQ5_1:
      return GemvRows32<Isa, KindQ5_1>(w, row_bytes, nb, acts, m, bias, y, ldy, r0, r1);
    default:
      return;
  }
}

// ---------------------------------------------------------------------------
// Q4_0, kR8 layout: 8 weight rows interleaved. A group of 8 rows is nb blocks of 144
// bytes: the 8 rows' f16 scales (16 bytes), then 4 chunks of 32 bytes; chunk
// t holds, for row r = 0..7, bytes 4t..4t+3 of that row's Q4_0 nibbles (low
// nibbles: elements 4t..4t+3, high nibbles: elements 16+4t..16+4t+3). So one
// broadcast of 4 activation bytes against a chunk's nibbles gives each row's
// partial sum in its own int32 lane, and the f32 work of a block (scales,
// convert, FMA) is one vector op for all 8 rows.
inline constexpr int kR8Rows = 8;
inline constexpr int kR8BlockBytes = 16 + 128;

inline __m256i Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Int32 lane r = sum over the block of (nibble - 8) * a for row r, given
// off = -8 * sum(a). AVX2: the 8 byte products pair-summed to int16 (each
// |pair| <= 2 * 15 * 127, all 8 summed <= 30480, within int16), one madd.
struct Avx2R8 {
  static constexpr int kBlockBytes = kR8BlockBytes;
  static __m256i Dot(const uint8_t* qs, const int8_t* a, int32_t off) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i s16[2];
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      const __m256i q = Load256(qs + 32 * t);
      const __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(q, low4), Bcast4(a + 4 * t));
      const __m256i hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4),
                                              Bcast4(a + 16 + 4 * t));
      const __m256i p = _mm256_add_epi16(lo, hi);
      s16[t & 1] = t < 2 ? p : _mm256_add_epi16(s16[t & 1], p);
    }
    return _mm256_add_epi32(SumPairs16(_mm256_add_epi16(s16[0], s16[1])), _mm256_set1_epi32(off));
  }
};

// Q8_0, kR8 layout: as Q4_0's but each block is the 8 f16 scales (16 bytes) then 8
// chunks of 32 bytes; chunk t holds, for row r = 0..7, bytes 4t..4t+3 of
// that row's Q8_0 qs, each stored as the unsigned byte w + 128 (so vpdpbusd
// takes it directly; the -128 * sum(a) correction is ActR8::off).
inline constexpr int kQ8R8BlockBytes = 16 + 256;

// Int32 lane r = sum over the block of w * a for row r. AVX2: maddubs would
// saturate on (w + 128) * a, so the signed weight w = u ^ 0x80 goes in as
// |w| with a's sign flipped where w < 0 (pairs <= 2 * 128 * 127, in int16),
// each chunk widened to int32 with one madd. `off` is unused: the result is
// already exact.
struct Avx2Q8R8 {
  static constexpr int kBlockBytes = kQ8R8BlockBytes;
  static __m256i Dot(const uint8_t* qs, const int8_t* a, int32_t /*off*/) {
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256i s[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
    for (int t = 0; t < 8; ++t) {
      const __m256i w = _mm256_xor_si256(Load256(qs + 32 * t), flip);
      const __m256i p =
          _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(Bcast4(a + 4 * t), w));
      s[t & 1] = _mm256_add_epi32(s[t & 1], SumPairs16(p));
    }
    return _mm256_add_epi32(s[0], s[1]);
  }
};

// y[i * ldy + r] for rows r in [r0, r1): whole groups of 8 computed, only
// the rows in range written (so any split of the rows gives the same bits).
// Isa gives the block size (Q4_0's or Q8_0's kR8 layout) and the integer dot.
template <typename Isa>
void GemvRowsR8(const char* w, int64_t nb, const ActR8* acts, int64_t m, const float* bias,
                float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int kBlockBytes = Isa::kBlockBytes;
  const size_t group_bytes = static_cast<size_t>(nb) * kBlockBytes;
  for (int64_t g = r0 / kR8Rows; g * kR8Rows < r1; ++g) {
    const uint8_t* wg = reinterpret_cast<const uint8_t*>(w) + g * group_bytes;
    const int64_t base = g * kR8Rows;
    const int64_t lo = r0 > base ? r0 - base : 0;
    const int64_t hi = r1 - base < kR8Rows ? r1 - base : kR8Rows;
    for (int64_t i = 0; i < m; ++i) {
      const ActR8& act = acts[i];
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
      auto step = [&](int64_t b, __m256& acc) {
        const uint8_t* blk = wg + b * kBlockBytes;
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
        const __m256i p = Isa::Dot(blk + 16, act.blocks[b].qs, act.off[b]);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(act.d[b])), _mm256_cvtepi32_ps(p),
                              acc);
      };
      int64_t b = 0;
      for (; b + 2 <= nb; b += 2) {
        step(b, acc0);
        step(b + 1, acc1);
      }
      if (b < nb) step(b, acc0);
      alignas(32) float out[kR8Rows];
      _mm256_store_ps(out, _mm256_add_ps(acc0, acc1));
      for (int64_t r = lo; r < hi; ++r)
        y[i * ldy + base + r] = out[r] + (bias ? bias[base + r] : 0.f);
    }
  }
}

}  // namespace
}  // namespace retort::cpu::quant_internal

#endif  // RETORT_KERNELS_CPU_QUANT_DOT_KERNELS_H_
