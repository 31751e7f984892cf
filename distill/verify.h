// Answer verification for rejection sampling, and the statistics reported
// over the verified samples.
//
// `retort generate` samples N completions per prompt from a teacher, splits
// each into reasoning (<think>...</think>) and answer text, and asks a
// Verifier whether the answer agrees with the prompt's reference answer;
// `--keep correct` keeps only the verified samples (the rejection sampling
// DeepSeek used for R1-Distill). A Verifier is chosen by a short spec string
// (MakeVerifier):
//
//   "math"                 final answer of a math problem, compared as a number
//                          where both sides are numbers (see MathVerifier).
//   "exact" / "exact-ci"   trimmed string equality (ASCII case-insensitive).
//   "regex:PATTERN"        the answer must contain a match of a PCRE2 pattern;
//                          "{reference}" in PATTERN stands for the reference,
//                          matched literally (see RegexVerifier).
//   "command:PROG ARGS..." an external program decides (see CommandVerifier).
//
// Thread safety: every Verifier is immutable after construction; Verify() is
// const and may be called from several threads at once.
#ifndef RETORT_DISTILL_VERIFY_H_
#define RETORT_DISTILL_VERIFY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distill/math_answer.h"
#include "distill/verify_stats.h"

namespace retort {

// The outcome of one verification. `extracted` is what was compared (the
// model's final answer as the verifier understood it) and `detail` says why
// the verdict was reached; both go into the trace file for inspection.
struct VerifyResult {
  bool correct = false;
  std::string extracted;
  std::string detail;
};

// Decides whether a completion's answer agrees with a reference answer.
// A wrong answer is a VerifyResult with correct == false; a Status error means
// the verifier itself could not decide (external program crashed or timed out,
// regex engine failure) and the sample should be reported, not silently
// counted as wrong.
class Verifier {
 public:
  virtual ~Verifier() = default;

  // `completion_answer` is the answer part of a completion (after </think>);
  // `reference` is the prompt's "answer" field.
  virtual absl::StatusOr<VerifyResult> Verify(const std::string& completion_answer,
                                              const std::string& reference) const = 0;

  // The spec this verifier was made from ("math", "regex:...", ...), for logs.
  virtual std::string Describe() const = 0;
};

// Math final answers.
//
// Extraction from the completion's answer: the content of the LAST \boxed{...}
// or \fbox{...} (balanced braces, nested braces fine; "\boxed 5" also works);
// without one, the last number in the text ("The answer is 1,234." -> 1,234;
// "= -3/4" -> -3/4; "$\frac{1}{2}$" -> \frac{1}{2}). A text with neither is
// wrong, with a detail saying so.
// Extraction from the reference: text after the last "####" (GSM8K), else the
// last \boxed{...}, else the whole reference.
//
// Both sides are then normalised (NormalizeMathAnswer) and, when both parse as
// numbers (ParseMathNumber), compared numerically: exactly as rationals when
// both are exact, else with relative tolerance 1e-6. Otherwise the normalised
// strings are compared. Choices worth knowing:
//   - "50%" and "50\%" mean 50 (the sign is dropped, as MATH answers write it);
//     they do NOT equal 0.5.
//   - U+2212 (minus sign) and U+2013 (en dash) before a number are a minus.
//   - Thousands separators: "1,234", "1{,}234" and "1\,234" are 1234; a comma
//     is a separator only before exactly three digits, so "1,2" is a tuple.
//   - A decimal with more than 6 digits after the point is taken as rounded
//     and compared with the tolerance (0.3333333 == 1/3, but 0.333 != 1/3).
//   - Integers too long for 64 bits are compared digit by digit (no
//     tolerance); other values that overflow 64-bit rationals (1e30) use it.
//   - Nothing is evaluated: "\frac{1}{\sqrt{4}}" is not 0.5, it is compared as
//     a string (with "\sqrt4" == "\sqrt{4}", "\dfrac" == "\frac").
//   - A trailing unit in \text{...}/\mbox{...} ("5\text{ cm}"), degrees
//     ("90^\circ") and "\$" are dropped; "x = 5" compares as 5.
class MathVerifier : public Verifier {
 public:
  absl::StatusOr<VerifyResult> Verify(const std::string& completion_answer,
                                      const std::string& reference) const override;
  std::string Describe() const override { return "math"; }
};

// Trimmed string equality; `case_insensitive` folds ASCII letters only.
// The reference is used as is (no "####" or \boxed extraction).
class ExactVerifier : public Verifier {
 public:
  explicit ExactVerifier(bool case_insensitive) : case_insensitive_(case_insensitive) {}
  absl::StatusOr<VerifyResult> Verify(const std::string& completion_answer,
                                      const std::string& reference) const override;
  std::string Describe() const override { return case_insensitive_ ? "exact-ci" : "exact"; }

