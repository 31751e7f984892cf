#include "core/dtype.h"

#include <array>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace retort {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  int bits;         // per element; 0 for block types
  int block_elems;  // 1 for scalar types
  int block_bytes;  // bytes per block (0 for kI4)
};

// Block sizes are ggml's (and asserted against the structs in ggml_blocks.h).
constexpr std::array<DTypeInfo, 28> kInfos = {{
    {DType::kF32, "F32", 32, 1, 4},       {DType::kF16, "F16", 16, 1, 2},
    {DType::kBF16, "BF16", 16, 1, 2},     {DType::kF8E4M3, "F8_E4M3", 8, 1, 1},
    {DType::kF8E5M2, "F8_E5M2", 8, 1, 1}, {DType::kI8, "I8", 8, 1, 1},
    {DType::kI4, "I4", 4, 1, 0},          {DType::kU8, "U8", 8, 1, 1},
    {DType::kI16, "I16", 16, 1, 2},       {DType::kU16, "U16", 16, 1, 2},
    {DType::kI32, "I32", 32, 1, 4},       {DType::kU32, "U32", 32, 1, 4},
    {DType::kI64, "I64", 64, 1, 8},       {DType::kU64, "U64", 64, 1, 8},
    {DType::kF64, "F64", 64, 1, 8},       {DType::kBool, "BOOL", 8, 1, 1},
    {DType::kQ4_0, "Q4_0", 0, 32, 18},    {DType::kQ4_1, "Q4_1", 0, 32, 20},
    {DType::kQ5_0, "Q5_0", 0, 32, 22},    {DType::kQ5_1, "Q5_1", 0, 32, 24},
    {DType::kQ8_0, "Q8_0", 0, 32, 34},    {DType::kQ8_1, "Q8_1", 0, 32, 36},
    {DType::kQ2_K, "Q2_K", 0, 256, 84},   {DType::kQ3_K, "Q3_K", 0, 256, 110},
    {DType::kQ4_K, "Q4_K", 0, 256, 144},  {DType::kQ5_K, "Q5_K", 0, 256, 176},
    {DType::kQ6_K, "Q6_K", 0, 256, 210},  {DType::kQ8_K, "Q8_K", 0, 256, 292},
}};

const DTypeInfo& Info(DType t) { return kInfos[static_cast<size_t>(t)]; }

static_assert(
    [] {
      for (size_t i = 0; i < kInfos.size(); ++i)
        if (static_cast<size_t>(kInfos[i].type) != i) return false;
      return true;
    }(),
    "kInfos must be indexed by DType");

}  // namespace

int DTypeBits(DType t) { return Info(t).bits; }

size_t DTypeBytes(DType t, int64_t numel) {
  const DTypeInfo& info = Info(t);
  if (info.bits == 0) return static_cast<size_t>(numel / info.block_elems) * info.block_bytes;
  return (static_cast<size_t>(numel) * info.bits + 7) / 8;
}

int DTypeBlockElems(DType t) { return Info(t).block_elems; }
int DTypeBlockBytes(DType t) { return Info(t).block_bytes; }
bool IsBlockQuantized(DType t) { return Info(t).bits == 0; }

double BitsPerWeight(DType t) {
  const DTypeInfo& info = Info(t);
  return info.bits ? info.bits : 8.0 * info.block_bytes / info.block_elems;
}

std::string_view DTypeName(DType t) { return Info(t).name; }

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const DTypeInfo& info : kInfos)
    if (info.name == name && info.bits != 0) return info.type;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", std::string(name), "\""));
}

absl::StatusOr<DType> ParseAnyDType(std::string_view name) {
  for (const DTypeInfo& info : kInfos)
    if (info.name == name) return info.type;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", std::string(name), "\""));
}

bool IsFloat(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kF64:
      return true;
    default:
      return false;
  }
}

}  // namespace retort
