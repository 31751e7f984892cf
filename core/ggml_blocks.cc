#include "core/ggml_blocks.h"

#include <cstring>
#include <type_traits>

#include "core/convert.h"

namespace retort::ggml {
namespace {

void DequantizeBlocks(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK4_0) {
    const float d = F16ToF32(b[i].d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[j] = ((b[i].qs[j] & 0x0f) - 8) * d;
      y[j + kQK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantizeBlocks(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK4_1) {
    const float d = F16ToF32(b[i].d), m = F16ToF32(b[i].m);
    for (int j = 0; j < kQK4_1 / 2; ++j) {
      y[j] = (b[i].qs[j] & 0x0f) * d + m;
      y[j + kQK4_1 / 2] = (b[i].qs[j] >> 4) * d + m;
    }
  }
}

template <typename Block>
uint32_t HighBits(const Block& b) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  return qh;
}

void DequantizeBlocks(const BlockQ5_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK5_0) {
    const float d = F16ToF32(b[i].d);
    const uint32_t qh = HighBits(b[i]);
    for (int j = 0; j < kQK5_0 / 2; ++j) {
      const int lo = (b[i].qs[j] & 0x0f) | (((qh >> j) & 1) << 4);
      const int hi = (b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      y[j] = (lo - 16) * d;
      y[j + kQK5_0 / 2] = (hi - 16) * d;
    }
  }
}

void DequantizeBlocks(const BlockQ5_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK5_1) {
    const float d = F16ToF32(b[i].d), m = F16ToF32(b[i].m);
    const uint32_t qh = HighBits(b[i]);
    for (int j = 0; j < kQK5_1 / 2; ++j) {
      const int lo = (b[i].qs[j] & 0x0f) | (((qh >> j) & 1) << 4);
      const int hi = (b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      y[j] = lo * d + m;
      y[j + kQK5_1 / 2] = hi * d + m;
    }
  }
}

void DequantizeBlocks(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK8_0) {
    const float d = F16ToF32(b[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[j] = b[i].qs[j] * d;
  }
}

void DequantizeBlocks(const BlockQ8_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK8_1) {
    const float d = F16ToF32(b[i].d);
    for (int j = 0; j < kQK8_1; ++j) y[j] = b[i].qs[j] * d;
  }
}

// Q2_K: element 128*h + 32*s + l is bits 2s..2s+1 of qs[32*h + l]; sub-block
// e/16 has scale d * (scales & 15) and min dmin * (scales >> 4).
void DequantizeBlocks(const BlockQ2_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
    const float d = F16ToF32(b[i].d), dmin = F16ToF32(b[i].dmin);
    for (int sb = 0; sb < kQK_K / 16; ++sb) {
      const float dl = d * static_cast<float>(b[i].scales[sb] & 0xf);
      const float ml = dmin * static_cast<float>(b[i].scales[sb] >> 4);
      for (int k = 0; k < 16; ++k) {
        const int e = sb * 16 + k, h = e / 128, s = (e % 128) / 32, l = e % 32;
        const int q = (b[i].qs[32 * h + l] >> (2 * s)) & 3;
        y[e] = dl * static_cast<float>(q) - ml;
      }
    }
  }
}

// The 16 6-bit scales of Q3_K: low 4 bits of scale k are nibble k/8 of
// scales[k % 8], high 2 bits are bits 2*(k/4).. of scales[8 + k % 4].
int Q3KScale(const uint8_t* s, int k) {
  const int lo = (s[k % 8] >> (4 * (k / 8))) & 0xf;
  const int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

// Q3_K: low 2 bits as Q2_K; bit s of hmask[l] is the high bit of element
// 32*s + l, and a clear bit subtracts 4.
void DequantizeBlocks(const BlockQ3_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
    const float d = F16ToF32(b[i].d);
    for (int sb = 0; sb < kQK_K / 16; ++sb) {
      const float dl = d * static_cast<float>(Q3KScale(b[i].scales, sb));
      for (int k = 0; k < 16; ++k) {
        const int e = sb * 16 + k, h = e / 128, s = (e % 128) / 32, l = e % 32;
        const int lo = (b[i].qs[32 * h + l] >> (2 * s)) & 3;
        const int high_clear = ((b[i].hmask[l] >> (e / 32)) & 1) ^ 1;
        y[e] = dl * static_cast<float>(lo - 4 * high_clear);
      }
    }
  }
}

}  // namespace

void UnpackKScaleMin(const uint8_t* scales, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4);
    *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

namespace {

// Q4_K: sub-block 2c + s (32 elements) is nibble s of qs[32c .. 32c + 31].
// Q5_K: the same, plus bit sb of qh[l] as bit 4 of element 32*sb + l.
template <typename Block>
requires std::is_same_v<Block, BlockQ4_K> || std::is_same_v<Block, BlockQ5_K>
void DequantizeBlocks(const Block* b, float* y, int64_t nb) {
  constexpr bool kHighBit = std::is_same_v<Block, BlockQ5_K>;
  for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
    const float d = F16ToF32(b[i].d), dmin = F16ToF32(b[i].dmin);
    for (int sb = 0; sb < 8; ++sb) {
      uint8_t sc, m;
      UnpackKScaleMin(b[i].scales, sb, &sc, &m);
      const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
      const uint8_t* q = b[i].qs + 32 * (sb / 2);
      const int shift = 4 * (sb % 2);
      for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> shift) & 0xf;
        if constexpr (kHighBit) v |= ((b[i].qh[l] >> sb) & 1) << 4;
        y[32 * sb + l] = dl * static_cast<float>(v) - ml;
      }
    }
  }
}

// Q6_K: in each half h of 128, element r takes its low 4 bits from nibble
// r/64 of ql[64h + r%64] and its high 2 bits from bits 2*(r/32) of
// qh[32h + r%32]; value q - 32 times d * scales[e/16].
void DequantizeBlocks(const BlockQ6_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
    const float d = F16ToF32(b[i].d);
    for (int sb = 0; sb < kQK_K / 16; ++sb) {
      const float dl = d * static_cast<float>(b[i].scales[sb]);
      for (int k = 0; k < 16; ++k) {
        const int e = sb * 16 + k, h = e / 128, r = e % 128;
        const int lo = (b[i].ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xf;
        const int hi = (b[i].qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        y[e] = dl * static_cast<float>((lo | (hi << 4)) - 32);
      }
    }
  }
}

void DequantizeBlocks(const BlockQ8_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
    const float d = b[i].d;
    for (int j = 0; j < kQK_K; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

}  // namespace

void DequantizeRow(DType type, const void* src, float* dst, int64_t n) {
  const bool block = VisitBlockType(type, [&]<typename Block>(Block*) {
    DequantizeBlocks(static_cast<const Block*>(src), dst, n / DTypeBlockElems(type));
  });
  // Scalar types are not ggml blocks; ConvertToF32 handles them.
  if (!block) std::memset(dst, 0, n * sizeof(float));
}

}  // namespace retort::ggml
