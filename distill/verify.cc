#include "distill/verify.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fcntl.h>
#include <pcre2.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

extern char** environ;

namespace retort {
namespace {

using int128 = __int128;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool StartsWithAt(const std::string& s, size_t pos, const char* prefix) {
  size_t n = std::strlen(prefix);
  return pos + n <= s.size() && s.compare(pos, n, prefix) == 0;
}

void ReplaceAll(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

// Removes every occurrence of the control word `word` ("\left") that is not
// the prefix of a longer control word ("\leftarrow").
void RemoveControlWord(std::string& s, const std::string& word) {
  size_t pos = 0;
  while ((pos = s.find(word, pos)) != std::string::npos) {
    size_t end = pos + word.size();
    if (end < s.size() && IsAsciiAlpha(s[end])) {
      pos = end;
      continue;
    }
    s.erase(pos, word.size());
  }
}

// Index one past the '}' that closes the '{' at `open`, or npos. "\{" and
// "\}" are escaped braces and do not count.
size_t MatchBrace(const std::string& s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') {
      ++i;
      continue;
    }
    if (c == '{') ++depth;
    if (c == '}' && --depth == 0) return i + 1;
  }
  return std::string::npos;
}

// Replaces "\cmd{X}" by "X" for every listed command.
void UnwrapCommands(std::string& s, const std::vector<std::string>& commands) {
  for (const std::string& cmd : commands) {
    size_t pos = 0;
    while ((pos = s.find(cmd, pos)) != std::string::npos) {
      size_t open = pos + cmd.size();
      while (open < s.size() && s[open] == ' ') ++open;
      if (open >= s.size() || s[open] != '{') {
        pos += cmd.size();
        continue;
      }
      size_t close = MatchBrace(s, open);
      if (close == std::string::npos) {
        pos += cmd.size();
        continue;
      }
      std::string inner = s.substr(open + 1, close - open - 2);
      s.replace(pos, close - pos, inner);
    }
  }
}

// Unit words: letters, spaces, '.', '/', and a power "^2" / "^{3}" ("m^2",
// "km/h"). No digits elsewhere, so "3 and 4" is not "3" with a unit.
bool LooksLikeUnit(const std::string& t) {
  std::string u = Trim(t);
  if (u.empty() || !IsAsciiAlpha(u[0])) return false;
  for (const char* power : {"^{2}", "^{3}", "^2", "^3"}) ReplaceAll(u, power, "");
  for (char c : u) {
    if (!(IsAsciiAlpha(c) || c == ' ' || c == '.' || c == '/')) return false;
  }
  return true;
}

// Drops a trailing "\text{ cm}" / "\mbox{units}" (optionally with ^2) when
// something precedes it.
void DropTrailingTextUnit(std::string& s) {
  for (const char* cmd : {"\\text", "\\mbox", "\\textrm", "\\mathrm"}) {
    size_t pos = s.rfind(cmd);
    if (pos == std::string::npos || pos == 0) continue;
    size_t open = pos + std::strlen(cmd);
    while (open < s.size() && s[open] == ' ') ++open;
    if (open >= s.size() || s[open] != '{') continue;
    size_t close = MatchBrace(s, open);
    if (close == std::string::npos) continue;
    std::string tail = s.substr(close);
    std::string inner = s.substr(open + 1, close - open - 2);
    // Allow "^2", "^{2}" after the unit.
    std::string t = Trim(tail);
    bool tail_ok = t.empty() || t == "^2" || t == "^3" || t == "^{2}" || t == "^{3}";
    if (!tail_ok || !LooksLikeUnit(inner)) continue;
    if (Trim(s.substr(0, pos)).empty()) continue;
    s.erase(pos);
    return;
  }
}

// "\frac12" -> "\frac{1}{2}", "\sqrt2" -> "\sqrt{2}" (after whitespace
// removal). Single-token arguments are a character or a control word.
std::string BraceShorthandArgs(const std::string& s) {
  std::string out;
  size_t i = 0;
  auto take_arg = [&](size_t& j) {
    if (j >= s.size()) return;
    if (s[j] == '{') {
      size_t close = MatchBrace(s, j);
      if (close == std::string::npos) close = s.size();
      out += BraceShorthandArgs(s.substr(j, close - j));
      j = close;
      return;
    }
    out += '{';
    if (s[j] == '\\') {
      size_t k = j + 1;
      while (k < s.size() && IsAsciiAlpha(s[k])) ++k;
      if (k == j + 1 && k < s.size()) ++k;
      out += s.substr(j, k - j);
      j = k;
    } else {
      out += s[j++];
    }
    out += '}';
  };
  while (i < s.size()) {
    if (StartsWithAt(s, i, "\\frac") && !(i + 5 < s.size() && IsAsciiAlpha(s[i + 5]))) {
      out += "\\frac";
      i += 5;
      take_arg(i);
      take_arg(i);
      continue;
    }
    if (StartsWithAt(s, i, "\\sqrt") && !(i + 5 < s.size() && IsAsciiAlpha(s[i + 5]))) {
      out += "\\sqrt";
      i += 5;
      if (i < s.size() && s[i] == '[') {
        size_t close = s.find(']', i);
        if (close == std::string::npos) close = s.size() - 1;
        out += s.substr(i, close + 1 - i);
        i = close + 1;
      }
      take_arg(i);
      continue;
    }
    if (s[i] == '\\' && i + 1 < s.size()) {
      out += s[i];
      out += s[i + 1];
      i += 2;
      continue;
    }
    out += s[i++];
  }
  return out;
}

// Removes whitespace, keeping one space where it separates a control word
// from a following letter ("\pi r" must not become "\pir").
std::string RemoveWhitespace(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!IsSpace(s[i])) {
      out += s[i];
      continue;
    }
    size_t j = i;
    while (j < s.size() && IsSpace(s[j])) ++j;
    if (j < s.size() && IsAsciiAlpha(s[j]) && !out.empty() && IsAsciiAlpha(out.back())) {
      // Is the letter run at the end of `out` a control word?
      size_t k = out.size();
      while (k > 0 && IsAsciiAlpha(out[k - 1])) --k;
      if (k > 0 && out[k - 1] == '\\') out += ' ';
    }
    i = j - 1;
  }
  return out;
}

