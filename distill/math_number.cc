#include "distill/math_number.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace retort {
namespace {

using int128 = __int128;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool StartsWithAt(const std::string& s, size_t pos, const char* prefix) {
  size_t n = std::strlen(prefix);
  return pos + n <= s.size() && s.compare(pos, n, prefix) == 0;
}

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

}  // namespace

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

std::optional<std::string> CanonicalMathInteger(const std::string& s) {
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

}  // namespace retort