 private:
  bool case_insensitive_;
};

// The answer is correct when a PCRE2 pattern (UTF-8 mode) matches somewhere in
// it; anchor with ^...$ (or \A...\z) for a whole-answer match, use (?i) for
// case-insensitive. Every "{reference}" in the pattern is replaced by the
// trimmed reference with its metacharacters escaped, so it matches literally;
// without the placeholder the reference is ignored. Invalid UTF-8 in the
// answer never matches across the bad bytes but is not an error.
class RegexVerifier : public Verifier {
 public:
  // Compiles `pattern` (with the placeholder replaced by an empty literal to
  // check its syntax); the error names the pattern and the offset.
  static absl::StatusOr<std::unique_ptr<RegexVerifier>> Create(const std::string& pattern);
  ~RegexVerifier() override;
  RegexVerifier(const RegexVerifier&) = delete;
  RegexVerifier& operator=(const RegexVerifier&) = delete;

  absl::StatusOr<VerifyResult> Verify(const std::string& completion_answer,
                                      const std::string& reference) const override;
  std::string Describe() const override { return "regex:" + pattern_; }

 private:
  explicit RegexVerifier(std::string pattern) : pattern_(std::move(pattern)) {}
  std::string pattern_;
  bool uses_reference_ = false;
  void* code_ = nullptr;  // pcre2_code_8*, compiled once when !uses_reference_
};

// Runs an external program per answer. The program gets, on stdin, one JSON
// object {"answer": ..., "reference": ...} (UTF-8; invalid bytes replaced by
// U+FFFD) followed by a newline, and decides by its exit status: 0 = correct,
// 1 = wrong, anything else (another code, a signal, failing to start, running
// past the timeout) = a Status error. The first 4 KiB of its stdout+stderr
// become the result's detail.
//
// The program is started directly with posix_spawnp (PATH is searched) and the
// given argv: no shell is involved, so nothing in an answer can inject a
// command. Who wants a shell writes it: "command:/bin/sh -c 'grep -q 5'".
// The child gets its own process group, killed as a whole at the timeout.
class CommandVerifier : public Verifier {
 public:
  // REQUIRES: argv non-empty, timeout_seconds > 0.
  CommandVerifier(std::vector<std::string> argv, double timeout_seconds)
      : argv_(std::move(argv)), timeout_seconds_(timeout_seconds) {}
  absl::StatusOr<VerifyResult> Verify(const std::string& completion_answer,
                                      const std::string& reference) const override;
  std::string Describe() const override;

 private:
  std::vector<std::string> argv_;
  double timeout_seconds_;
};

struct VerifierOptions {
  // Wall-clock limit for one run of a "command:" verifier.
  double command_timeout_seconds = 60.0;
};

// Builds a verifier from a spec (see the top of this file). "command:" splits
// its argument into argv like a shell would split words: whitespace separates,
// '...' and "..." quote, backslash escapes; nothing else is interpreted.
// Errors: unknown spec, empty regex/command, bad regex, unbalanced quotes.
absl::StatusOr<std::unique_ptr<Verifier>> MakeVerifier(const std::string& spec,
                                                       const VerifierOptions& options = {});

}  // namespace retort

#endif  // RETORT_DISTILL_VERIFY_H_
