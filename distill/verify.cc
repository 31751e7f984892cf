#include "distill/verify.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/status.h"
#include "core/subprocess.h"

namespace retort {
namespace {

std::string Trim(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

std::string Truncate(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  return s.substr(0, n) + "...";
}

}  // namespace

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
    std::optional<std::string> ia = CanonicalMathInteger(result.extracted);
    std::optional<std::string> ib = CanonicalMathInteger(ref);
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
    } else if (u < 0x80 && !absl::ascii_isdigit(c) && !absl::ascii_isalpha(c)) {
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
  const std::string check = absl::StrReplaceAll(pattern, {{kReferencePlaceholder, ""}});
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
    pattern =
        absl::StrReplaceAll(pattern_, {{kReferencePlaceholder, EscapeForPattern(Trim(reference))}});
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

absl::StatusOr<VerifyResult> CommandVerifier::Verify(const std::string& completion_answer,
                                                     const std::string& reference) const {
  if (argv_.empty()) {
    return absl::InvalidArgumentError("command verifier: empty command");
  }
  const std::string& name = argv_[0];
  nlohmann::json request = {{"answer", completion_answer}, {"reference", reference}};
  const std::string input =
      request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  SubprocessOptions run;
  run.timeout_seconds = timeout_seconds_;
  run.max_output_bytes = 4096;
  absl::StatusOr<SubprocessResult> ran = RunSubprocess(argv_, input, run);
  if (!ran.ok()) {
    return absl::Status(ran.status().code(),
                        absl::StrCat("command verifier: ", ran.status().message()));
  }
  std::string tail = Trim(ran->output);
  VerifyResult result;
  result.extracted = Trim(completion_answer);
  if (ran->exited && ran->exit_code <= 1) {
    result.correct = ran->exit_code == 0;
    result.detail = absl::StrCat("exit ", ran->exit_code, tail.empty() ? "" : ": ", tail);
    return result;
  }
  if (ran->exited) {
    return absl::InternalError(absl::StrCat("command verifier: '", name, "' exited with status ",
                                            ran->exit_code, " (0 = correct, 1 = wrong expected)",
                                            tail.empty() ? "" : ": ", Truncate(tail, 500)));
  }
  return absl::InternalError(absl::StrCat("command verifier: '", name, "' was killed by signal ",
                                          ran->signal, tail.empty() ? "" : ": ",
                                          Truncate(tail, 500)));
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
    if (absl::ascii_isspace(c)) {
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

}  // namespace retort
