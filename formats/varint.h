// Base-128 varints (protobuf's encoding): the length prefix of the records in
// a trace shard and the integers of the top-k bytes.
#ifndef RETORT_FORMATS_VARINT_H_
#define RETORT_FORMATS_VARINT_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace retort {

inline void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Reads one varint from the front of *in and advances it; false (and *in
// consumed up to the bad byte) when the input ends inside the varint or it
// is longer than 64 bits.
inline bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const auto byte = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

}  // namespace retort

#endif  // RETORT_FORMATS_VARINT_H_
