// UTF-8 and Unicode helpers for the tokenizer.
//
// Byte-level BPE vocabularies (GPT-2 and everything after it) store tokens as
// strings of "byte characters": each of the 256 byte values is mapped to a
// printable code point (space -> U+0120 'Ġ', newline -> U+010A 'Ċ'), so that
// any byte string becomes a valid Unicode string. ByteToUnicode/UnicodeToByte
// implement that fixed table.
//
// Normalization (NFC/NFD/NFKC/NFKD, lower-casing) comes from utf8proc; Qwen2's
// tokenizer.json asks for NFC, and skipping it silently changes the ids of
// decomposed text (e.g. "e" + U+0301).
//
// All functions are thread-safe.
#ifndef RETORT_MODEL_UNICODE_H_
#define RETORT_MODEL_UNICODE_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace retort {

// Decodes one UTF-8 character starting at s[i]; returns its byte length
// (1..4), or 0 if the bytes there are not a well-formed UTF-8 sequence.
// Writes the code point to *cp when non-zero is returned.
int DecodeUtf8Char(std::string_view s, size_t i, char32_t* cp);

// Appends the UTF-8 encoding of cp (which must be a valid scalar value).
void AppendUtf8(char32_t cp, std::string* out);

// True if s is well-formed UTF-8 (no surrogates, no overlongs).
bool IsValidUtf8(std::string_view s);

// Returns s with every ill-formed subsequence replaced by U+FFFD, using the
// "maximal subpart" rule of Unicode (the rule of Rust's String::from_utf8_lossy
// and Python's errors="replace"), so decoded text matches the reference
// tokenizers byte for byte.
std::string Utf8Lossy(std::string_view s);

// The GPT-2 byte <-> character table. ByteToUnicode(b) is the UTF-8 encoding
// of the character standing for byte b.
const std::array<std::string, 256>& ByteToUnicodeTable();
// Code point -> byte, or -1 if the code point stands for no byte.
int UnicodeToByte(char32_t cp);

// Appends the byte-level image of raw bytes (each byte -> its character).
void AppendByteLevel(std::string_view bytes, std::string* out);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// Normalizes valid UTF-8 text. REQUIRES: IsValidUtf8(s).
std::string Normalize(std::string_view s, NormalForm form);
// Simple (one-to-one) lower-casing of every code point.
std::string Lowercase(std::string_view s);

}  // namespace retort

#endif  // RETORT_MODEL_UNICODE_H_
