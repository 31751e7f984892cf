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
  // ggml block-quantized types (GGUF). A row of n elements is n / BlockElems
  // blocks of BlockBytes bytes; layouts are in core/ggml_blocks.h.
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ8_0,
  kQ8_1,
  kQ2_K,
  kQ3_K,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kQ8_K,
};

// Bits per element (4 for kI4; 0 for block types, see BitsPerWeight).
int DTypeBits(DType t);
// Bytes needed to store `numel` elements (rounded up for sub-byte types; for
// block types numel must be a multiple of DTypeBlockElems).
size_t DTypeBytes(DType t, int64_t numel);
// Elements per block: 1 for scalar types, 32 or 256 for ggml block types.
int DTypeBlockElems(DType t);
// Bytes per block (per element for scalar types; 0 for kI4).
int DTypeBlockBytes(DType t);
bool IsBlockQuantized(DType t);
// Storage bits per weight, e.g. 4.5 for Q4_0, 16 for BF16.
double BitsPerWeight(DType t);
// The safetensors spelling, e.g. "BF16"; ggml's for block types ("Q4_K").
std::string_view DTypeName(DType t);
// Parses a safetensors dtype string; error for anything we do not handle
// (block types are not safetensors dtypes and are refused).
absl::StatusOr<DType> ParseDType(std::string_view name);
// Any name DTypeName gives, block types included (for command lines).
absl::StatusOr<DType> ParseAnyDType(std::string_view name);
bool IsFloat(DType t);

}  // namespace retort

#endif  // RETORT_CORE_DTYPE_H_