// --- Number parsing. ---

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

int128 Gcd128(int128 a, int128 b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b != 0) {
    int128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Builds a reduced MathNumber from a 128-bit rational; inexact when it does
// not fit 64 bits after reduction.
MathNumber FromRational(int128 num, int128 den, bool exact, double value) {
  MathNumber m;
  m.value = value;
  if (!exact || den == 0) return m;
  if (den < 0) {
    num = -num;
    den = -den;
  }
  int128 g = Gcd128(num, den);
  if (g > 1) {
    num /= g;
    den /= g;
  }
  if (num > kInt64Max || num < -kInt64Max || den > kInt64Max) return m;
  m.exact = true;
  m.numerator = static_cast<int64_t>(num);
  m.denominator = static_cast<int64_t>(den);
  m.value = static_cast<double>(m.numerator) / static_cast<double>(m.denominator);
  return m;
}

MathNumber Negate(MathNumber m) {
  m.numerator = -m.numerator;
  m.value = -m.value;
  return m;
}

std::optional<MathNumber> Divide(const MathNumber& a, const MathNumber& b) {
  if (b.value == 0.0 && (!b.exact || b.numerator == 0)) return std::nullopt;
  double value = a.value / b.value;
  if (a.exact && b.exact) {
    return FromRational(int128(a.numerator) * b.denominator, int128(a.denominator) * b.numerator,
                        true, value);
  }
  return FromRational(0, 1, false, value);
}

// Multiplies by 10^e, exactly while it fits.
MathNumber ScaleByPow10(const MathNumber& m, int e) {
  double value = m.value * std::pow(10.0, e);
  if (!m.exact || e > 36 || e < -36) return FromRational(0, 1, false, value);
  int128 p = 1;
  for (int i = 0; i < std::abs(e); ++i) {
    p *= 10;
    if (p > int128(kInt64Max)) return FromRational(0, 1, false, value);
  }
  int128 num = m.numerator, den = m.denominator;
  if (e >= 0) {
    num *= p;
  } else {
    den *= p;
  }
  // Guard against 128-bit overflow before reduction.
  auto too_big = [](int128 v) {
    int128 lim = int128(1) << 120;
    return v > lim || v < -lim;
  };
  if (too_big(num) || too_big(den)) return FromRational(0, 1, false, value);
  return FromRational(num, den, true, value);
}

// Recursive-descent parser over a normalised answer (no whitespace).
class NumberParser {
 public:
  explicit NumberParser(const std::string& s) : s_(s) {}

  std::optional<MathNumber> ParseAll() {
    std::optional<MathNumber> m = ParseExpr();
    if (!m || pos_ != s_.size()) return std::nullopt;
    return m;
  }

 private:
  // expr := [sign] term [ '/' [sign] term ]
  std::optional<MathNumber> ParseExpr() {
    bool neg = ParseSign();
    std::optional<MathNumber> m = ParseTerm();
    if (!m) return std::nullopt;
    if (pos_ < s_.size() && s_[pos_] == '/') {
      ++pos_;
      bool neg2 = ParseSign();
      std::optional<MathNumber> d = ParseTerm();
      if (!d) return std::nullopt;
      if (neg2) d = Negate(*d);
      m = Divide(*m, *d);
      if (!m) return std::nullopt;
    }
    return neg ? Negate(*m) : *m;
  }

  bool ParseSign() {
    bool neg = false;
    if (pos_ < s_.size() && (s_[pos_] == '-' || s_[pos_] == '+')) {
      neg = s_[pos_] == '-';
      ++pos_;
    }
    return neg;
  }

  // term := frac | '{' expr '}' | decimal [exponent] ['\times' '10^' int]
  std::optional<MathNumber> ParseTerm() {
    std::optional<MathNumber> m;
    if (StartsWithAt(s_, pos_, "\\frac{")) {
      pos_ += 5;
      std::optional<MathNumber> a = ParseGroup();
      if (!a) return std::nullopt;
      std::optional<MathNumber> b = ParseGroup();
      if (!b) return std::nullopt;
      m = Divide(*a, *b);
    } else if (pos_ < s_.size() && s_[pos_] == '{') {
      m = ParseGroup();
    } else {
      m = ParseDecimal();
    }
    if (!m) return std::nullopt;
    // Scientific notation written in LaTeX: 1.5\times10^{3}, 2\cdot10^-3.
    for (const char* times : {"\\times10^", "\\cdot10^", "*10^", "x10^"}) {
      if (StartsWithAt(s_, pos_, times)) {
        size_t save = pos_;
        pos_ += std::strlen(times);
        std::optional<int> e = ParseExponentValue();
        if (!e) {
          pos_ = save;
          return std::nullopt;
        }
        m = ScaleByPow10(*m, *e);
        break;
      }
    }
    return m;
  }

  // '{' expr '}'
  std::optional<MathNumber> ParseGroup() {
    if (pos_ >= s_.size() || s_[pos_] != '{') return std::nullopt;
    ++pos_;
    std::optional<MathNumber> m = ParseExpr();
    if (!m || pos_ >= s_.size() || s_[pos_] != '}') return std::nullopt;
    ++pos_;
    return m;
  }

  // An integer exponent, braced or not: 3, -3, {3}, {-3}.
  std::optional<int> ParseExponentValue() {
    bool braced = pos_ < s_.size() && s_[pos_] == '{';
    if (braced) ++pos_;
    bool neg = ParseSign();
    size_t start = pos_;
    while (pos_ < s_.size() && IsDigit(s_[pos_])) ++pos_;
    if (pos_ == start || pos_ - start > 4) return std::nullopt;
    int e = std::atoi(s_.substr(start, pos_ - start).c_str());
    if (braced) {
      if (pos_ >= s_.size() || s_[pos_] != '}') return std::nullopt;
      ++pos_;
    }
    return neg ? -e : e;
  }

  // digits with optional thousands groups (",ddd"), optional ".digits",
  // optional e[+-]digits.
  std::optional<MathNumber> ParseDecimal() {
    std::string int_digits;
    while (pos_ < s_.size() && IsDigit(s_[pos_])) int_digits += s_[pos_++];
    // Thousands groups only after 1-3 leading digits.
    if (!int_digits.empty() && int_digits.size() <= 3) {
      while (pos_ + 3 < s_.size() && s_[pos_] == ',' && IsDigit(s_[pos_ + 1]) &&
             IsDigit(s_[pos_ + 2]) && IsDigit(s_[pos_ + 3]) &&
             (pos_ + 4 >= s_.size() || !IsDigit(s_[pos_ + 4]))) {
        int_digits += s_.substr(pos_ + 1, 3);
        pos_ += 4;
      }
    }
    std::string frac_digits;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      size_t save = pos_;
      ++pos_;
      while (pos_ < s_.size() && IsDigit(s_[pos_])) frac_digits += s_[pos_++];
      if (frac_digits.empty()) pos_ = save;  // "5." is handled by Normalize.
    }
    if (int_digits.empty() && frac_digits.empty()) return std::nullopt;
    int exponent = 0;
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      size_t save = pos_;
      ++pos_;
      std::optional<int> e = ParseExponentValue();
      if (e) {
        exponent = *e;
      } else {
        pos_ = save;
      }
    }
    std::string all = int_digits + frac_digits;
    size_t first = all.find_first_not_of('0');
    std::string significant = first == std::string::npos ? "0" : all.substr(first);
    std::string text = (int_digits.empty() ? "0" : int_digits) + "." +
                       (frac_digits.empty() ? "0" : frac_digits) + "e" + std::to_string(exponent);
    double value = std::strtod(text.c_str(), nullptr);
    // Many decimals: a rounded value, compared with the tolerance.
    if (significant.size() > 18 || frac_digits.size() > 6) {
      return FromRational(0, 1, false, value);
    }
    MathNumber m = FromRational(std::stoll(significant), 1, true, value);
    return ScaleByPow10(m, exponent - static_cast<int>(frac_digits.size()));
  }

  const std::string& s_;
  size_t pos_ = 0;
};

