// Element types a Tensor can hold, with their names in the file formats we
// read (safetensors spells them "F32", "BF16", "F8_E4M3", ...).
#ifndef RETORT_CORE_DTYPE_H_
#define RETORT_CORE_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace retort {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3,  // float8_e4m3fn: no infinities, NaN only 0x7F/0xFF, max 448
  kF8E5M2,  // float8_e5m2: IEEE-style inf/NaN, max 57344
  kI8,
  kI4,  // packed two per byte, element 2k in the low nibble of byte k
  kU8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kF64,
  kBool,
};

// Bits per element (4 for kI4).
int DTypeBits(DType t);
// Bytes needed to store `numel` elements (rounded up for sub-byte types).
size_t DTypeBytes(DType t, int64_t numel);
// The safetensors spelling, e.g. "BF16".
std::string_view DTypeName(DType t);
// Parses a safetensors dtype string; error for anything we do not handle.
absl::StatusOr<DType> ParseDType(std::string_view name);
bool IsFloat(DType t);

}  // namespace retort

#endif  // RETORT_CORE_DTYPE_H_
