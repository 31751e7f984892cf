// Numbers in math answers: parsing a normalised answer ("-3/4", "\frac{1}{2}",
// "1.5e-3") into an exact rational where it fits, and comparing two of them.
// MathVerifier (distill/verify.h) compares answers through these; the
// normalisation that comes first is in distill/math_answer.h.
//
// Thread safety: pure functions.
#ifndef RETORT_DISTILL_MATH_NUMBER_H_
#define RETORT_DISTILL_MATH_NUMBER_H_

#include <cstdint>
#include <optional>
#include <string>

namespace retort {

// numerator/denominator (denominator > 0, reduced); `value` always holds the
// nearest double.
struct MathNumber {
  bool exact = false;
  int64_t numerator = 0;
  int64_t denominator = 1;
  double value = 0.0;
};

// Parses a normalised answer as a number: [sign] integer | decimal | 1.5e-3 |
// a/b | \frac{A}{B} (A, B numbers themselves) | A\times10^{B}. nullopt when
// the whole string is not one number.
std::optional<MathNumber> ParseMathNumber(const std::string& normalized);

// Whether two parsed numbers are equal (exact rational comparison when both
// are exact, else relative tolerance 1e-6).
bool MathNumbersEqual(const MathNumber& a, const MathNumber& b);

// "-1,234,567" -> "-1234567" when the normalised answer is a plain integer
// (sign, digits, thousands commas), else nullopt. Integers too long for 64
// bits are compared through this, digit by digit, not with the tolerance.
std::optional<std::string> CanonicalMathInteger(const std::string& normalized);

}  // namespace retort

#endif  // RETORT_DISTILL_MATH_NUMBER_H_
