#include "serve/text_util.h"

#include "text/unicode.h"

namespace retort::serve {

std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
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
