// GGUF metadata values: the typed key/value pairs of a GGUF file's header
// (formats/gguf.md lists the types). A value is a scalar, a string, or an
// array of one element type, held as its bytes in the file; GgufReader hands
// them out and GgufWriter takes them (formats/gguf.h).
//
// Thread-safety: a value is immutable once built and safe to share.
#ifndef RETORT_FORMATS_GGUF_VALUE_H_
#define RETORT_FORMATS_GGUF_VALUE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace retort {

// Metadata value types, with their ids in the file.
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64,
};

// "u8", "string", "array", ...; "type 77" for an id outside the enum.
std::string GgufTypeName(GgufType t);

// One metadata value: a scalar, a string, or an array of one element type
// (arrays of arrays are allowed, as gguf-py writes and reads them; llama.cpp
// refuses them). Numeric arrays are stored packed (as in the file), so a
// value costs about as much memory as its bytes in the file.
class GgufValue {
 public:
  GgufValue() = default;  // u8 0

  static GgufValue U8(uint8_t v);
  static GgufValue I8(int8_t v);
  static GgufValue U16(uint16_t v);
  static GgufValue I16(int16_t v);
  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue F32(float v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue U64(uint64_t v);
  static GgufValue I64(int64_t v);
  static GgufValue F64(double v);
  // REQUIRES: every item has type `elem` (items of another type are converted
  // as by the scalar constructors where that is possible, else become zero of
  // `elem`; use the typed helpers below where you can).
  static GgufValue Array(GgufType elem, std::vector<GgufValue> items);
  static GgufValue StringArray(std::vector<std::string> items);
  static GgufValue I32Array(const std::vector<int32_t>& items);
  static GgufValue F32Array(const std::vector<float>& items);
  static GgufValue U8Array(const std::vector<uint8_t>& items);
  static GgufValue I64Array(const std::vector<int64_t>& items);

  GgufType type() const { return type_; }
  // Element type of an array (meaningless for scalars).
  GgufType elem_type() const { return elem_type_; }
  bool is_array() const { return type_ == GgufType::kArray; }
  // Array length (0 for scalars).
  size_t size() const;
  // Element i of an array as a value. REQUIRES: is_array(), i < size().
  GgufValue Item(size_t i) const;

  // Any integer type (u64 above INT64_MAX is an error); not bool, not float.
  absl::StatusOr<int64_t> AsInt() const;
  // f32/f64 or any integer type.
  absl::StatusOr<double> AsFloat() const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<std::string> AsString() const;
  absl::StatusOr<std::vector<std::string>> AsStringArray() const;
  absl::StatusOr<std::vector<int64_t>> AsIntArray() const;
  absl::StatusOr<std::vector<double>> AsFloatArray() const;
  // Packed little-endian payload of a numeric/bool array (as in the file).
  const std::string& packed() const { return bytes_; }

  // One line: `u32 4096`, `string "llama"`, `[i32 × 3] [1, 2, 3]`; at most
  // max_items array items and shortened, escaped strings.
  std::string DebugString(size_t max_items = 8) const;

  // The value as GGUF bytes: type id (if with_type) then payload.
  void AppendTo(std::string* out, bool with_type = true) const;

  // Same type and same bytes (floats compare bit-wise).
  friend bool operator==(const GgufValue& a, const GgufValue& b);
  friend bool operator!=(const GgufValue& a, const GgufValue& b) { return !(a == b); }

 private:
  friend class GgufParser;
  GgufType type_ = GgufType::kU8;
  GgufType elem_type_ = GgufType::kU8;
  uint64_t scalar_ = 0;               // bit pattern of a scalar, zero-extended
  std::string bytes_;                 // a string's bytes, or a numeric array's packed elements
  std::vector<std::string> strings_;  // array of strings
  std::vector<GgufValue> items_;      // array of arrays
};

}  // namespace retort

#endif  // RETORT_FORMATS_GGUF_VALUE_H_
