// ggml's block-quantized layouts, byte for byte (GGUF tensor data).
//
// A row of a block-quantized tensor is a sequence of blocks; each block
// holds BlockElems consecutive elements of the row. Sizes are asserted at
// compile time against the table in core/dtype.cc, the figures of ggml's
// ggml-common.h, and the GGUF facts in shared/REFERENCES.md.
// Scales are IEEE f16 bit patterns (uint16_t); use F16ToF32.
#ifndef RETORT_CORE_GGML_BLOCKS_H_
#define RETORT_CORE_GGML_BLOCKS_H_

#include <cstdint>
#include <tuple>

#include "core/dtype.h"

namespace retort::ggml {

inline constexpr int kQK4_0 = 32, kQK4_1 = 32, kQK5_0 = 32, kQK5_1 = 32, kQK8_0 = 32, kQK8_1 = 32;
inline constexpr int kQK_K = 256;       // super-block of the k-quants
inline constexpr int kKScaleSize = 12;  // packed 6-bit scales/mins of Q4_K/Q5_K

// x = d * (q - 8), q in [0, 15]; element j in the low nibble of qs[j], j+16 in the high nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];
};
// x = d * q + m.
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQK4_1 / 2];
};
// 5-bit: low 4 bits as Q4_0, bit 4 of element j is bit j of qh (little-endian u32).
// x = d * (q - 16).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK5_0 / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};
// x = d * q.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};
// s = d * sum(qs) (used for activations against Q4_1/Q5_1 weights).
struct BlockQ8_1 {
  uint16_t d, s;
  int8_t qs[kQK8_1];
};
// 16 sub-blocks of 16: scales[i] = scale (low 4 bits) | min (high 4 bits).
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d, dmin;
};
// 3-bit: low 2 bits in qs, high bit in hmask; 16 6-bit scales packed in 12 bytes.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
// 8 sub-blocks of 32 with 6-bit scales and mins packed in `scales`.
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// 6-bit: low 4 bits in ql, high 2 in qh; 16 int8 scales of sub-blocks of 16.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
// Intermediate type for activations (dot products with k-quants).
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block, from
// its 12 packed bytes: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4
// in the nibbles of byte j + 4 with the top 2 bits of bytes j - 4 and j.
void UnpackKScaleMin(const uint8_t* scales, int j, uint8_t* sc, uint8_t* m);

// Dequantizes n elements (a multiple of the block size) of block type `type`
// starting at `src` into dst. Bit-exact with gguf-py's dequantize (same f32
// operations in the same order: (d * sc) * q - (dmin * m) for the k-quants,
// d * q + m for Q4_1/Q5_1); gguf-py has no Q8_1/Q8_K decoder, those are
// d * q as in ggml. Built with -ffp-contract=off so no FMA changes rounding.
void DequantizeRow(DType type, const void* src, float* dst, int64_t n);

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// Each ggml block type with the struct that stores it, for code that treats
// every type alike (an encoder or decoder per struct, picked by overload).
template <DType kType, typename B>
struct BlockTypeOf {
  static constexpr DType type = kType;
  using Block = B;
};
using BlockTypes =
    std::tuple<BlockTypeOf<DType::kQ4_0, BlockQ4_0>, BlockTypeOf<DType::kQ4_1, BlockQ4_1>,
               BlockTypeOf<DType::kQ5_0, BlockQ5_0>, BlockTypeOf<DType::kQ5_1, BlockQ5_1>,
               BlockTypeOf<DType::kQ8_0, BlockQ8_0>, BlockTypeOf<DType::kQ8_1, BlockQ8_1>,
               BlockTypeOf<DType::kQ2_K, BlockQ2_K>, BlockTypeOf<DType::kQ3_K, BlockQ3_K>,
               BlockTypeOf<DType::kQ4_K, BlockQ4_K>, BlockTypeOf<DType::kQ5_K, BlockQ5_K>,
               BlockTypeOf<DType::kQ6_K, BlockQ6_K>, BlockTypeOf<DType::kQ8_K, BlockQ8_K>>;

// Calls fn(static_cast<Block*>(nullptr)) with the struct of block type
// `type`. Returns false, without calling fn, for a dtype that is no ggml
// block type.
template <typename Fn>
bool VisitBlockType(DType type, Fn&& fn) {
  return std::apply(
      [&](auto... entry) {
        return ((entry.type == type &&
                 (fn(static_cast<typename decltype(entry)::Block*>(nullptr)), true)) ||
                ...);
      },
      BlockTypes{});
}

}  // namespace retort::ggml

namespace retort {
// What ConvertToF32 calls for block types.
inline void DequantizeBlocksToF32(DType type, const void* src, float* dst, int64_t n) {
  ggml::DequantizeRow(type, src, dst, n);
}
}  // namespace retort

#endif  // RETORT_CORE_GGML_BLOCKS_H_