// Length of a minus sign at `pos`: '-' (1), U+2212 or U+2013 (3), else 0.
size_t MinusLength(const std::string& s, size_t pos) {
  if (pos < s.size() && s[pos] == '-') return 1;
  if (StartsWithAt(s, pos, "\xE2\x88\x92") || StartsWithAt(s, pos, "\xE2\x80\x93")) return 3;
  return 0;
}

// Whether a sign just before `pos` belongs to the number starting at `pos`
// (and not to a subtraction "10-3"). Returns the start including the sign.
size_t IncludeSign(const std::string& s, size_t pos) {
  size_t start = pos;
  if (pos >= 1 && (s[pos - 1] == '-' || s[pos - 1] == '+')) {
    start = pos - 1;
  } else if (pos >= 3 && MinusLength(s, pos - 3) == 3) {
    start = pos - 3;
  } else {
    return pos;
  }
  if (start == 0) return start;
  char before = s[start - 1];
  if (IsDigit(before) || IsAsciiAlpha(before) || before == ')' || before == '}' || before == ']')
    return pos;
  return start;
}

// Parses a number-like span of raw text at `pos` (a digit or '.'); returns
// its end, or pos when there is none.
size_t ScanPlainNumber(const std::string& s, size_t pos) {
  size_t i = pos;
  size_t int_start = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  size_t int_len = i - int_start;
  if (int_len >= 1 && int_len <= 3) {
    // Thousands groups: ",ddd", "{,}ddd", "\,ddd".
    for (;;) {
      size_t sep = 0;
      if (StartsWithAt(s, i, ","))
        sep = 1;
      else if (StartsWithAt(s, i, "{,}"))
        sep = 3;
      else if (StartsWithAt(s, i, "\\,"))
        sep = 2;
      if (sep == 0) break;
      size_t d = i + sep;
      if (d + 3 <= s.size() && IsDigit(s[d]) && IsDigit(s[d + 1]) && IsDigit(s[d + 2]) &&
          (d + 3 == s.size() || !IsDigit(s[d + 3]))) {
        i = d + 3;
      } else {
        break;
      }
    }
  }
  if (i < s.size() && s[i] == '.' && i + 1 < s.size() && IsDigit(s[i + 1])) {
    ++i;
    while (i < s.size() && IsDigit(s[i])) ++i;
  }
  if (i == pos) return pos;
  // Exponent: e3, e-3, E+10 (only when digits follow).
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '-' || s[j] == '+')) ++j;
    if (j < s.size() && IsDigit(s[j])) {
      while (j < s.size() && IsDigit(s[j])) ++j;
      if (j == s.size() || !IsAsciiAlpha(s[j])) i = j;
    }
  }
  return i;
}

// Scans \frac{A}{B} (or \dfrac, \tfrac) at `pos` whose arguments are numbers;
// returns its end or pos.
size_t ScanFrac(const std::string& s, size_t pos) {
  size_t i = pos;
  for (const char* cmd : {"\\frac", "\\dfrac", "\\tfrac"}) {
    if (StartsWithAt(s, pos, cmd)) {
      i = pos + std::strlen(cmd);
      break;
    }
  }
  if (i == pos) return pos;
  for (int arg = 0; arg < 2; ++arg) {
    while (i < s.size() && s[i] == ' ') ++i;
    if (i >= s.size()) return pos;
    size_t end;
    std::string content;
    if (s[i] == '{') {
      end = MatchBrace(s, i);
      if (end == std::string::npos) return pos;
      content = s.substr(i + 1, end - i - 2);
    } else if (IsDigit(s[i])) {
      end = i + 1;
      content = s.substr(i, 1);
    } else {
      return pos;
    }
    if (!ParseMathNumber(NormalizeMathAnswer(content))) return pos;
    i = end;
  }
  return i;
}

