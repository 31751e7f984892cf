// A small byte-level tokenizer for tests of decoding and streaming: id b
// (0..255) is the byte b, so any byte sequence (a character cut anywhere)
// can be written as ids. Above the bytes: "<|end|>" (special, id 256),
// "<think>" and "</think>" (added, not special: 257, 258) and "ab" (259).
#ifndef RETORT_TESTS_MODEL_BYTE_TOKENIZER_H_
#define RETORT_TESTS_MODEL_BYTE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace retort::testing {

inline constexpr int32_t kEndId = 256;
inline constexpr int32_t kThinkId = 257;
inline constexpr int32_t kEndThinkId = 258;
inline constexpr int32_t kAbId = 259;

// byte_level_decoder = false gives a tokenizer.json without a decoder
// (Decode then joins the raw pieces with spaces).
inline std::unique_ptr<Tokenizer> MakeByteTokenizer(bool byte_level_decoder = true) {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToUnicodeTable()[b]] = b;
  vocab["ab"] = kAbId;
  nlohmann::ordered_json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
      {"added_tokens",
       {{{"id", kEndId}, {"content", "<|end|>"}, {"special", true}},
        {{"id", kThinkId}, {"content", "<think>"}, {"special", false}},
        {{"id", kEndThinkId}, {"content", "</think>"}, {"special", false}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}}};
  if (byte_level_decoder) j["decoder"] = {{"type", "ByteLevel"}};
  auto t = Tokenizer::FromJsonString(j.dump(), "byte_tokenizer.json");
  return t.ok() ? *std::move(t) : nullptr;
}

// The ids of s's bytes, one token per byte.
inline std::vector<int32_t> ByteIds(std::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

}  // namespace retort::testing

#endif  // RETORT_TESTS_MODEL_BYTE_TOKENIZER_H_
