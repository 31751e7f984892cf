// The one UTF-8 codec of retort: decoding with validity checks, encoding,
// counting code points, finding where a stream of bytes stops being valid and
// walking text one code point at a time.
//
// "Well-formed" is Unicode's definition (Table 3-7): no overlong forms, no
// surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequence.
// Where ill-formed bytes must become text, each "maximal subpart" becomes one
// U+FFFD, the rule of Python's errors="replace" and Rust's from_utf8_lossy, so
// text decoded here matches the reference tokenizers byte for byte.
//
// Byte offsets are std::string_view indices throughout. All functions are
// pure and thread-safe.
#ifndef RETORT_CORE_UTF8_H_
#define RETORT_CORE_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace retort {

inline constexpr char32_t kReplacementChar = 0xFFFD;
inline constexpr char kReplacementUtf8[] = "\xEF\xBF\xBD";

// Decodes one character starting at s[i]; returns its byte length (1..4), or
// 0 when the bytes there are not a well-formed sequence (or i is past the
// end). Writes the code point to *cp only when non-zero is returned.
int DecodeUtf8Char(std::string_view s, size_t i, char32_t* cp);

// Appends the encoding of cp. REQUIRES: cp is a Unicode scalar value (not a
// surrogate, at most U+10FFFF).
void AppendUtf8(char32_t cp, std::string* out);
std::string EncodeUtf8(std::u32string_view cps);

// True if every byte is below 0x80 (then bytes and code points coincide).
bool IsAscii(std::string_view s);
// True if s is well-formed UTF-8.
bool IsValidUtf8(std::string_view s);
// Length of the longest well-formed prefix: the byte offset of the first
// ill-formed sequence, s.size() when there is none.
size_t ValidUtf8Prefix(std::string_view s);

// Number of code points, counting each lead or stray byte once (exact for
// well-formed text, what Python's len() gives).
size_t Utf8Length(std::string_view s);

// Byte length of the longest prefix of s[i..] that is the start of some
// well-formed sequence (at least 1 when i < s.size()): the bytes one U+FFFD
// replaces.
size_t Utf8MaximalSubpart(std::string_view s, size_t i);

// How many trailing bytes of s are a well-formed sequence cut short (0..3):
// what a stream should hold back until the next bytes arrive. 0 when s ends
// on a complete character or on bytes that could never become one.
size_t IncompleteUtf8Tail(std::string_view s);

// Start of the character that ends just before byte offset i: i - 1 stepped
// back over continuation bytes (never below 0). REQUIRES: i > 0.
size_t PrevUtf8CharStart(std::string_view s, size_t i);
// Byte offset just after the character starting at i: i + 1 stepped over
// continuation bytes.
size_t NextUtf8CharStart(std::string_view s, size_t i);

// s with every maximal ill-formed subpart replaced by U+FFFD.
std::string Utf8Lossy(std::string_view s);
// The code points of s, ill-formed subparts decoded as U+FFFD.
std::u32string DecodeUtf8Lossy(std::string_view s);

// Walks s one code point at a time; ill-formed subparts come out as U+FFFD.
//   Utf8Reader r(text);
//   for (char32_t c; r.Next(&c);) ...
class Utf8Reader {
 public:
  explicit Utf8Reader(std::string_view s) : s_(s) {}
  // Reads the next code point; false at the end of the text.
  bool Next(char32_t* cp);
  // Byte offset of the next code point to read.
  size_t offset() const { return pos_; }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace retort

#endif  // RETORT_CORE_UTF8_H_
