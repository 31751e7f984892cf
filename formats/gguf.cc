#include "formats/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

namespace retort {
namespace {

constexpr uint32_t kNumGgufTypes = 13;
// Arrays of arrays deeper than this are refused (each level costs only 12
// bytes in the file, so an unbounded depth would let a small file exhaust the
// stack of a recursive reader).
constexpr int kMaxArrayDepth = 16;

// Bytes of one element of a fixed-size type; 0 for string and array.
size_t ScalarWidth(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    default:
      return 0;
  }
}

bool IsIntegerType(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(GgufType t) { return t == GgufType::kF32 || t == GgufType::kF64; }
bool IsSignedType(GgufType t) {
  return t == GgufType::kI8 || t == GgufType::kI16 || t == GgufType::kI32 || t == GgufType::kI64;
}

uint64_t LoadLE(const uint8_t* p, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void AppendLE(std::string* out, uint64_t v, size_t width) {
  for (size_t i = 0; i < width; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void AppendString(std::string* out, const std::string& s) {
  AppendLE(out, s.size(), 8);
  out->append(s);
}

// Sign-extends a zero-extended bit pattern of `t`.
int64_t SignExtend(uint64_t bits, GgufType t) {
  switch (t) {
    case GgufType::kI8:
      return static_cast<int8_t>(bits);
    case GgufType::kI16:
      return static_cast<int16_t>(bits);
    case GgufType::kI32:
      return static_cast<int32_t>(bits);
    default:
      return static_cast<int64_t>(bits);
  }
}

uint64_t F32Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
uint64_t F64Bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}
float BitsF32(uint64_t bits) {
  uint32_t u = static_cast<uint32_t>(bits);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
double BitsF64(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

// Error messages stay on one line and printable even when they quote bytes
// from a hostile file.
std::string Escaped(const std::string& s, size_t max_len) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);  // UTF-8 passes through
    } else {
      out += absl::StrFormat("\\x%02x", c);
    }
  }
  return out;
}
std::string Quoted(const std::string& s) { return absl::StrCat("\"", Escaped(s, 120), "\""); }

absl::Status Invalid(const std::string& path, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}
absl::Status Loss(const std::string& path, const std::string& problem) {
  return absl::DataLossError(absl::StrCat(path, ": ", problem));
}

uint64_t PadTo(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

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

// ---------------------------------------------------------------- GgufValue

namespace {
GgufValue MakeScalar(GgufType t, uint64_t bits);
}  // namespace

// Builds values; a friend so parsing and construction share the private
// representation.
class GgufParser {
 public:
  static GgufValue Scalar(GgufType t, uint64_t bits) {
    GgufValue v;
    v.type_ = t;
    v.scalar_ = bits;
    return v;
  }
  static GgufValue PackedArray(GgufType elem, std::string packed) {
    GgufValue v;
    v.type_ = GgufType::kArray;
    v.elem_type_ = elem;
    v.bytes_ = std::move(packed);
    return v;
  }

  GgufParser(const std::string& path, const uint8_t* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}

  absl::Status Parse(GgufReader* r);

 private:
  uint64_t left() const { return size_ - pos_; }
  absl::Status Need(uint64_t n, const std::string& what) const {
    if (n > left()) {
      return Loss(path_, absl::StrCat("file ends inside ", what, " (needs ", n, " bytes at offset ",
                                      pos_, ", ", left(), " left of ", size_, ")"));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> Read(size_t width, const std::string& what) {
    RETURN_IF_ERROR(Need(width, what));
    uint64_t v = LoadLE(data_ + pos_, width);
    pos_ += width;
    return v;
  }
  absl::StatusOr<std::string> ReadString(const std::string& what) {
    ASSIGN_OR_RETURN(uint64_t len, Read(8, what));
    if (len > left()) {
      return Loss(path_, absl::StrCat(what, " claims ", len, " bytes at offset ", pos_,
                                      " but only ", left(), " bytes are left in the file"));
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }
  absl::StatusOr<GgufType> ReadType(const std::string& what) {
    ASSIGN_OR_RETURN(uint64_t id, Read(4, what));
    if (id >= kNumGgufTypes) {
      return Invalid(path_,
                     absl::StrCat(what, ": unknown value type ", id, " (GGUF has types 0..12)"));
    }
    return static_cast<GgufType>(id);
  }
  absl::StatusOr<GgufValue> ReadValue(GgufType type, const std::string& what, int depth);

  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

namespace {
GgufValue MakeScalar(GgufType t, uint64_t bits) { return GgufParser::Scalar(t, bits); }

// The bit pattern of `v` as a scalar of type `t` (converting if it differs).
uint64_t ScalarBitsAs(const GgufValue& v, GgufType t) {
  if (v.type() == t) {
    GgufValue tmp = v;
    std::string bytes;
    tmp.AppendTo(&bytes, /*with_type=*/false);
    return LoadLE(reinterpret_cast<const uint8_t*>(bytes.data()), ScalarWidth(t));
  }
  if (t == GgufType::kF32) return F32Bits(static_cast<float>(v.AsFloat().value_or(0)));
  if (t == GgufType::kF64) return F64Bits(v.AsFloat().value_or(0));
  if (t == GgufType::kBool) {
    if (auto b = v.AsBool(); b.ok()) return *b ? 1 : 0;
    return v.AsInt().value_or(0) != 0 ? 1 : 0;
  }
  uint64_t bits = static_cast<uint64_t>(v.AsInt().value_or(0));
  size_t width = ScalarWidth(t);
  return width == 8 ? bits : bits & ((uint64_t{1} << (8 * width)) - 1);
}
}  // namespace

GgufValue GgufValue::U8(uint8_t v) { return MakeScalar(GgufType::kU8, v); }
GgufValue GgufValue::I8(int8_t v) { return MakeScalar(GgufType::kI8, static_cast<uint8_t>(v)); }
GgufValue GgufValue::U16(uint16_t v) { return MakeScalar(GgufType::kU16, v); }
GgufValue GgufValue::I16(int16_t v) { return MakeScalar(GgufType::kI16, static_cast<uint16_t>(v)); }
GgufValue GgufValue::U32(uint32_t v) { return MakeScalar(GgufType::kU32, v); }
GgufValue GgufValue::I32(int32_t v) { return MakeScalar(GgufType::kI32, static_cast<uint32_t>(v)); }
GgufValue GgufValue::F32(float v) { return MakeScalar(GgufType::kF32, F32Bits(v)); }
GgufValue GgufValue::Bool(bool v) { return MakeScalar(GgufType::kBool, v ? 1 : 0); }
GgufValue GgufValue::U64(uint64_t v) { return MakeScalar(GgufType::kU64, v); }
GgufValue GgufValue::I64(int64_t v) { return MakeScalar(GgufType::kI64, static_cast<uint64_t>(v)); }
GgufValue GgufValue::F64(double v) { return MakeScalar(GgufType::kF64, F64Bits(v)); }
GgufValue GgufValue::String(std::string v) {
  GgufValue out;
  out.type_ = GgufType::kString;
  out.bytes_ = std::move(v);
  return out;
}

GgufValue GgufValue::Array(GgufType elem, std::vector<GgufValue> items) {
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = elem;
  if (elem == GgufType::kString) {
    out.strings_.reserve(items.size());
    for (GgufValue& item : items) {
      out.strings_.push_back(item.type_ == GgufType::kString ? std::move(item.bytes_)
                                                             : std::string());
    }
  } else if (elem == GgufType::kArray) {
    out.items_.reserve(items.size());
    for (GgufValue& item : items) {
      out.items_.push_back(item.is_array() ? std::move(item)
                                           : GgufParser::PackedArray(GgufType::kU8, ""));
    }
  } else {
    size_t width = ScalarWidth(elem);
    out.bytes_.reserve(items.size() * width);
    for (const GgufValue& item : items) AppendLE(&out.bytes_, ScalarBitsAs(item, elem), width);
  }
  return out;
}

GgufValue GgufValue::StringArray(std::vector<std::string> items) {
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = GgufType::kString;
  out.strings_ = std::move(items);
  return out;
}

namespace {
template <typename T>
std::string PackLE(const std::vector<T>& items) {
  std::string out;
  out.reserve(items.size() * sizeof(T));
  for (const T& x : items) {
    uint64_t bits = 0;
    std::memcpy(&bits, &x, sizeof(T));
    AppendLE(&out, bits, sizeof(T));
  }
  return out;
}
}  // namespace

GgufValue GgufValue::I32Array(const std::vector<int32_t>& items) {
  return GgufParser::PackedArray(GgufType::kI32, PackLE(items));
}
GgufValue GgufValue::F32Array(const std::vector<float>& items) {
  return GgufParser::PackedArray(GgufType::kF32, PackLE(items));
}
GgufValue GgufValue::U8Array(const std::vector<uint8_t>& items) {
  return GgufParser::PackedArray(GgufType::kU8, PackLE(items));
}
GgufValue GgufValue::I64Array(const std::vector<int64_t>& items) {
  return GgufParser::PackedArray(GgufType::kI64, PackLE(items));
}

size_t GgufValue::size() const {
  if (type_ != GgufType::kArray) return 0;
  if (elem_type_ == GgufType::kString) return strings_.size();
  if (elem_type_ == GgufType::kArray) return items_.size();
  return bytes_.size() / ScalarWidth(elem_type_);
}

GgufValue GgufValue::Item(size_t i) const {
  if (elem_type_ == GgufType::kString) return String(strings_[i]);
  if (elem_type_ == GgufType::kArray) return items_[i];
  size_t width = ScalarWidth(elem_type_);
  return MakeScalar(elem_type_,
                    LoadLE(reinterpret_cast<const uint8_t*>(bytes_.data()) + i * width, width));
}

absl::StatusOr<int64_t> GgufValue::AsInt() const {
  if (!IsIntegerType(type_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", GgufTypeName(type_), ", expected an integer"));
  }
  if (type_ == GgufType::kU64 &&
      scalar_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::OutOfRangeError(
        absl::StrCat("has u64 value ", scalar_, ", which does not fit int64"));
  }
  return IsSignedType(type_) ? SignExtend(scalar_, type_) : static_cast<int64_t>(scalar_);
}

absl::StatusOr<double> GgufValue::AsFloat() const {
  if (type_ == GgufType::kF32) return static_cast<double>(BitsF32(scalar_));
  if (type_ == GgufType::kF64) return BitsF64(scalar_);
  if (type_ == GgufType::kU64) return static_cast<double>(scalar_);
  if (IsIntegerType(type_)) return static_cast<double>(SignExtend(scalar_, type_));
  return absl::InvalidArgumentError(
      absl::StrCat("has type ", GgufTypeName(type_), ", expected a number"));
}

absl::StatusOr<bool> GgufValue::AsBool() const {
  if (type_ != GgufType::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", GgufTypeName(type_), ", expected bool"));
  }
  return scalar_ != 0;
}

absl::StatusOr<std::string> GgufValue::AsString() const {
  if (type_ != GgufType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", GgufTypeName(type_), ", expected string"));
  }
  return bytes_;
}

namespace {
std::string TypeDescription(const GgufValue& v) {
  return v.is_array() ? absl::StrCat("array of ", GgufTypeName(v.elem_type()))
                      : GgufTypeName(v.type());
}
}  // namespace

absl::StatusOr<std::vector<std::string>> GgufValue::AsStringArray() const {
  if (type_ != GgufType::kArray || elem_type_ != GgufType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", TypeDescription(*this), ", expected array of string"));
  }
  return strings_;
}

absl::StatusOr<std::vector<int64_t>> GgufValue::AsIntArray() const {
  if (type_ != GgufType::kArray || !IsIntegerType(elem_type_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", TypeDescription(*this), ", expected an array of integers"));
  }
  std::vector<int64_t> out(size());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSIGN_OR_RETURN(out[i], Item(i).AsInt());
  }
  return out;
}

absl::StatusOr<std::vector<double>> GgufValue::AsFloatArray() const {
  if (type_ != GgufType::kArray || !(IsIntegerType(elem_type_) || IsFloatType(elem_type_))) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", TypeDescription(*this), ", expected an array of numbers"));
  }
  std::vector<double> out(size());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSIGN_OR_RETURN(out[i], Item(i).AsFloat());
  }
  return out;
}

std::string GgufValue::DebugString(size_t max_items) const {
  switch (type_) {
    case GgufType::kString:
      return absl::StrCat("string \"", Escaped(bytes_, 80), "\"");
    case GgufType::kBool:
      return scalar_ ? "bool true" : "bool false";
    case GgufType::kF32:
      return absl::StrFormat("f32 %.9g", BitsF32(scalar_));
    case GgufType::kF64:
      return absl::StrFormat("f64 %.17g", BitsF64(scalar_));
    case GgufType::kArray: {
      const size_t n = size();
      std::string out = absl::StrCat("array<", GgufTypeName(elem_type_), ">[", n, "] [");
      for (size_t i = 0; i < n && i < max_items; ++i) {
        if (i) out += ", ";
        std::string item = Item(i).DebugString(max_items);
        // Items print without their type name; it is in the array's.
        if (elem_type_ != GgufType::kArray) item = item.substr(item.find(' ') + 1);
        out += item;
      }
      if (n > max_items) out += ", ...";
      return out + "]";
    }
    default:
      if (type_ == GgufType::kU64) return absl::StrCat("u64 ", scalar_);
      return absl::StrCat(GgufTypeName(type_), " ", SignExtend(scalar_, type_));
  }
}

void GgufValue::AppendTo(std::string* out, bool with_type) const {
  if (with_type) AppendLE(out, static_cast<uint32_t>(type_), 4);
  switch (type_) {
    case GgufType::kString:
      AppendString(out, bytes_);
      return;
    case GgufType::kArray:
      AppendLE(out, static_cast<uint32_t>(elem_type_), 4);
      AppendLE(out, size(), 8);
      if (elem_type_ == GgufType::kString) {
        for (const std::string& s : strings_) AppendString(out, s);
      } else if (elem_type_ == GgufType::kArray) {
        for (const GgufValue& item : items_) item.AppendTo(out, /*with_type=*/false);
      } else {
        out->append(bytes_);
      }
      return;
    default:
      AppendLE(out, scalar_, ScalarWidth(type_));
  }
}

bool operator==(const GgufValue& a, const GgufValue& b) {
  if (a.type_ != b.type_) return false;
  std::string sa, sb;
  a.AppendTo(&sa);
  b.AppendTo(&sb);
  return sa == sb;
}

// ---------------------------------------------------------------- reading

Shape GgufTensorInfo::shape() const {
  Shape s;
  for (auto it = dims.rbegin(); it != dims.rend(); ++it) s.push_back(static_cast<int64_t>(*it));
  return s;
}

absl::StatusOr<GgufValue> GgufParser::ReadValue(GgufType type, const std::string& what, int depth) {
  if (type == GgufType::kString) {
    ASSIGN_OR_RETURN(std::string s, ReadString(what));
    return GgufValue::String(std::move(s));
  }
  if (type != GgufType::kArray) {
    ASSIGN_OR_RETURN(uint64_t bits, Read(ScalarWidth(type), what));
    return Scalar(type, bits);
  }
  if (depth >= kMaxArrayDepth) {
    return Invalid(path_,
                   absl::StrCat(what, ": arrays nested deeper than ", kMaxArrayDepth, " levels"));
  }
  ASSIGN_OR_RETURN(GgufType elem, ReadType(absl::StrCat(what, " (array element type)")));
  ASSIGN_OR_RETURN(uint64_t count, Read(8, absl::StrCat(what, " (array length)")));
  // The least each element takes in the file: checked before anything is
  // allocated, so a lying count costs nothing.
  const uint64_t min_elem = elem == GgufType::kString  ? 8
                            : elem == GgufType::kArray ? 12
                                                       : ScalarWidth(elem);
  if (count > left() / min_elem) {
    return Loss(
        path_, absl::StrCat(what, ": array of ", count, " ", GgufTypeName(elem), " needs at least ",
                            count > std::numeric_limits<uint64_t>::max() / min_elem
                                ? std::string("more than 2^64")
                                : absl::StrCat(count * min_elem),
                            " bytes but only ", left(), " are left in the file"));
  }
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = elem;
  if (elem == GgufType::kString) {
    out.strings_.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(std::string s, ReadString(absl::StrCat(what, " item ", i)));
      out.strings_.push_back(std::move(s));
    }
  } else if (elem == GgufType::kArray) {
    out.items_.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(GgufValue item,
                       ReadValue(GgufType::kArray, absl::StrCat(what, " item ", i), depth + 1));
      out.items_.push_back(std::move(item));
    }
  } else {
    out.bytes_.assign(reinterpret_cast<const char*>(data_ + pos_), count * min_elem);
    pos_ += count * min_elem;
  }
  return out;
}

absl::Status GgufParser::Parse(GgufReader* r) {
  if (size_ < 4 || std::memcmp(data_, "GGUF", 4) != 0) {
    if (size_ < 4)
      return Loss(path_, absl::StrCat("file is ", size_, " bytes, too short for a GGUF header"));
    return Invalid(path_,
                   absl::StrCat("not a GGUF file (starts with \"",
                                Escaped(std::string(reinterpret_cast<const char*>(data_), 4), 16),
                                "\", expected \"GGUF\")"));
  }
  pos_ = 4;
  ASSIGN_OR_RETURN(uint64_t version, Read(4, "the header (version)"));
  if (version != 0 && (version & 0xffff) == 0) {
    return Invalid(
        path_,
        absl::StrFormat("version field 0x%08x looks byte-swapped: big-endian GGUF files are not "
                        "supported",
                        version));
  }
  if (version == 1) {
    return Invalid(
        path_,
        "GGUF version 1 is not supported (its counts and lengths are 32-bit); re-convert the "
        "model with a current llama.cpp");
  }
  if (version != 2 && version != 3) {
    return Invalid(
        path_, absl::StrCat("unsupported GGUF version ", version, " (we read versions 2 and 3)"));
  }
  r->version_ = static_cast<uint32_t>(version);
  ASSIGN_OR_RETURN(uint64_t n_tensors, Read(8, "the header (tensor count)"));
  ASSIGN_OR_RETURN(uint64_t n_kv, Read(8, "the header (metadata count)"));
  // A metadata pair takes at least 13 bytes (key length, type, one byte), a
  // tensor info at least 24 (name length, n_dims, type, offset).
  if (n_kv > left() / 13) {
    return Loss(path_, absl::StrCat("header claims ", n_kv, " metadata pairs, more than the ",
                                    left(), " bytes left in the file can hold"));
  }
  if (n_tensors > left() / 24) {
    return Loss(path_, absl::StrCat("header claims ", n_tensors, " tensors, more than the ", left(),
                                    " bytes left in the file can hold"));
  }

  r->metadata_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    ASSIGN_OR_RETURN(std::string key, ReadString(absl::StrCat("metadata pair ", i, " (key)")));
    const std::string what = absl::StrCat("metadata key ", Quoted(key));
    ASSIGN_OR_RETURN(GgufType type, ReadType(what));
    ASSIGN_OR_RETURN(GgufValue value, ReadValue(type, what, 0));
    if (!r->metadata_index_.emplace(key, r->metadata_.size()).second) {
      return Invalid(path_, absl::StrCat("duplicate metadata key ", Quoted(key)));
    }
    r->metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* a = r->Find("general.alignment")) {
    if (a->type() != GgufType::kU32) {
      return Invalid(path_, absl::StrCat("metadata key general.alignment has type ",
                                         TypeDescription(*a), ", expected u32"));
    }
    const uint64_t align = *a->AsInt();
    if (align == 0 || (align & (align - 1)) != 0) {
      return Invalid(path_, absl::StrCat("general.alignment ", align, " is not a power of two"));
    }
    r->alignment_ = align;
  }

  if (n_tensors > left() / 24) {
    return Loss(path_, absl::StrCat("header claims ", n_tensors, " tensors, more than the ", left(),
                                    " bytes left after the metadata can hold"));
  }
  r->tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    ASSIGN_OR_RETURN(t.name, ReadString(absl::StrCat("tensor info ", i, " (name)")));
    const std::string what = absl::StrCat("tensor ", Quoted(t.name));
    if (t.name.size() > kGgufMaxNameBytes) {
      return Invalid(path_, absl::StrCat(what, ": name is ", t.name.size(),
                                         " bytes, ggml allows at most ", kGgufMaxNameBytes));
    }
    ASSIGN_OR_RETURN(uint64_t n_dims, Read(4, absl::StrCat(what, " (n_dims)")));
    if (n_dims > kGgufMaxDims) {
      return Invalid(path_, absl::StrCat(what, ": ", n_dims, " dimensions, ggml allows at most ",
                                         kGgufMaxDims));
    }
    uint64_t numel = 1;
    for (uint64_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(uint64_t dim, Read(8, absl::StrCat(what, " (dims)")));
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, dim, &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Invalid(path_,
                       absl::StrCat(what, ": dimensions overflow int64 (dim ", d, " = ", dim, ")"));
      }
      t.dims.push_back(dim);
    }
    ASSIGN_OR_RETURN(uint64_t ggml_type, Read(4, absl::StrCat(what, " (type)")));
    t.ggml_type = static_cast<uint32_t>(ggml_type);
    auto dtype = DTypeFromGgmlType(t.ggml_type);
    if (!dtype.ok()) return Invalid(path_, absl::StrCat(what, ": ", dtype.status().message()));
    t.dtype = *dtype;
    ASSIGN_OR_RETURN(t.offset, Read(8, absl::StrCat(what, " (offset)")));

    const uint64_t block = static_cast<uint64_t>(DTypeBlockElems(t.dtype));
    const uint64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % block != 0) {
      return Invalid(path_,
                     absl::StrCat(what, ": rows of ", row, " elements are not a whole number of ",
                                  GgmlTypeName(t.ggml_type), " blocks of ", block));
    }
    // numel * block_bytes / block without overflow: numel is a multiple of block.
    if (__builtin_mul_overflow(numel / block, static_cast<uint64_t>(DTypeBlockBytes(t.dtype)),
                               &t.nbytes)) {
      return Invalid(path_, absl::StrCat(what, ": size overflows 64 bits"));
    }
    if (!r->tensor_index_.emplace(t.name, r->tensors_.size()).second) {
      return Invalid(path_, absl::StrCat("duplicate tensor name ", Quoted(t.name)));
    }
    r->tensors_.push_back(std::move(t));
  }

