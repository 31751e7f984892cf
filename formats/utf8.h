// UTF-8 validation for readers of untrusted text (trace lines, record ids).
#ifndef RETORT_FORMATS_UTF8_H_
#define RETORT_FORMATS_UTF8_H_

#include <cstdint>
#include <string_view>

namespace retort {

// Offset of the first byte that is not part of well-formed UTF-8 (no
// overlongs, no surrogates, nothing above U+10FFFF), or -1.
int64_t FirstInvalidUtf8(std::string_view s);

}  // namespace retort

#endif  // RETORT_FORMATS_UTF8_H_
