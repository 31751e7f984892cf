// Exact conversions between f32 and the narrow float formats.
//
// Every f32 -> narrow conversion rounds to nearest, ties to even. Formats with
// infinities (f16, bf16, e5m2) overflow to inf as IEEE 754 does; e4m3fn has no
// infinity and saturates to +-448 (CUDA's __NV_SATFINITE behaviour), which is
// what a quantizer wants. NaN maps to a NaN (sign kept) in every format.
// Narrow -> f32 is exact. Thread-safe (pure functions, constant tables).
#ifndef RETORT_CORE_CONVERT_H_
#define RETORT_CORE_CONVERT_H_

#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace retort {

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);
float F8E4M3ToF32(uint8_t b);
uint8_t F32ToF8E4M3(float f);
float F8E5M2ToF32(uint8_t b);
uint8_t F32ToF8E5M2(float f);

inline float BF16ToF32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t F32ToBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Signed 4-bit values (-8..7) packed two per byte, element 2k in the low nibble.
inline int8_t UnpackI4(const uint8_t* packed, int64_t i) {
  uint8_t nib = (packed[i >> 1] >> ((i & 1) * 4)) & 0xf;
  return static_cast<int8_t>(nib ^ 8) - 8;
}
inline void PackI4(uint8_t* packed, int64_t i, int v) {
  uint8_t nib = static_cast<uint8_t>(v) & 0xf;
  int shift = (i & 1) * 4;
  packed[i >> 1] = static_cast<uint8_t>((packed[i >> 1] & ~(0xf << shift)) | (nib << shift));
}

// Converts n elements of `src` (stored as `type`) to f32. Integer types are
// converted by value (kBool: 0 or 1).
void ConvertToF32(DType type, const void* src, float* dst, int64_t n);
// Block-quantized types (Q8_0, Q4_K, ...) are dequantized: n must be a
// multiple of the block size.
//
// How many of the n elements of `src` (stored as `type`) are NaN or infinite
// as f32: 0 for integer types; a block-quantized element counts when its
// block's scale spoils it. REQUIRES as ConvertToF32.
int64_t CountNonFinite(DType type, const void* src, int64_t n);

// Converts n f32 values to `type` (rounding as above; integers round to
// nearest even and saturate to the type's range, NaN -> 0; kBool is 1 for any
// nonzero or NaN input, else 0).
// REQUIRES: type is not block-quantized (those encoders live in quantize/).
void ConvertFromF32(DType type, const float* src, void* dst, int64_t n);

}  // namespace retort

#endif  // RETORT_CORE_CONVERT_H_
