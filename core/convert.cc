#include "core/convert.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "core/ggml_blocks.h"

namespace retort {
namespace {

// A binary floating-point format narrower than f32.
struct MiniFloat {
  int exp_bits;
  int man_bits;
  bool has_inf;  // false: e4m3fn-style (all-ones exponent is finite, only all-ones is NaN)
};

constexpr MiniFloat kF16{5, 10, true};
constexpr MiniFloat kE4M3{4, 3, false};
constexpr MiniFloat kE5M2{5, 2, true};

constexpr int Bias(MiniFloat m) { return (1 << (m.exp_bits - 1)) - 1; }

double MaxFinite(MiniFloat m) {
  int max_exp_field = (1 << m.exp_bits) - (m.has_inf ? 2 : 1);
  double max_man = m.has_inf ? 2.0 - std::ldexp(1.0, -m.man_bits)
                             : 2.0 - std::ldexp(2.0, -m.man_bits);  // all-ones mantissa is NaN
  return std::ldexp(max_man, max_exp_field - Bias(m));
}

uint32_t NaNBits(MiniFloat m) {
  uint32_t exp_mask = ((1u << m.exp_bits) - 1) << m.man_bits;
  return m.has_inf ? exp_mask | (1u << (m.man_bits - 1)) : exp_mask | ((1u << m.man_bits) - 1);
}

float Decode(MiniFloat m, uint32_t bits) {
  int total = 1 + m.exp_bits + m.man_bits;
  bool neg = (bits >> (total - 1)) & 1;
  uint32_t exp = (bits >> m.man_bits) & ((1u << m.exp_bits) - 1);
  uint32_t man = bits & ((1u << m.man_bits) - 1);
  uint32_t exp_max = (1u << m.exp_bits) - 1;
  double v;
  if (m.has_inf && exp == exp_max) {
    v = man == 0 ? std::numeric_limits<double>::infinity()
                 : std::numeric_limits<double>::quiet_NaN();
  } else if (!m.has_inf && exp == exp_max && man == (1u << m.man_bits) - 1) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - Bias(m) - m.man_bits);
  } else {
    v = std::ldexp(static_cast<double>(man | (1u << m.man_bits)),
                   static_cast<int>(exp) - Bias(m) - m.man_bits);
  }
  return static_cast<float>(neg ? -v : v);
}

// Round-to-nearest-even encoding. Scaling by powers of two is exact in double,
// and every f32 (and every midpoint between narrow values) is representable,
// so std::nearbyint (ties to even in the default rounding mode) decides ties.
uint32_t Encode(MiniFloat m, float f) {
  int total = 1 + m.exp_bits + m.man_bits;
  uint32_t sign = std::signbit(f) ? 1u << (total - 1) : 0u;
  if (std::isnan(f)) return sign | NaNBits(m);
  double a = std::fabs(static_cast<double>(f));
  const double max_finite = MaxFinite(m);
  const uint32_t inf_bits = ((1u << m.exp_bits) - 1) << m.man_bits;
  if (std::isinf(a))
    return sign | (m.has_inf ? inf_bits : Encode(m, static_cast<float>(max_finite)));
  if (a == 0) return sign;
  const int min_exp = 1 - Bias(m);
  int e;
  std::frexp(a, &e);
  e -= 1;  // a = 1.xxx * 2^e
  if (e < min_exp) e = min_exp;
  double quantum = std::ldexp(1.0, e - m.man_bits);
  double r = std::nearbyint(a / quantum) * quantum;
  if (r > max_finite)
    return sign | (m.has_inf ? inf_bits : Encode(m, static_cast<float>(max_finite)));
  if (r == 0) return sign;
  std::frexp(r, &e);
  e -= 1;
  if (e < min_exp) {
    return sign | static_cast<uint32_t>(std::ldexp(r, m.man_bits - min_exp));
  }
  uint32_t man = static_cast<uint32_t>(std::ldexp(r, m.man_bits - e)) - (1u << m.man_bits);
  return sign | (static_cast<uint32_t>(e + Bias(m)) << m.man_bits) | man;
}

struct Tables {
  std::array<float, 65536> f16;
  std::array<float, 256> e4m3;
  std::array<float, 256> e5m2;
  Tables() {
    for (uint32_t i = 0; i < 65536; ++i) f16[i] = Decode(kF16, i);
    for (uint32_t i = 0; i < 256; ++i) e4m3[i] = Decode(kE4M3, i);
    for (uint32_t i = 0; i < 256; ++i) e5m2[i] = Decode(kE5M2, i);
  }
};

const Tables& GetTables() {
  static const Tables* tables = new Tables();
  return *tables;
}

