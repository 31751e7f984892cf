// Private to formats/gguf*.cc: GGUF's byte encoding (little-endian integers,
// length-prefixed strings, element widths, padding), the one-line messages
// that quote bytes from a file, and GgufParser, which builds GgufValue and
// fills GgufReader from their private members. Not for other modules: the
// public API is formats/gguf.h.
#ifndef RETORT_FORMATS_GGUF_INTERNAL_H_
#define RETORT_FORMATS_GGUF_INTERNAL_H_

#include <bit>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "formats/gguf.h"

namespace retort {
namespace gguf_internal {

inline constexpr uint32_t kNumGgufTypes = 13;

// Bytes of one element of a fixed-size type; 0 for string and array.
size_t ScalarWidth(GgufType t);
bool IsIntegerType(GgufType t);
inline bool IsFloatType(GgufType t) { return t == GgufType::kF32 || t == GgufType::kF64; }
inline bool IsSignedType(GgufType t) {
  return t == GgufType::kI8 || t == GgufType::kI16 || t == GgufType::kI32 || t == GgufType::kI64;
}
// Sign-extends a zero-extended bit pattern of `t`.
int64_t SignExtend(uint64_t bits, GgufType t);

// A scalar's bit pattern, zero-extended to 64 bits, and back.
inline uint64_t F32Bits(float f) { return std::bit_cast<uint32_t>(f); }
inline uint64_t F64Bits(double d) { return std::bit_cast<uint64_t>(d); }
inline float BitsF32(uint64_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits)); }
inline double BitsF64(uint64_t bits) { return std::bit_cast<double>(bits); }

inline uint64_t LoadLE(const uint8_t* p, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}
inline void AppendLE(std::string* out, uint64_t v, size_t width) {
  for (size_t i = 0; i < width; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
// u64 length, then the bytes.
inline void AppendString(std::string* out, const std::string& s) {
  AppendLE(out, s.size(), 8);
  out->append(s);
}

inline uint64_t PadTo(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

// Error messages stay on one line and printable even when they quote bytes
// from a hostile file: at most `max_len` characters, then "...".
std::string Escaped(const std::string& s, size_t max_len);
inline std::string Quoted(const std::string& s) {
  return absl::StrCat("\"", Escaped(s, 120), "\"");
}
// "u32", or "array of string" for an array.
std::string TypeDescription(const GgufValue& v);

// "<path>: <problem>" as InvalidArgument (malformed content) or DataLoss (the
// file ends early, offsets that do not fit).
inline absl::Status Invalid(const std::string& path, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}
inline absl::Status Loss(const std::string& path, const std::string& problem) {
  return absl::DataLossError(absl::StrCat(path, ": ", problem));
}

}  // namespace gguf_internal

// Builds values and fills a reader: a friend of both, so parsing and
// construction share the private representation. The static builders are
// used by gguf_value.cc; the parser itself is in gguf_reader.cc.
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
  absl::Status Need(uint64_t n, const std::string& what) const;
  absl::StatusOr<uint64_t> Read(size_t width, const std::string& what);
  absl::StatusOr<std::string> ReadString(const std::string& what);
  absl::StatusOr<GgufType> ReadType(const std::string& what);
  absl::StatusOr<GgufValue> ReadValue(GgufType type, const std::string& what, int depth);

  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

}  // namespace retort

#endif  // RETORT_FORMATS_GGUF_INTERNAL_H_