// Trailing percent after a number: "%" or "\%".
size_t ScanPercent(const std::string& s, size_t pos) {
  size_t i = pos;
  while (i < s.size() && s[i] == ' ') ++i;
  if (StartsWithAt(s, i, "\\%")) return i + 2;
  if (StartsWithAt(s, i, "%")) return i + 1;
  return pos;
}

// "-1,234,567" -> "-1234567" when the normalised answer is a plain integer
// (sign, digits, thousands commas), else nullopt. Integers too long for 64
// bits are compared through this, digit by digit, not with the tolerance.
std::optional<std::string> CanonicalInteger(const std::string& s) {
  size_t i = 0;
  std::string sign;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
    if (s[i] == '-') sign = "-";
    ++i;
  }
  std::string digits;
  for (; i < s.size(); ++i) {
    if (IsDigit(s[i])) {
      digits += s[i];
    } else if (s[i] != ',') {
      return std::nullopt;
    }
  }
  size_t first = digits.find_first_not_of('0');
  if (digits.empty()) return std::nullopt;
  if (first == std::string::npos) return std::string("0");
  return sign + digits.substr(first);
}

std::string Truncate(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  return s.substr(0, n) + "...";
}

}  // namespace

// ---------------------------------------------------------------------------
// Math helpers.

std::optional<std::string> ExtractLastBoxed(const std::string& text) {
  size_t best = std::string::npos;
  size_t best_len = 0;
  for (const char* cmd : {"\\boxed", "\\fbox"}) {
    size_t len = std::strlen(cmd);
    size_t pos = text.size();
    while (pos > 0) {
      size_t found = text.rfind(cmd, pos - 1);
      if (found == std::string::npos) break;
      size_t end = found + len;
      if (end < text.size() && IsAsciiAlpha(text[end])) {
        pos = found;
        continue;
      }
      if (best == std::string::npos || found > best) {
        best = found;
        best_len = len;
      }
      break;
    }
  }
  if (best == std::string::npos) return std::nullopt;
  size_t i = best + best_len;
  while (i < text.size() && IsSpace(text[i])) ++i;
  if (i >= text.size()) return std::nullopt;
  if (text[i] == '{') {
    size_t close = MatchBrace(text, i);
    if (close == std::string::npos) return std::nullopt;
    return text.substr(i + 1, close - i - 2);
  }
  // "\boxed 5": the next token.
  size_t end = i;
  while (end < text.size() && !IsSpace(text[end]) && text[end] != '$') ++end;
  return text.substr(i, end - i);
}

std::optional<std::string> ExtractLastNumber(const std::string& text) {
  std::optional<std::string> last;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '\\') {
      size_t end = ScanFrac(text, i);
      if (end != i) {
        size_t start = IncludeSign(text, i);
        end = ScanPercent(text, end);
        last = text.substr(start, end - start);
        i = end;
        continue;
      }
      // Skip the control word (or the escaped character).
      ++i;
      if (i < text.size() && !IsAsciiAlpha(text[i])) {
        ++i;
      } else {
        while (i < text.size() && IsAsciiAlpha(text[i])) ++i;
      }
      continue;
    }
    bool starts_number = IsDigit(c) || (c == '.' && i + 1 < text.size() && IsDigit(text[i + 1]) &&
                                        (i == 0 || !IsDigit(text[i - 1])));
    if (!starts_number) {
      ++i;
      continue;
    }
    size_t end = ScanPlainNumber(text, i);
    if (end == i) {
      ++i;
      continue;
    }
    // a/b with a plain-number denominator.
    if (end < text.size() && text[end] == '/' && end + 1 < text.size() && IsDigit(text[end + 1])) {
      size_t den_end = ScanPlainNumber(text, end + 1);
      if (den_end != end + 1) end = den_end;
    }
    size_t start = IncludeSign(text, i);
    end = ScanPercent(text, end);
    last = text.substr(start, end - start);
    i = end;
  }
  return last;
}

std::string ExtractReferenceAnswer(const std::string& reference) {
  size_t hashes = reference.rfind("####");
  if (hashes != std::string::npos) return Trim(reference.substr(hashes + 4));
  std::optional<std::string> boxed = ExtractLastBoxed(reference);
  if (boxed) return Trim(*boxed);
  return Trim(reference);
}

