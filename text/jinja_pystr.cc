#include "text/jinja_pystr.h"

#include <utf8proc.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/utf8.h"

namespace retort::jinja {
namespace {

utf8proc_category_t Category(char32_t c) {
  return static_cast<utf8proc_category_t>(utf8proc_category(static_cast<utf8proc_int32_t>(c)));
}

char32_t ToUpper(char32_t c) {
  return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}
char32_t ToLower(char32_t c) {
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}
char32_t ToTitle(char32_t c) {
  return static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c)));
}

// Characters of category No that Python counts as digits (Numeric_Type=Digit),
// from CPython 3.11's unicodedata (Unicode 14): superscripts, circled digits...
constexpr char32_t kOtherDigits[][2] = {
    {0xB2, 0xB3},       {0xB9, 0xB9},       {0x1369, 0x1371},   {0x19DA, 0x19DA},
    {0x2070, 0x2070},   {0x2074, 0x2079},   {0x2080, 0x2089},   {0x2460, 0x2468},
    {0x2474, 0x247C},   {0x2488, 0x2490},   {0x24EA, 0x24EA},   {0x24F5, 0x24FD},
    {0x24FF, 0x24FF},   {0x2776, 0x277E},   {0x2780, 0x2788},   {0x278A, 0x2792},
    {0x10A40, 0x10A43}, {0x10E60, 0x10E68}, {0x11052, 0x1105A}, {0x1F100, 0x1F10A}};

}  // namespace

// Python's whitespace: bidirectional class WS, B or S, or category Zs.
bool IsPyWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

