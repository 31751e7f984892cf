#include "text/unicode.h"

#include <utf8proc.h>

#include <cstdlib>

#include "core/utf8.h"

namespace retort {

namespace {
struct ByteTables {
  std::array<std::string, 256> to_unicode;
  std::array<char32_t, 256> code_point;
  ByteTables() {
    // Printable Latin-1 bytes stand for themselves; the other 68 bytes are
    // given the code points 256, 257, ... in byte order.
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      code_point[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      AppendUtf8(code_point[b], &to_unicode[b]);
    }
  }
};
const ByteTables& Tables() {
  static const ByteTables* tables = new ByteTables();
  return *tables;
}
}  // namespace

const std::array<std::string, 256>& ByteToUnicodeTable() { return Tables().to_unicode; }

int UnicodeToByte(char32_t cp) {
  if (cp < 256) {  // a printable byte stands for itself, the others for 256 + k
    return Tables().code_point[cp] == cp ? static_cast<int>(cp) : -1;
  }
  if (cp >= 256 + 68) return -1;
  // Code point 256 + k stands for the k-th non-printable byte.
  static const std::array<int, 68>* inverse = [] {
    auto* inv = new std::array<int, 68>();
    const auto& t = Tables();
    for (int b = 0; b < 256; ++b) {
      if (t.code_point[b] >= 256) (*inv)[t.code_point[b] - 256] = b;
    }
    return inv;
  }();
  return (*inverse)[cp - 256];
}

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const auto& table = Tables().to_unicode;
  for (char c : bytes) out->append(table[static_cast<unsigned char>(c)]);
}

std::string Normalize(std::string_view s, NormalForm form) {
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNfc:
      options |= UTF8PROC_COMPOSE;
      break;
    case NormalForm::kNfd:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case NormalForm::kNfkc:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case NormalForm::kNfkd:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  // Pure ASCII is invariant under every normal form: skip the copy-heavy path.
  if (IsAscii(s)) return std::string(s);
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &result,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) {
    // Only ill-formed input fails, which callers rule out; keep the text.
    return std::string(s);
  }
  std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
  return out;
}

std::string Lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  char32_t cp;
  for (size_t i = 0; i < s.size();) {
    const int len = DecodeUtf8Char(s, i, &cp);
    if (len == 0) {
      out.push_back(s[i++]);
      continue;
    }
    AppendUtf8(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))), &out);
    i += len;
  }
  return out;
}

}  // namespace retort
