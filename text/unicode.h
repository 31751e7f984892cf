// Unicode helpers for the tokenizer. The UTF-8 codec itself (DecodeUtf8Char,
// AppendUtf8, IsValidUtf8, Utf8Lossy, ...) is core/utf8.h, included here.
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
#ifndef RETORT_TEXT_UNICODE_H_
#define RETORT_TEXT_UNICODE_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/utf8.h"

namespace retort {

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

#endif  // RETORT_TEXT_UNICODE_H_
