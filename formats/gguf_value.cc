// formats/gguf_value.h: building, reading and encoding metadata values.
#include "formats/gguf_value.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "formats/gguf_internal.h"

namespace retort {
namespace gguf_internal {

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

std::string TypeDescription(const GgufValue& v) {
  return v.is_array() ? absl::StrCat("array of ", GgufTypeName(v.elem_type()))
                      : GgufTypeName(v.type());
}

}  // namespace gguf_internal

using gguf_internal::AppendLE;
using gguf_internal::AppendString;
using gguf_internal::BitsF32;
using gguf_internal::BitsF64;
using gguf_internal::Escaped;
using gguf_internal::F32Bits;
using gguf_internal::F64Bits;
using gguf_internal::IsFloatType;
using gguf_internal::IsIntegerType;
using gguf_internal::IsSignedType;
using gguf_internal::LoadLE;
using gguf_internal::ScalarWidth;
using gguf_internal::SignExtend;
using gguf_internal::TypeDescription;

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

absl::StatusOr<std::vector<std::string>> GgufValue::AsStringArray() const {
  if (type_ != GgufType::kArray || elem_type_ != GgufType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", TypeDescription(*this), ", expected array of string"));
  }
  return strings_;
}

namespace {
// Every item of `v` converted by `as`, when `v` is an array whose element
// type `elem_ok` accepts; else an error saying it expected `expected`.
template <typename T>
absl::StatusOr<std::vector<T>> ItemsAs(const GgufValue& v, bool elem_ok, const char* expected,
                                       absl::StatusOr<T> (GgufValue::*as)() const) {
  if (!v.is_array() || !elem_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", TypeDescription(v), ", expected ", expected));
  }
  std::vector<T> out(v.size());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSIGN_OR_RETURN(out[i], (v.Item(i).*as)());
  }
  return out;
}
}  // namespace

absl::StatusOr<std::vector<int64_t>> GgufValue::AsIntArray() const {
  return ItemsAs<int64_t>(*this, IsIntegerType(elem_type_), "an array of integers",
                          &GgufValue::AsInt);
}

absl::StatusOr<std::vector<double>> GgufValue::AsFloatArray() const {
  return ItemsAs<double>(*this, IsIntegerType(elem_type_) || IsFloatType(elem_type_),
                         "an array of numbers", &GgufValue::AsFloat);
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

}  // namespace retort