template <typename T>
T SaturateRound(float f) {
  if (std::isnan(f)) return 0;
  double r = std::nearbyint(static_cast<double>(f));
  if (r < static_cast<double>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
  // Compare with 2^digits (max + 1, exact in double): double(max) itself rounds
  // up to 2^63 / 2^64 for the 64-bit types, and casting that is undefined.
  if (r >= std::ldexp(1.0, std::numeric_limits<T>::digits)) return std::numeric_limits<T>::max();
  return static_cast<T>(r);
}

template <typename T>
float Widen(T v) {
  return static_cast<float>(v);
}

// dst[i] = decode(s[i]) over the n elements of src, stored as T.
template <typename T, typename Decode>
void DecodeEach(const void* src, float* dst, int64_t n, Decode decode) {
  const auto* s = static_cast<const T*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = decode(s[i]);
}

// d[i] = encode(src[i]) over n elements stored as T at dst.
template <typename T, typename Encode>
void EncodeEach(const float* src, void* dst, int64_t n, Encode encode) {
  auto* d = static_cast<T*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = encode(src[i]);
}

// The integer dtypes and the C type of one element: X(DType::kI8, int8_t) ...
#define RETORT_INTEGER_DTYPES(X) \
  X(DType::kI8, int8_t)          \
  X(DType::kU8, uint8_t)         \
  X(DType::kI16, int16_t)        \
  X(DType::kU16, uint16_t)       \
  X(DType::kI32, int32_t)        \
  X(DType::kU32, uint32_t)       \
  X(DType::kI64, int64_t)        \
  X(DType::kU64, uint64_t)

}  // namespace

float F16ToF32(uint16_t h) { return GetTables().f16[h]; }
uint16_t F32ToF16(float f) { return static_cast<uint16_t>(Encode(kF16, f)); }
float F8E4M3ToF32(uint8_t b) { return GetTables().e4m3[b]; }
uint8_t F32ToF8E4M3(float f) { return static_cast<uint8_t>(Encode(kE4M3, f)); }
float F8E5M2ToF32(uint8_t b) { return GetTables().e5m2[b]; }
uint8_t F32ToF8E5M2(float f) { return static_cast<uint8_t>(Encode(kE5M2, f)); }

void ConvertToF32(DType type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16: {
      const float* t = GetTables().f16.data();
      return DecodeEach<uint16_t>(src, dst, n, [t](uint16_t h) { return t[h]; });
    }
    case DType::kBF16:
      return DecodeEach<uint16_t>(src, dst, n, [](uint16_t b) { return BF16ToF32(b); });
    case DType::kF8E4M3:
      return DecodeEach<uint8_t>(src, dst, n, [](uint8_t b) { return GetTables().e4m3[b]; });
    case DType::kF8E5M2:
      return DecodeEach<uint8_t>(src, dst, n, [](uint8_t b) { return GetTables().e5m2[b]; });
    case DType::kI4: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = UnpackI4(s, i);
      return;
    }
#define RETORT_WIDEN_CASE(DT, T) \
  case DT:                       \
    return DecodeEach<T>(src, dst, n, Widen<T>);
      RETORT_INTEGER_DTYPES(RETORT_WIDEN_CASE)
      RETORT_WIDEN_CASE(DType::kF64, double)
      RETORT_WIDEN_CASE(DType::kBool, uint8_t)
#undef RETORT_WIDEN_CASE
    default:
      DequantizeBlocksToF32(type, src, dst, n);
      return;
  }
}

int64_t CountNonFinite(DType type, const void* src, int64_t n) {
  // Decoded a chunk at a time (whole blocks for block-quantized types).
  const int64_t block = IsBlockQuantized(type) ? DTypeBlockElems(type) : 2;
  const int64_t chunk = std::max<int64_t>(block, (int64_t{1} << 16) / block * block);
  std::vector<float> f(static_cast<size_t>(std::min(chunk, n)));
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    ConvertToF32(type, static_cast<const char*>(src) + DTypeBytes(type, i), f.data(), m);
    for (int64_t k = 0; k < m; ++k) bad += !std::isfinite(f[static_cast<size_t>(k)]);
  }
  return bad;
}

void ConvertFromF32(DType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16:
      return EncodeEach<uint16_t>(src, dst, n, [](float f) { return F32ToF16(f); });
    case DType::kBF16:
      return EncodeEach<uint16_t>(src, dst, n, [](float f) { return F32ToBF16(f); });
    case DType::kF8E4M3:
      return EncodeEach<uint8_t>(src, dst, n, [](float f) { return F32ToF8E4M3(f); });
    case DType::kF8E5M2:
      return EncodeEach<uint8_t>(src, dst, n, [](float f) { return F32ToF8E5M2(f); });
    case DType::kI4: {
      auto* d = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {
        float v = std::isnan(src[i]) ? 0.f : std::fmin(7.f, std::fmax(-8.f, src[i]));
        PackI4(d, i, static_cast<int>(std::nearbyint(v)));
      }
      return;
    }
    case DType::kF64:
      return EncodeEach<double>(src, dst, n, [](float f) { return static_cast<double>(f); });
#define RETORT_SATURATE_CASE(DT, T) \
  case DT:                          \
    return EncodeEach<T>(src, dst, n, SaturateRound<T>);
      RETORT_INTEGER_DTYPES(RETORT_SATURATE_CASE)
#undef RETORT_SATURATE_CASE
    case DType::kBool:
      // A bool byte is 0 or 1; like C++ and torch, NaN is true (NaN != 0).
      return EncodeEach<uint8_t>(src, dst, n, [](float f) { return f != 0.f ? 1 : 0; });
    default:
      // Block types are encoded by quantize/ (they need a search); reaching
      // here is a programming error, and silent zeros would be worse than a stop.
      std::fprintf(stderr, "retort: ConvertFromF32 to block type %s: use ggml::QuantizeTensor\n",
                   std::string(DTypeName(type)).c_str());
      std::abort();
  }
}

#undef RETORT_INTEGER_DTYPES

}  // namespace retort