std::string NormalizeMathAnswer(const std::string& answer) {
  std::string s = Trim(answer);
  // Unicode look-alikes.
  ReplaceAll(s, "\xE2\x88\x92", "-");     // U+2212 minus sign
  ReplaceAll(s, "\xE2\x80\x93", "-");     // U+2013 en dash
  ReplaceAll(s, "\xC2\xA0", " ");         // no-break space
  ReplaceAll(s, "\xE2\x80\x89", " ");     // thin space
  ReplaceAll(s, "\xE2\x80\xAF", " ");     // narrow no-break space
  ReplaceAll(s, "\xC3\x97", "\\times ");  // multiplication sign
  ReplaceAll(s, "\xC2\xB0", "");          // degree sign
  // Math delimiters and currency.
  ReplaceAll(s, "\\$", "");
  ReplaceAll(s, "$", "");
  ReplaceAll(s, "\\(", "");
  ReplaceAll(s, "\\)", "");
  ReplaceAll(s, "\\[", "");
  ReplaceAll(s, "\\]", "");
  UnwrapCommands(s, {"\\boxed", "\\fbox"});
  RemoveControlWord(s, "\\left");
  RemoveControlWord(s, "\\right");
  RemoveControlWord(s, "\\displaystyle");
  RemoveControlWord(s, "\\qquad");
  RemoveControlWord(s, "\\quad");
  for (const char* space : {"\\!", "\\,", "\\;", "\\:", "\\ ", "~"}) ReplaceAll(s, space, "");
  for (const char* frac : {"\\dfrac", "\\tfrac", "\\cfrac"}) {
    size_t pos = 0;
    std::string f = frac;
    while ((pos = s.find(f, pos)) != std::string::npos) {
      size_t end = pos + f.size();
      if (end < s.size() && IsAsciiAlpha(s[end])) {
        pos = end;
        continue;
      }
      s.replace(pos, f.size(), "\\frac");
    }
  }
  // Degrees, percent.
  ReplaceAll(s, "^{\\circ}", "");
  ReplaceAll(s, "^\\circ", "");
  RemoveControlWord(s, "\\circ");
  RemoveControlWord(s, "\\degree");
  ReplaceAll(s, "\\%", "");
  ReplaceAll(s, "%", "");
  DropTrailingTextUnit(s);
  UnwrapCommands(s, {"\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf",
                     "\\mathit", "\\mbox"});
  s = Trim(s);
  // "5 cm", "12 apples": a number followed by plain words.
  {
    size_t sp = s.find(' ');
    if (sp != std::string::npos && LooksLikeUnit(s.substr(sp + 1))) {
      std::string head = Trim(s.substr(0, sp));
      std::string head_norm = BraceShorthandArgs(RemoveWhitespace(head));
      ReplaceAll(head_norm, "{,}", ",");
      if (ParseMathNumber(head_norm)) s = head;
    }
  }
  s = RemoveWhitespace(s);
  ReplaceAll(s, "{,}", ",");
  s = BraceShorthandArgs(s);
  // "x=5", "k=\frac{1}{2}", "\theta=30": keep the right-hand side.
  {
    size_t eq = s.find('=');
    if (eq != std::string::npos && s.find('=', eq + 1) == std::string::npos && eq + 1 < s.size()) {
      std::string lhs = s.substr(0, eq);
      bool variable = false;
      if (!lhs.empty() && lhs.size() <= 2 && std::all_of(lhs.begin(), lhs.end(), IsAsciiAlpha)) {
        variable = true;
      } else if (lhs.size() >= 2 && lhs[0] == '\\' &&
                 std::all_of(lhs.begin() + 1, lhs.end(), IsAsciiAlpha)) {
        variable = true;
      }
      if (variable) s = s.substr(eq + 1);
    }
  }
  while (!s.empty() && (s.back() == '.' || s.back() == ',')) s.pop_back();
  // A lone pair of braces around everything: "{5}".
  while (s.size() >= 2 && s.front() == '{' && MatchBrace(s, 0) == s.size())
    s = s.substr(1, s.size() - 2);
  return s;
}

std::optional<MathNumber> ParseMathNumber(const std::string& normalized) {
  if (normalized.empty()) return std::nullopt;
  NumberParser parser(normalized);
  return parser.ParseAll();
}

bool MathNumbersEqual(const MathNumber& a, const MathNumber& b) {
  if (a.exact && b.exact) {
    return a.numerator == b.numerator && a.denominator == b.denominator;
  }
  if (!std::isfinite(a.value) || !std::isfinite(b.value)) return false;
  double diff = std::fabs(a.value - b.value);
  double scale = std::max(std::fabs(a.value), std::fabs(b.value));
  return diff <= 1e-6 * scale || diff <= 1e-12;
}

// ---------------------------------------------------------------------------
// Verifiers.

absl::StatusOr<VerifyResult> MathVerifier::Verify(const std::string& completion_answer,
                                                  const std::string& reference) const {
  std::string ref = NormalizeMathAnswer(ExtractReferenceAnswer(reference));
  if (ref.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("math verifier: the reference answer is empty (reference: \"",
                     Truncate(reference, 80), "\")"));
  }
  VerifyResult result;
  std::string source;
  std::optional<std::string> candidate = ExtractLastBoxed(completion_answer);
  if (candidate) {
    source = "\\boxed{}";
  } else {
    candidate = ExtractLastNumber(completion_answer);
    source = "last number";
  }
  if (!candidate) {
    result.detail = "no \\boxed{} and no number in the answer";
    return result;
  }
  result.extracted = NormalizeMathAnswer(*candidate);
  if (result.extracted.empty()) {
    result.detail = absl::StrCat("empty answer from ", source);
    return result;
  }
  std::optional<MathNumber> a = ParseMathNumber(result.extracted);
  std::optional<MathNumber> b = ParseMathNumber(ref);
  if (a && b) {
    result.correct = MathNumbersEqual(*a, *b);
    std::optional<std::string> ia = CanonicalInteger(result.extracted);
    std::optional<std::string> ib = CanonicalInteger(ref);
    if (!(a->exact && b->exact) && ia && ib) {
      result.correct = *ia == *ib;
      result.detail = absl::StrCat("integer digits from ", source, ": ", result.extracted,
                                   result.correct ? " == " : " != ", ref);
      return result;
    }
    result.detail =
        absl::StrCat("numeric (", a->exact && b->exact ? "exact" : "tolerance 1e-6", ") from ",
                     source, ": ", result.extracted, result.correct ? " == " : " != ", ref);
    return result;
  }
  result.correct = result.extracted == ref;
  result.detail = absl::StrCat("string from ", source, ": \"", Truncate(result.extracted, 120),
                               result.correct ? "\" == \"" : "\" != \"", Truncate(ref, 120), "\"");
  if (!result.correct && (a.has_value() != b.has_value())) {
    absl::StrAppend(&result.detail,
                    a ? " (answer numeric, reference not)" : " (reference numeric, answer not)");
  }
  return result;
}

