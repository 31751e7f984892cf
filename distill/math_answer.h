// Math final answers as text: finding the answer in a completion (the last
// \boxed{} or number) and in a reference (GSM8K's "####"), and the canonical
// form both are compared in. MathVerifier (distill/verify.h) documents the
// choices; exposed for tests and for the trace file.
//
// Thread safety: pure functions.
#ifndef RETORT_DISTILL_MATH_ANSWER_H_
#define RETORT_DISTILL_MATH_ANSWER_H_

#include <optional>
#include <string>

#include "distill/math_number.h"

namespace retort {

// Content of the last \boxed{...} / \fbox{...} in `text` (without the braces),
// or nullopt when there is none or its braces never close.
std::optional<std::string> ExtractLastBoxed(const std::string& text);

// The last number-like span in `text`: an integer (thousands separators ok),
// decimal, scientific (1e3), fraction a/b or \frac{a}{b}, with its sign and a
// trailing %. nullopt when the text has no digit.
std::optional<std::string> ExtractLastNumber(const std::string& text);

// The reference's answer: after the last "####", else the last \boxed{},
// else the trimmed reference.
std::string ExtractReferenceAnswer(const std::string& reference);

// Canonical form of an answer for comparison: LaTeX wrappers ($...$, \(...\),
// \[...\], \text{}, \mathrm{}, \mathbf{}, \left, \right, spacing commands)
// removed, \dfrac/\tfrac -> \frac, \frac12 -> \frac{1}{2}, \sqrt2 ->
// \sqrt{2}, unicode minus -> '-', whitespace removed, trailing '.' dropped,
// a leading "x=" dropped, trailing units / % / degrees dropped.
std::string NormalizeMathAnswer(const std::string& answer);

}  // namespace retort

#endif  // RETORT_DISTILL_MATH_ANSWER_H_
