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
  int bits;
};

constexpr std::array<DTypeInfo, 16> kInfos = {{
    {DType::kF32, "F32", 32},      {DType::kF16, "F16", 16},
    {DType::kBF16, "BF16", 16},    {DType::kF8E4M3, "F8_E4M3", 8},
    {DType::kF8E5M2, "F8_E5M2", 8}, {DType::kI8, "I8", 8},
    {DType::kI4, "I4", 4},         {DType::kU8, "U8", 8},
    {DType::kI16, "I16", 16},      {DType::kU16, "U16", 16},
    {DType::kI32, "I32", 32},      {DType::kU32, "U32", 32},
    {DType::kI64, "I64", 64},      {DType::kU64, "U64", 64},
    {DType::kF64, "F64", 64},      {DType::kBool, "BOOL", 8},
}};

const DTypeInfo& Info(DType t) { return kInfos[static_cast<size_t>(t)]; }

static_assert([] {
  for (size_t i = 0; i < kInfos.size(); ++i)
    if (static_cast<size_t>(kInfos[i].type) != i) return false;
  return true;
}(), "kInfos must be indexed by DType");

}  // namespace

int DTypeBits(DType t) { return Info(t).bits; }

size_t DTypeBytes(DType t, int64_t numel) {
  return (static_cast<size_t>(numel) * Info(t).bits + 7) / 8;
}

std::string_view DTypeName(DType t) { return Info(t).name; }

absl::StatusOr<DType> ParseDType(std::string_view name) {
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