absl::StatusOr<VerifyResult> ExactVerifier::Verify(const std::string& completion_answer,
                                                   const std::string& reference) const {
  VerifyResult result;
  result.extracted = Trim(completion_answer);
  std::string ref = Trim(reference);
  if (case_insensitive_) {
    auto lower = [](std::string s) {
      for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      return s;
    };
    result.correct = lower(result.extracted) == lower(ref);
  } else {
    result.correct = result.extracted == ref;
  }
  result.detail = result.correct ? "exact match" : "differs from the reference";
  return result;
}

namespace {

std::string Pcre2ErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), n);
}

absl::StatusOr<pcre2_code*> CompilePattern(const std::string& pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("regex verifier: bad pattern /", pattern,
                                                   "/ at offset ", offset, ": ",
                                                   Pcre2ErrorMessage(error)));
  }
  return code;
}

// The reference as a literal inside a pattern: every ASCII non-alphanumeric
// character backslash-escaped (always literal in PCRE2), NUL as \x{0}.
std::string EscapeForPattern(const std::string& s) {
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u == 0) {
      out += "\\x{0}";
    } else if (u < 0x80 && !IsDigit(c) && !IsAsciiAlpha(c)) {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out;
}

constexpr char kReferencePlaceholder[] = "{reference}";

}  // namespace

absl::StatusOr<std::unique_ptr<RegexVerifier>> RegexVerifier::Create(const std::string& pattern) {
  std::unique_ptr<RegexVerifier> v(new RegexVerifier(pattern));
  v->uses_reference_ = pattern.find(kReferencePlaceholder) != std::string::npos;
  std::string check = pattern;
  ReplaceAll(check, kReferencePlaceholder, "");
  ASSIGN_OR_RETURN(pcre2_code * code, CompilePattern(check));
  if (v->uses_reference_) {
    pcre2_code_free(code);
  } else {
    v->code_ = code;
  }
  return v;
}

RegexVerifier::~RegexVerifier() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

absl::StatusOr<VerifyResult> RegexVerifier::Verify(const std::string& completion_answer,
                                                   const std::string& reference) const {
  pcre2_code* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_code, void (*)(pcre2_code*)> owned(nullptr, pcre2_code_free);
  std::string pattern = pattern_;
  if (uses_reference_) {
    ReplaceAll(pattern, kReferencePlaceholder, EscapeForPattern(Trim(reference)));
    ASSIGN_OR_RETURN(code, CompilePattern(pattern));
    owned.reset(code);
  }
  // Match data per call: the compiled code is shared read-only.
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> match(
      pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
  if (match == nullptr) return absl::ResourceExhaustedError("pcre2 match data");
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(completion_answer.data()),
                       completion_answer.size(), 0, 0, match.get(), nullptr);
  VerifyResult result;
  if (rc == PCRE2_ERROR_NOMATCH) {
    result.detail = absl::StrCat("no match for /", Truncate(pattern, 200), "/");
    return result;
  }
  if (rc < 0) {
    return absl::InternalError(absl::StrCat("regex verifier: matching /", Truncate(pattern, 200),
                                            "/ failed: ", Pcre2ErrorMessage(rc)));
  }
  PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
  result.correct = true;
  result.extracted = completion_answer.substr(ovector[0], ovector[1] - ovector[0]);
  result.detail = absl::StrCat("matched /", Truncate(pattern, 200), "/ at byte ", ovector[0]);
  return result;
}

std::string CommandVerifier::Describe() const {
  std::string s = "command:";
  for (size_t i = 0; i < argv_.size(); ++i) {
    if (i) s += ' ';
    s += argv_[i];
  }
  return s;
}

