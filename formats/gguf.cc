// formats/gguf.h: the names of GGUF's metadata types and the table of ggml
// tensor types (id, name, our DType), shared by the reader and the writer.
#include "formats/gguf.h"

#include "absl/strings/str_cat.h"
#include "formats/gguf_internal.h"

namespace retort {
namespace {

struct GgmlTypeInfo {
  uint32_t id;
  const char* name;
  bool supported;
  DType dtype;
};

// Every ggml type id we know of; the unsupported ones only for messages.
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", true, DType::kF32},
    {1, "F16", true, DType::kF16},
    {2, "Q4_0", true, DType::kQ4_0},
    {3, "Q4_1", true, DType::kQ4_1},
    {4, "Q4_2 (removed from ggml)", false, DType::kF32},
    {5, "Q4_3 (removed from ggml)", false, DType::kF32},
    {6, "Q5_0", true, DType::kQ5_0},
    {7, "Q5_1", true, DType::kQ5_1},
    {8, "Q8_0", true, DType::kQ8_0},
    {9, "Q8_1", true, DType::kQ8_1},
    {10, "Q2_K", true, DType::kQ2_K},
    {11, "Q3_K", true, DType::kQ3_K},
    {12, "Q4_K", true, DType::kQ4_K},
    {13, "Q5_K", true, DType::kQ5_K},
    {14, "Q6_K", true, DType::kQ6_K},
    {15, "Q8_K", true, DType::kQ8_K},
    {16, "IQ2_XXS", false, DType::kF32},
    {17, "IQ2_XS", false, DType::kF32},
    {18, "IQ3_XXS", false, DType::kF32},
    {19, "IQ1_S", false, DType::kF32},
    {20, "IQ4_NL", false, DType::kF32},
    {21, "IQ3_S", false, DType::kF32},
    {22, "IQ2_S", false, DType::kF32},
    {23, "IQ4_XS", false, DType::kF32},
    {24, "I8", true, DType::kI8},
    {25, "I16", true, DType::kI16},
    {26, "I32", true, DType::kI32},
    {27, "I64", true, DType::kI64},
    {28, "F64", true, DType::kF64},
    {29, "IQ1_M", false, DType::kF32},
    {30, "BF16", true, DType::kBF16},
    {31, "Q4_0_4_4 (removed from ggml)", false, DType::kF32},
    {32, "Q4_0_4_8 (removed from ggml)", false, DType::kF32},
    {33, "Q4_0_8_8 (removed from ggml)", false, DType::kF32},
    {34, "TQ1_0", false, DType::kF32},
    {35, "TQ2_0", false, DType::kF32},
    {39, "MXFP4", false, DType::kF32},
    {40, "NVFP4", false, DType::kF32},
    {41, "Q1_0", false, DType::kF32},
};

const GgmlTypeInfo* FindGgmlType(uint32_t id) {
  for (const GgmlTypeInfo& t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}

}  // namespace

std::string GgufTypeName(GgufType t) {
  using gguf_internal::kNumGgufTypes;
  static const char* const kNames[kNumGgufTypes] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                    "i32", "f32", "bool", "string", "array",
                                                    "u64", "i64", "f64"};
  uint32_t id = static_cast<uint32_t>(t);
  return id < kNumGgufTypes ? kNames[id] : absl::StrCat("type ", id);
}

std::string GgmlTypeName(uint32_t ggml_type) {
  const GgmlTypeInfo* t = FindGgmlType(ggml_type);
  return t ? t->name : absl::StrCat("type ", ggml_type);
}

absl::StatusOr<DType> DTypeFromGgmlType(uint32_t ggml_type) {
  const GgmlTypeInfo* t = FindGgmlType(ggml_type);
  if (t == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("unknown ggml type ", ggml_type));
  if (!t->supported) {
    return absl::UnimplementedError(
        absl::StrCat("ggml type ", ggml_type, " (", t->name, ") is not supported"));
  }
  return t->dtype;
}

absl::StatusOr<uint32_t> GgmlTypeFromDType(DType dtype) {
  for (const GgmlTypeInfo& t : kGgmlTypes)
    if (t.supported && t.dtype == dtype) return t.id;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", std::string(DTypeName(dtype)),
                   " has no ggml type (GGUF holds F32 F16 BF16 F64 I8 I16 I32 "
                   "I64 and the ggml block types)"));
}

Shape GgufTensorInfo::shape() const {
  Shape s;
  for (auto it = dims.rbegin(); it != dims.rend(); ++it) s.push_back(static_cast<int64_t>(*it));
  return s;
}

}  // namespace retort