  r->data_offset_ = PadTo(pos_, r->alignment_);
  if (!r->tensors_.empty() && r->data_offset_ > size_) {
    return Loss(path_, absl::StrCat("data section would start at byte ", r->data_offset_,
                                    ", past the end of the ", size_, "-byte file"));
  }
  const uint64_t data_size = r->data_offset_ <= size_ ? size_ - r->data_offset_ : 0;
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(r->tensors_.size());
  for (const GgufTensorInfo& t : r->tensors_) {
    const std::string what = absl::StrCat("tensor ", Quoted(t.name));
    if (t.offset % r->alignment_ != 0) {
      return Invalid(path_, absl::StrCat(what, ": data offset ", t.offset,
                                         " is not a multiple of the alignment ", r->alignment_));
    }
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return Loss(path_, absl::StrCat(what, ": data [", t.offset, ", +", t.nbytes,
                                      ") lies outside the data section of ", data_size,
                                      " bytes (file truncated?)"));
    }
    if (t.nbytes) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset) {
      return Invalid(path_,
                     absl::StrCat("tensors ", Quoted(by_offset[i - 1]->name), " and ",
                                  Quoted(by_offset[i]->name), " overlap in the data section"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GgufReader>> GgufReader::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const uint8_t* data = file->data();
  const size_t size = file->size();
  return FromMemory(path, data, size, std::move(file));
}

absl::StatusOr<std::unique_ptr<GgufReader>> GgufReader::FromMemory(
    const std::string& name, const uint8_t* data, size_t size, std::shared_ptr<const void> owner) {
  std::unique_ptr<GgufReader> r(new GgufReader());
  r->path_ = name;
  r->data_ = data;
  r->size_ = size;
  r->owner_ = std::move(owner);
  GgufParser parser(r->path_, data, size);
  RETURN_IF_ERROR(parser.Parse(r.get()));
  return r;
}

const GgufValue* GgufReader::Find(const std::string& key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {
// Looks up `key` and applies `as`, with errors naming the file and key.
template <typename T, typename F>
absl::StatusOr<T> TypedGet(const GgufReader& r, const std::string& key, F as) {
  const GgufValue* v = r.Find(key);
  if (v == nullptr)
    return absl::NotFoundError(absl::StrCat(r.path(), ": metadata key ", key, " is missing"));
  absl::StatusOr<T> out = as(*v);
  if (!out.ok()) {
    return absl::Status(out.status().code(), absl::StrCat(r.path(), ": metadata key ", key, " ",
                                                          out.status().message()));
  }
  return out;
}
}  // namespace

absl::StatusOr<int64_t> GgufReader::GetInt(const std::string& key) const {
  return TypedGet<int64_t>(*this, key, [](const GgufValue& v) { return v.AsInt(); });
}
absl::StatusOr<double> GgufReader::GetFloat(const std::string& key) const {
  return TypedGet<double>(*this, key, [](const GgufValue& v) { return v.AsFloat(); });
}
absl::StatusOr<std::string> GgufReader::GetString(const std::string& key) const {
  return TypedGet<std::string>(*this, key, [](const GgufValue& v) { return v.AsString(); });
}
absl::StatusOr<bool> GgufReader::GetBool(const std::string& key) const {
  return TypedGet<bool>(*this, key, [](const GgufValue& v) { return v.AsBool(); });
}
absl::StatusOr<std::vector<std::string>> GgufReader::GetStringArray(const std::string& key) const {
  return TypedGet<std::vector<std::string>>(*this, key,
                                            [](const GgufValue& v) { return v.AsStringArray(); });
}
absl::StatusOr<std::vector<int64_t>> GgufReader::GetIntArray(const std::string& key) const {
  return TypedGet<std::vector<int64_t>>(*this, key,
                                        [](const GgufValue& v) { return v.AsIntArray(); });
}
absl::StatusOr<std::vector<double>> GgufReader::GetFloatArray(const std::string& key) const {
  return TypedGet<std::vector<double>>(*this, key,
                                       [](const GgufValue& v) { return v.AsFloatArray(); });
}

const GgufTensorInfo* GgufReader::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<Tensor> GgufReader::Get(const std::string& name) const {
  const GgufTensorInfo* t = FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", Quoted(name)));
  const uint8_t* p = TensorData(*t);
  // Block structs hold f16/f32 fields; scalar types need their own size.
  const size_t need =
      IsBlockQuantized(t->dtype) ? 4 : std::min<size_t>(8, DTypeBlockBytes(t->dtype));
  if (reinterpret_cast<uintptr_t>(p) % need == 0)
    return Tensor::View(t->dtype, t->shape(), p, owner_, TensorLocation::kMapped);
  Tensor copy = Tensor::Zeros(t->dtype, t->shape());
  if (t->nbytes) std::memcpy(copy.mutable_raw(), p, t->nbytes);
  return copy;
}

// ---------------------------------------------------------------- writing

GgufWriter::GgufWriter(const std::string& architecture) {
  AddMetadata("general.architecture", GgufValue::String(architecture));
}

void GgufWriter::AddMetadata(const std::string& key, GgufValue value) {
  auto [it, inserted] = metadata_index_.emplace(key, metadata_.size());
  if (inserted) {
    metadata_.emplace_back(key, std::move(value));
  } else {
    metadata_[it->second].second = std::move(value);
  }
}

uint64_t GgufWriter::alignment() const {
  auto it = metadata_index_.find("general.alignment");
  if (it == metadata_index_.end()) return kGgufDefaultAlignment;
  const GgufValue& v = metadata_[it->second].second;
  if (v.type() != GgufType::kU32) return kGgufDefaultAlignment;
  return static_cast<uint64_t>(*v.AsInt());
}

absl::Status GgufWriter::AddRawTensor(const std::string& name, DType dtype, const Shape& shape,
                                      const void* data, size_t nbytes,
                                      std::shared_ptr<const void> owner) {
  const std::string what = absl::StrCat("GGUF tensor ", Quoted(name));
  if (name.size() > kGgufMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": name is ", name.size(), " bytes, ggml allows at most ", kGgufMaxNameBytes));
  }
  if (tensor_index_.count(name))
    return absl::InvalidArgumentError(absl::StrCat(what, " added twice"));
  auto ggml_type = GgmlTypeFromDType(dtype);
  if (!ggml_type.ok())
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", ggml_type.status().message()));
  if (shape.size() > static_cast<size_t>(kGgufMaxDims)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeString(shape),
                                                   " has more than ", kGgufMaxDims, " dimensions"));
  }
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative dimension in ", ShapeString(shape)));
  }
  const int64_t row = shape.empty() ? 1 : shape.back();
  const int block = DTypeBlockElems(dtype);
  if (row % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": rows of ", row, " elements (shape ", ShapeString(shape),
        ") are not a whole number of ", std::string(DTypeName(dtype)), " blocks of ", block));
  }
  const size_t expected = DTypeBytes(dtype, NumElements(shape));
  if (nbytes != expected) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", nbytes, " bytes given, shape ",
                                                   ShapeString(shape), " needs ", expected));
  }
  if (nbytes > 0 && data == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(what, ": no data"));
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back(PendingTensor{name, dtype, shape, data, nbytes, std::move(owner), Tensor()});
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(const std::string& name, const Tensor& tensor) {
  RETURN_IF_ERROR(
      AddRawTensor(name, tensor.dtype(), tensor.shape(), tensor.raw(), tensor.nbytes(), nullptr));
  tensors_.back().tensor = tensor;
  return absl::OkStatus();
}