namespace {

// Closes a file descriptor once.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  void Close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

void KillGroupAndReap(pid_t pid, bool reaped) {
  ::kill(-pid, SIGKILL);
  if (!reaped) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace

absl::StatusOr<VerifyResult> CommandVerifier::Verify(const std::string& completion_answer,
                                                     const std::string& reference) const {
  using Clock = std::chrono::steady_clock;
  const std::string name = argv_.empty() ? std::string() : argv_[0];
  if (argv_.empty()) {
    return absl::InvalidArgumentError("command verifier: empty command");
  }
  nlohmann::json request = {{"answer", completion_answer}, {"reference", reference}};
  const std::string input =
      request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";

  int in_pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0) {
    return absl::InternalError(
        absl::StrCat("command verifier: socketpair: ", std::strerror(errno)));
  }
  Fd in_parent(in_pair[0]), in_child(in_pair[1]);
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("command verifier: pipe: ", std::strerror(errno)));
  }
  Fd out_parent(out_pipe[0]), out_child(out_pipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_child.fd, 0);
  posix_spawn_file_actions_adddup2(&actions, out_child.fd, 1);
  posix_spawn_file_actions_adddup2(&actions, out_child.fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty_mask, default_signals;
  sigemptyset(&empty_mask);
  sigemptyset(&default_signals);
  sigaddset(&default_signals, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &empty_mask);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& a : argv_) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int spawn_error = ::posix_spawnp(&pid, name.c_str(), &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  in_child.Close();
  out_child.Close();
  if (spawn_error != 0) {
    return absl::NotFoundError(
        absl::StrCat("command verifier: cannot start '", name, "': ", std::strerror(spawn_error)));
  }

  ::fcntl(in_parent.fd, F_SETFL, ::fcntl(in_parent.fd, F_GETFL) | O_NONBLOCK);
  ::fcntl(out_parent.fd, F_SETFL, ::fcntl(out_parent.fd, F_GETFL) | O_NONBLOCK);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_seconds_));
  constexpr size_t kMaxOutput = 4096;
  std::string output;
  size_t written = 0;
  bool reaped = false;
  int status = 0;
  auto timed_out = [&]() -> absl::Status {
    KillGroupAndReap(pid, reaped);
    return absl::DeadlineExceededError(absl::StrFormat(
        "command verifier: '%s' ran past its timeout of %.3g s", name, timeout_seconds_));
  };

  // Feed stdin and drain stdout until the child exits (a grandchild holding
  // the pipe open does not keep us waiting).
  while (!reaped) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) reaped = true;
    std::vector<pollfd> fds;
    if (in_parent.fd >= 0 && written < input.size()) fds.push_back({in_parent.fd, POLLOUT, 0});
    if (out_parent.fd >= 0) fds.push_back({out_parent.fd, POLLIN, 0});
    auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (!reaped && remaining <= 0) return timed_out();
    int wait_ms = reaped ? 0 : static_cast<int>(std::min<long long>(remaining, 20));
    if (fds.empty()) {
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
      continue;
    }
    int n = ::poll(fds.data(), fds.size(), wait_ms);
    if (n < 0 && errno != EINTR) {
      KillGroupAndReap(pid, reaped);
      return absl::InternalError(absl::StrCat("command verifier: poll: ", std::strerror(errno)));
    }
    for (const pollfd& p : fds) {
      if (p.fd == in_parent.fd && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t k = ::send(in_parent.fd, input.data() + written, input.size() - written,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) written += static_cast<size_t>(k);
        // The child may exit without reading its stdin; that is its right.
        if (k < 0 && errno != EAGAIN && errno != EINTR) written = input.size();
        if (written >= input.size()) in_parent.Close();
      } else if (p.fd == out_parent.fd && (p.revents & (POLLIN | POLLERR | POLLHUP))) {
        char buf[4096];
        for (;;) {
          ssize_t k = ::read(out_parent.fd, buf, sizeof(buf));
          if (k > 0) {
            if (output.size() < kMaxOutput)
              output.append(buf, std::min<size_t>(k, kMaxOutput - output.size()));
            continue;
          }
          if (k == 0) out_parent.Close();
          break;
        }
      }
    }
    if (reaped) break;
  }
  // Leftover processes in the child's group (backgrounded by a script).
  ::kill(-pid, SIGKILL);

  std::string tail = Trim(output);
  VerifyResult result;
  result.extracted = Trim(completion_answer);
  if (WIFEXITED(status) && WEXITSTATUS(status) <= 1) {
    result.correct = WEXITSTATUS(status) == 0;
    result.detail = absl::StrCat("exit ", WEXITSTATUS(status), tail.empty() ? "" : ": ", tail);
    return result;
  }
  if (WIFEXITED(status)) {
    return absl::InternalError(absl::StrCat(
        "command verifier: '", name, "' exited with status ", WEXITSTATUS(status),
        " (0 = correct, 1 = wrong expected)", tail.empty() ? "" : ": ", Truncate(tail, 500)));
  }
  return absl::InternalError(absl::StrCat("command verifier: '", name, "' was killed by signal ",
                                          WIFSIGNALED(status) ? WTERMSIG(status) : -1,
                                          tail.empty() ? "" : ": ", Truncate(tail, 500)));
}

// ---------------------------------------------------------------------------
// Specs.

namespace {

absl::StatusOr<std::vector<std::string>> SplitCommandLine(const std::string& line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quote == '\'') {
      if (c == '\'') {
        quote = 0;
      } else {
        word += c;
      }
      continue;
    }
    if (quote == '"') {
      if (c == '"') {
        quote = 0;
      } else if (c == '\\' && i + 1 < line.size() && (line[i + 1] == '"' || line[i + 1] == '\\')) {
        word += line[++i];
      } else {
        word += c;
      }
      continue;
    }
    if (IsSpace(c)) {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
    } else {
      word += c;
    }
  }
  if (quote != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "command verifier: unbalanced ", std::string(1, quote), " quote in \"", line, "\""));
  }
  if (in_word) words.push_back(word);
  return words;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Verifier>> MakeVerifier(const std::string& spec,
                                                       const VerifierOptions& options) {
  if (spec == "math") return std::unique_ptr<Verifier>(new MathVerifier());
  if (spec == "exact") return std::unique_ptr<Verifier>(new ExactVerifier(false));
  if (spec == "exact-ci") return std::unique_ptr<Verifier>(new ExactVerifier(true));
  if (spec.rfind("regex:", 0) == 0) {
    std::string pattern = spec.substr(6);
    if (pattern.empty()) {
      return absl::InvalidArgumentError("verifier spec \"regex:\" needs a pattern after the colon");
    }
    ASSIGN_OR_RETURN(std::unique_ptr<RegexVerifier> v, RegexVerifier::Create(pattern));
    return std::unique_ptr<Verifier>(std::move(v));
  }
  if (spec.rfind("command:", 0) == 0) {
    ASSIGN_OR_RETURN(std::vector<std::string> argv, SplitCommandLine(spec.substr(8)));
    if (argv.empty()) {
      return absl::InvalidArgumentError(
          "verifier spec \"command:\" needs a program after the colon");
    }
    if (!(options.command_timeout_seconds > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "command verifier: timeout must be > 0 seconds, got ", options.command_timeout_seconds));
    }
    return std::unique_ptr<Verifier>(
        new CommandVerifier(std::move(argv), options.command_timeout_seconds));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown verifier spec \"", spec,
                   "\": expected math, exact, exact-ci, regex:PATTERN or "
                   "command:PROGRAM ARGS..."));
}

// ---------------------------------------------------------------------------
// Statistics.

absl::StatusOr<double> PassAtK(int n, int c, int k) {
  if (k < 1 || c < 0 || c > n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pass@k needs k >= 1 and 0 <= c <= n, got n=%d c=%d k=%d", n, c, k));
  }
  if (n < k) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pass@%d needs at least %d samples, got n=%d", k, k, n));
  }
  if (n - c < k) return 1.0;
  // C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k / i).
  double prod = 1.0;
  for (int i = n - c + 1; i <= n; ++i) {
    prod *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  }
  return 1.0 - prod;
}

