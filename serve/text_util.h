// Small text helpers of the server. They stand in for core/utf8 and
// formats/reasoning, which are being written elsewhere: when those land,
// these switch to them (this file is the one place to change).
#ifndef RETORT_SERVE_TEXT_UTIL_H_
#define RETORT_SERVE_TEXT_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "text/tokenizer.h"

namespace retort::serve {

using Json = nlohmann::ordered_json;

// One line of JSON; invalid UTF-8 in strings becomes U+FFFD instead of
// throwing.
std::string DumpJson(const Json& j);

// The raw bytes a token stands for (byte-level pieces mapped back through the
// GPT-2 table; added tokens as written).
std::string TokenBytes(const Tokenizer& tokenizer, int32_t id);

}  // namespace retort::serve

#endif  // RETORT_SERVE_TEXT_UTIL_H_