bool IsPyAlpha(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  switch (Category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}

bool IsPyDecimal(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return Category(c) == UTF8PROC_CATEGORY_ND;
}

bool IsPyDigit(char32_t c) {
  if (IsPyDecimal(c)) return true;
  return std::any_of(std::begin(kOtherDigits), std::end(kOtherDigits),
                     [c](const char32_t* r) { return c >= r[0] && c <= r[1]; });
}

bool IsPyNumeric(char32_t c) {
  const utf8proc_category_t cat = Category(c);
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

bool IsPyAlnum(char32_t c) { return IsPyAlpha(c) || IsPyNumeric(c); }

// Python's Uppercase/Lowercase properties add a few letters and symbols to Lu
// and Ll (circled letters, 'ª'); utf8proc knows them by their case mappings.
bool IsPyUpper(char32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z';
  return Category(c) == UTF8PROC_CATEGORY_LU || utf8proc_isupper(static_cast<utf8proc_int32_t>(c));
}

bool IsPyLower(char32_t c) {
  if (c < 0x80) return c >= 'a' && c <= 'z';
  return Category(c) == UTF8PROC_CATEGORY_LL || utf8proc_islower(static_cast<utf8proc_int32_t>(c));
}

bool IsPyTitle(char32_t c) { return c >= 0x80 && Category(c) == UTF8PROC_CATEGORY_LT; }

bool IsPyCased(char32_t c) { return IsPyUpper(c) || IsPyLower(c) || IsPyTitle(c); }

std::string Upper(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  if (IsAscii(s)) {
    for (char c : s) out.push_back((c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c);
    return out;
  }
  Utf8Reader reader(s);
  for (char32_t c; reader.Next(&c);) {
    if (c == 0xdf) {
      out += "SS";  // Python's full mapping; utf8proc's simple one keeps 'ß'
    } else {
      AppendUtf8(ToUpper(c), &out);
    }
  }
  return out;
}

std::string Lower(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  if (IsAscii(s)) {
    for (char c : s) out.push_back((c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c);
    return out;
  }
  Utf8Reader reader(s);
  for (char32_t c; reader.Next(&c);) AppendUtf8(ToLower(c), &out);
  return out;
}

std::string Capitalize(const std::string& s) {
  std::u32string cps = DecodeUtf8Lossy(s);
  for (size_t i = 0; i < cps.size(); ++i) cps[i] = i == 0 ? ToTitle(cps[i]) : ToLower(cps[i]);
  return EncodeUtf8(cps);
}

std::string Title(const std::string& s) {
  std::u32string cps = DecodeUtf8Lossy(s);
  bool prev_cased = false;
  for (char32_t& c : cps) {
    const bool cased = IsPyCased(c);
    c = prev_cased ? ToLower(c) : ToTitle(c);
    prev_cased = cased;
  }
  return EncodeUtf8(cps);
}

// The three predicates follow CPython's unicodeobject.c loop for loop.
namespace {
// isupper() / islower(): at least one character of the case, none of the
// other case and no titlecase.
bool AllCasedAre(const std::string& s, bool (*is_case)(char32_t), bool (*is_other)(char32_t)) {
  bool cased = false;
  Utf8Reader reader(s);
  for (char32_t c; reader.Next(&c);) {
    if (is_other(c) || IsPyTitle(c)) return false;
    cased |= is_case(c);
  }
  return cased;
}
}  // namespace

bool IsUpperString(const std::string& s) { return AllCasedAre(s, IsPyUpper, IsPyLower); }

bool IsLowerString(const std::string& s) { return AllCasedAre(s, IsPyLower, IsPyUpper); }

bool IsTitleString(const std::string& s) {
  bool cased = false, prev_cased = false;
  Utf8Reader reader(s);
  for (char32_t c; reader.Next(&c);) {
    if (IsPyUpper(c) || IsPyTitle(c)) {
      if (prev_cased) return false;
      prev_cased = cased = true;
    } else if (IsPyLower(c)) {
      if (!prev_cased) return false;
      prev_cased = cased = true;
    } else {
      prev_cased = false;
    }
  }
  return cased;
}

// Python str.strip / lstrip / rstrip. `chars` null: whitespace.
std::string Strip(const std::string& s, const std::string* chars, bool left, bool right) {
  std::u32string cps = DecodeUtf8Lossy(s);
  std::u32string set;
  if (chars) set = DecodeUtf8Lossy(*chars);
  auto strip_me = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : IsPyWhitespace(c);
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_me(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_me(cps[e - 1])) --e;
  }
  return EncodeUtf8(cps.substr(b, e - b));
}

std::vector<std::string> SplitWhitespace(const std::string& s, int64_t maxsplit) {
  std::u32string cps = DecodeUtf8Lossy(s);
  std::vector<std::string> out;
  size_t i = 0;
  const size_t n = cps.size();
  while (true) {
    while (i < n && IsPyWhitespace(cps[i])) ++i;
    if (i >= n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      size_t e = n;
      while (e > i && IsPyWhitespace(cps[e - 1])) --e;
      out.push_back(EncodeUtf8(cps.substr(i, e - i)));
      break;
    }
    size_t j = i;
    while (j < n && !IsPyWhitespace(cps[j])) ++j;
    out.push_back(EncodeUtf8(cps.substr(i, j - i)));
    i = j;
  }
  return out;
}

std::vector<std::string> SplitSep(const std::string& s, const std::string& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t start = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    size_t p = s.find(sep, start);
    if (p == std::string::npos) break;
    out.push_back(s.substr(start, p - start));
    start = p + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

std::vector<std::string> RSplitSep(const std::string& s, const std::string& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    if (end < sep.size()) break;
    size_t p = s.rfind(sep, end - sep.size());
    if (p == std::string::npos) break;
    out.push_back(s.substr(p + sep.size(), end - p - sep.size()));
    end = p;
  }
  out.push_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count) {
  if (from.empty()) {
    std::u32string cps = DecodeUtf8Lossy(s);
    std::string out;
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (i < cps.size()) AppendUtf8(cps[i], &out);
    }
    return out;
  }
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t p = s.find(from, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += to;
    start = p + from.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::vector<std::string> SplitLines(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      parts.push_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < s.size()) parts.push_back(s.substr(start));
  return parts;
}

int64_t CodepointLength(const std::string& s) { return static_cast<int64_t>(Utf8Length(s)); }

std::string ReprString(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  std::u32string cps = DecodeUtf8Lossy(s);
  for (char32_t c : cps) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<char32_t>(quote)) {
      out += '\\';
      out += quote;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0xa0) || c == 0xad) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(c));
      out += buf;
    } else {
      AppendUtf8(c, &out);
    }
  }
  out += quote;
  return out;
}

// Python int() of a string, as Jinja's int filter tries it.
std::optional<int64_t> ParseInt(const std::string& text, int base) {
  std::string s = Strip(text, nullptr, true, true);
  std::string digits;
  for (char c : s) {
    if (c != '_') digits.push_back(c);
  }
  if (digits.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(digits.c_str(), &end, base);
  if (errno != 0 || end != digits.c_str() + digits.size()) return std::nullopt;
  return v;
}

std::optional<double> ParseFloat(const std::string& text) {
  std::string s = Strip(text, nullptr, true, true);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

}  // namespace retort::jinja