absl::StatusOr<nlohmann::ordered_json> SummarizeVerification(
    const std::vector<PromptStats>& prompts, const std::vector<int>& ks_in) {
  std::vector<int> ks = ks_in;
  ks.push_back(1);
  for (int k : ks) {
    if (k < 1) {
      return absl::InvalidArgumentError(absl::StrCat("pass@k: k must be >= 1, got ", k));
    }
  }
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());

  int64_t samples = 0, correct = 0;
  double prompt_acc_sum = 0.0;
  int prompts_with_samples = 0;
  std::vector<double> pass_sum(ks.size(), 0.0);
  std::vector<int> pass_count(ks.size(), 0);
  nlohmann::ordered_json per_prompt = nlohmann::ordered_json::array();
  for (const PromptStats& p : prompts) {
    if (p.n < 0 || p.correct < 0 || p.correct > p.n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt \"%s\": correct=%d is outside [0, n=%d]", p.id, p.correct, p.n));
    }
    samples += p.n;
    correct += p.correct;
    nlohmann::ordered_json row = {{"id", p.id}, {"n", p.n}, {"correct", p.correct}};
    if (p.n > 0) {
      double acc = static_cast<double>(p.correct) / p.n;
      prompt_acc_sum += acc;
      ++prompts_with_samples;
      row["accuracy"] = acc;
    } else {
      row["accuracy"] = nullptr;
    }
    per_prompt.push_back(std::move(row));
    for (size_t i = 0; i < ks.size(); ++i) {
      if (p.n < ks[i]) continue;
      ASSIGN_OR_RETURN(double v, PassAtK(p.n, p.correct, ks[i]));
      pass_sum[i] += v;
      ++pass_count[i];
    }
  }
  nlohmann::ordered_json out;
  out["prompts"] = prompts.size();
  out["samples"] = samples;
  out["correct"] = correct;
  out["accuracy"] =
      samples > 0
          ? nlohmann::ordered_json(static_cast<double>(correct) / static_cast<double>(samples))
          : nlohmann::ordered_json(nullptr);
  out["prompt_accuracy"] = prompts_with_samples > 0
                               ? nlohmann::ordered_json(prompt_acc_sum / prompts_with_samples)
                               : nlohmann::ordered_json(nullptr);
  nlohmann::ordered_json pass = nlohmann::ordered_json::object();
  nlohmann::ordered_json pass_n = nlohmann::ordered_json::object();
  for (size_t i = 0; i < ks.size(); ++i) {
    std::string key = std::to_string(ks[i]);
    pass[key] = pass_count[i] > 0 ? nlohmann::ordered_json(pass_sum[i] / pass_count[i])
                                  : nlohmann::ordered_json(nullptr);
    pass_n[key] = pass_count[i];
  }
  out["pass@k"] = std::move(pass);
  out["pass@k_prompts"] = std::move(pass_n);
  out["per_prompt"] = std::move(per_prompt);
  return out;
}

std::string FormatVerificationSummary(const nlohmann::ordered_json& summary, int max_prompt_rows) {
  auto pct = [](const nlohmann::ordered_json& v) -> std::string {
    if (!v.is_number()) return "n/a";
    return absl::StrFormat("%.1f%%", 100.0 * v.get<double>());
  };
  std::string out;
  try {
    absl::StrAppendFormat(
        &out, "prompts %d  samples %d  correct %d  accuracy %s (samples) %s (prompts)\n",
        summary.value("prompts", 0), summary.value("samples", int64_t{0}),
        summary.value("correct", int64_t{0}),
        pct(summary.value("accuracy", nlohmann::ordered_json())),
        pct(summary.value("prompt_accuracy", nlohmann::ordered_json())));
    if (summary.contains("pass@k")) {
      for (const auto& [k, v] : summary.at("pass@k").items()) {
        int count =
            summary.contains("pass@k_prompts") ? summary.at("pass@k_prompts").value(k, 0) : 0;
        std::string key = "pass@" + k;
        absl::StrAppendFormat(
            &out, "%-8s %s  (%d prompts)\n", key,
            v.is_number() ? absl::StrFormat("%.4f", v.get<double>()) : std::string("n/a"), count);
      }
    }
    if (summary.contains("per_prompt") && max_prompt_rows > 0 &&
        !summary.at("per_prompt").empty()) {
      std::vector<const nlohmann::ordered_json*> rows;
      for (const auto& row : summary.at("per_prompt")) rows.push_back(&row);
      auto acc_of = [](const nlohmann::ordered_json* r) {
        const auto& a = r->at("accuracy");
        return a.is_number() ? a.get<double>() : -1.0;
      };
      std::stable_sort(rows.begin(), rows.end(),
                       [&](const auto* a, const auto* b) { return acc_of(a) < acc_of(b); });
      size_t width = 2;
      size_t shown = std::min<size_t>(rows.size(), max_prompt_rows);
      for (size_t i = 0; i < shown; ++i)
        width = std::max(width, rows[i]->at("id").get<std::string>().size());
      width = std::min<size_t>(width, 40);
      absl::StrAppendFormat(&out, "%-*s  %9s  %7s\n", static_cast<int>(width), "id", "correct/n",
                            "acc");
      for (size_t i = 0; i < shown; ++i) {
        const auto& r = *rows[i];
        std::string id = r.at("id").get<std::string>();
        if (id.size() > width) id = id.substr(0, width - 3) + "...";
        std::string frac = absl::StrCat(r.at("correct").get<int>(), "/", r.at("n").get<int>());
        absl::StrAppendFormat(&out, "%-*s  %9s  %7s\n", static_cast<int>(width), id, frac,
                              pct(r.at("accuracy")));
      }
      if (rows.size() > shown) {
        absl::StrAppendFormat(&out, "(%d more prompts)\n", rows.size() - shown);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    absl::StrAppend(&out, "(summary not readable: ", e.what(), ")\n");
  }
  return out;
}

}  // namespace retort
