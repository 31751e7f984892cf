#include "serve/text_util.h"

#include <algorithm>
#include <cctype>

#include "model/unicode.h"

namespace retort::serve {

std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

size_t CountCodePoints(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

size_t PartialSuffixLength(std::string_view text, std::string_view s) {
  if (s.empty()) return 0;
  for (size_t n = std::min(text.size(), s.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == s.substr(0, n)) return n;
  }
  return 0;
}

bool EndsInsideReasoning(std::string_view rendered) {
  while (!rendered.empty() && std::isspace(static_cast<unsigned char>(rendered.back())))
    rendered.remove_suffix(1);
  constexpr std::string_view kOpenTag = "<think>";
  return rendered.size() >= kOpenTag.size() &&
         rendered.substr(rendered.size() - kOpenTag.size()) == kOpenTag;
}

std::string TokenBytes(const Tokenizer& tokenizer, int32_t id) {
  const std::string piece = tokenizer.TokenText(id);
  std::string bytes;
  char32_t cp;
  for (size_t i = 0; i < piece.size();) {
    const int len = DecodeUtf8Char(piece, i, &cp);
    const int b = len > 0 ? UnicodeToByte(cp) : -1;
    if (b < 0) return piece;
    bytes.push_back(static_cast<char>(b));
    i += len;
  }
  return bytes;
}

}  // namespace retort::serve