absl::StatusOr<std::string> GgufWriter::HeaderBytes() const {
  uint64_t align = kGgufDefaultAlignment;
  if (auto it = metadata_index_.find("general.alignment"); it != metadata_index_.end()) {
    const GgufValue& v = metadata_[it->second].second;
    if (v.type() != GgufType::kU32) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment must be a u32 (llama.cpp and gguf-py "
                       "refuse other types), got ",
                       TypeDescription(v)));
    }
    align = static_cast<uint64_t>(*v.AsInt());
    if (align == 0 || (align & (align - 1)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment ", align, " is not a power of two"));
    }
  }
  std::string out = "GGUF";
  AppendLE(&out, kGgufVersion, 4);
  AppendLE(&out, tensors_.size(), 8);
  AppendLE(&out, metadata_.size(), 8);
  for (const auto& [key, value] : metadata_) {
    AppendString(&out, key);
    value.AppendTo(&out);
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    AppendString(&out, t.name);
    AppendLE(&out, t.shape.size(), 4);
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)
      AppendLE(&out, static_cast<uint64_t>(*it), 8);
    AppendLE(&out, *GgmlTypeFromDType(t.dtype), 4);
    AppendLE(&out, offset, 8);
    offset += PadTo(t.nbytes, align);
  }
  out.resize(PadTo(out.size(), align), '\0');
  return out;
}

absl::Status GgufWriter::Write(const std::string& path) const {
  auto header = HeaderBytes();
  if (!header.ok())
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  const uint64_t align = alignment();
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
  RETURN_IF_ERROR(file->Write(*header));
  const std::string zeros(align, '\0');
  for (const PendingTensor& t : tensors_) {
    RETURN_IF_ERROR(file->Write(t.data, t.nbytes));
    RETURN_IF_ERROR(file->Write(zeros.data(), PadTo(t.nbytes, align) - t.nbytes));
  }
  return file->Commit();
}

}  // namespace retort
