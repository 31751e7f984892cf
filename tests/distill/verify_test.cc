#include "distill/verify.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace retort {
namespace {

// ---------------------------------------------------------------------------
// Math verifier: a table of (completion answer, reference, expected verdict).

struct MathCase {
  const char* answer;
  const char* reference;
  bool correct;
};

const MathCase kMathCases[] = {
    // \boxed{} extraction, fractions vs decimals.
    {"So the answer is \\boxed{\\frac{3}{4}}.", "0.75", true},
    {"\\boxed{\\frac{3}{4}}", "3/4", true},
    {"\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", true},
    {"\\boxed{\\tfrac34}", "0.75", true},
    {"\\boxed{\\frac{6}{8}}", "\\frac{3}{4}", true},
    {"\\boxed{\\frac{3}{4}}", "0.7", false},
    {"\\boxed{0.50}", "\\frac{1}{2}", true},
    {"\\boxed{.5}", "1/2", true},
    {"\\boxed{0.333}", "\\frac{1}{3}", false},
    {"\\boxed{0.3333333}", "\\frac{1}{3}", true},  // > 6 decimals: tolerance
    {"\\boxed{0.33333333333}", "1/3", true},
    // Thousands separators.
    {"\\boxed{1,000}", "1000", true},
    {"\\boxed{1{,}000}", "1000", true},
    {"\\boxed{1\\,000}", "1000", true},
    {"\\boxed{1,000,000}", "10^6", false},  // powers are not evaluated
    {"\\boxed{1,000,000}", "1000000", true},
    {"\\boxed{1,00}", "100", false},  // not a thousands separator
    // Signs.
    {"\\boxed{-2}", "-2", true},
    {"\\boxed{\xE2\x88\x92"
     "2}",
     "-2", true},  // U+2212 minus sign
    {"\\boxed{+7}", "7", true},
    {"\\boxed{-2}", "2", false},
    {"\\boxed{-\\frac{3}{4}}", "-0.75", true},
    {"\\boxed{\\frac{-3}{4}}", "-3/4", true},
    {"\\boxed{\\frac{3}{-4}}", "-0.75", true},
    // Nested braces, non-numeric answers: string comparison.
    {"\\boxed{\\frac{1}{\\sqrt{4}}}", "\\frac{1}{\\sqrt{4}}", true},
    {"\\boxed{\\frac{1}{\\sqrt{4}}}", "\\frac1{\\sqrt4}", true},
    {"\\boxed{\\frac{1}{\\sqrt{4}}}", "0.5", false},  // nothing is evaluated
    {"\\boxed{2\\sqrt{3}}", "2 \\sqrt{3}", true},
    {"\\boxed{2\\sqrt3}", "2\\sqrt{3}", true},
    {"\\boxed{\\left( 1, 2 \\right)}", "(1,2)", true},
    {"\\boxed{(1,2)}", "(2,1)", false},
    {"\\boxed{\\{1,2\\}}", "\\{1, 2\\}", true},
    {"\\boxed{\\pi r^2}", "\\pi r^2", true},
    {"\\boxed{x^2+1}", "x^2 + 1", true},
    {"\\boxed{\\text{(B)}}", "(B)", true},
    {"\\boxed{B}", "C", false},
    // Last \boxed{} wins; \fbox; unbraced \boxed.
    {"First \\boxed{3}, then corrected: \\boxed{4}", "4", true},
    {"First \\boxed{3}, then corrected: \\boxed{4}", "3", false},
    {"\\fbox{12}", "12", true},
    {"$\\boxed 5$", "5", true},
    {"\\boxed{}", "5", false},
    // No \boxed{}: the last number.
    {"The answer is 1,234.", "1234", true},
    {"There are 3 apples and 5 pears, so 8 fruits.", "8", true},
    {"There are 3 apples and 5 pears, so 8 fruits.", "5", false},
    {"x = -3/4", "-0.75", true},
    {"so x = 10-3 = 7", "7", true},
    {"so the result is $\\frac{1}{2}$", "0.5", true},
    {"the result is $-\\frac{1}{2}$", "-1/2", true},
    {"It is 0.50 of the total", "1/2", true},
    {"about 50%", "50", true},
    {"about 50\\%", "50", true},
    {"about 50%", "0.5", false},  // documented: 50% means 50
    {"about 1e3 units", "1000", true},
    {"roughly 2.5e-3", "0.0025", true},
    {"Final: \xE2\x88\x92"
     "5",
     "-5", true},
    {"no digits here at all", "5", false},
    {"", "5", false},
    // Reference forms: GSM8K "####", \boxed{}.
    {"\\boxed{18}", "Janet sells 16 - 3 - 4 = 9 eggs... 9 * 2 = 18\n#### 18", true},
    {"\\boxed{18}", "#### 1,800", false},
    {"The total is 1800", "#### 1,800", true},
    {"\\boxed{72}", "The answer is \\boxed{72}.", true},
    {"\\boxed{\\frac{1}{2}}", "$\\boxed{\\dfrac{1}{2}}$", true},
    // LaTeX wrappers and units.
    {"\\boxed{5\\text{ cm}}", "5", true},
    {"\\boxed{5 \\mbox{ meters}}", "5", true},
    {"\\boxed{12 \\text{ cm}^2}", "12", true},
    {"\\boxed{5 apples}", "5", true},
    {"\\boxed{3 and 4}", "3", false},
    {"\\boxed{90^\\circ}", "90", true},
    {"\\boxed{90^{\\circ}}", "90", true},
    {"\\boxed{\\$18.50}", "18.5", true},
    {"\\boxed{\\mathrm{42}}", "42", true},
    {"\\boxed{\\text{42}}", "42", true},
    {"\\( \\boxed{42} \\)", "42", true},
    {"\\boxed{x = 5}", "5", true},
    {"\\boxed{k=\\frac{1}{2}}", "0.5", true},
    {"\\boxed{1.5 \\times 10^{3}}", "1500", true},
    {"\\boxed{1.5 \\times 10^3}", "1500", true},
    {"\\boxed{6.02 \\times 10^{23}}", "6.02e23", true},
    {"\\boxed{6.02 \\times 10^{23}}", "6.03e23", false},
    {"\\boxed{{5}}", "5", true},
    {"\\boxed{5.}", "5", true},
    {"\\boxed{005}", "5", true},
    {"\\boxed{5.000}", "5", true},
    // Large and long numbers.
    {"\\boxed{123456789012345678901234567890}", "123456789012345678901234567890", true},
    {"\\boxed{123456789012345678901234567890}", "123,456,789,012,345,678,901,234,567,891",
     false},  // digit by digit
    {"\\boxed{-00123456789012345678901234567890}", "-123,456,789,012,345,678,901,234,567,890",
     true},
    {"\\boxed{9223372036854775807}", "9223372036854775807", true},
    {"\\boxed{10000000000000000000}", "1e19", true},
    {"\\boxed{1/0}", "1/0", true},  // not a number: compared as strings
    {"\\boxed{1/0}", "0", false},
};

TEST(MathVerifierTest, Table) {
  ASSERT_GE(sizeof(kMathCases) / sizeof(kMathCases[0]), 60u);
  MathVerifier verifier;
  for (const MathCase& c : kMathCases) {
    absl::StatusOr<VerifyResult> r = verifier.Verify(c.answer, c.reference);
    ASSERT_TRUE(r.ok()) << c.answer << " vs " << c.reference << ": " << r.status();
    EXPECT_EQ(r->correct, c.correct)
        << "answer: " << c.answer << "\nreference: " << c.reference
        << "\nextracted: " << r->extracted << "\ndetail: " << r->detail;
  }
}

TEST(MathVerifierTest, NoNumberGivesDetail) {
  MathVerifier verifier;
  absl::StatusOr<VerifyResult> r = verifier.Verify("I am not sure what the answer is.", "42");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->correct);
  EXPECT_TRUE(r->extracted.empty());
  EXPECT_NE(r->detail.find("no \\boxed{} and no number"), std::string::npos) << r->detail;
}

TEST(MathVerifierTest, DetailNamesMethod) {
  MathVerifier verifier;
  absl::StatusOr<VerifyResult> r = verifier.Verify("\\boxed{\\frac{3}{4}}", "0.75");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->correct);
  EXPECT_EQ(r->extracted, "\\frac{3}{4}");
  EXPECT_NE(r->detail.find("numeric (exact)"), std::string::npos) << r->detail;
  r = verifier.Verify("so 7", "\\sqrt{2}");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->correct);
  EXPECT_NE(r->detail.find("answer numeric, reference not"), std::string::npos) << r->detail;
}

TEST(MathVerifierTest, EmptyReferenceIsAnError) {
  MathVerifier verifier;
  EXPECT_FALSE(verifier.Verify("\\boxed{1}", "").ok());
  EXPECT_FALSE(verifier.Verify("\\boxed{1}", "####   ").ok());
}

TEST(MathVerifierTest, MalformedInputsDoNotCrash) {
  // Deterministic random strings over tricky tokens: unbalanced braces,
  // truncated commands, separators, huge exponents.
  const char* tokens[] = {"\\boxed",
                          "\\frac",
                          "\\dfrac",
                          "{",
                          "}",
                          "\\{",
                          "\\",
                          "1",
                          "9",
                          "0",
                          ",",
                          ".",
                          "-",
                          "+",
                          "/",
                          "e",
                          "e99999",
                          "^",
                          "%",
                          "\\%",
                          "$",
                          "\\sqrt",
                          "\\text{",
                          "\\times10^",
                          "=",
                          "x",
                          " ",
                          "####",
                          "\xE2\x88\x92",
                          "\xff",
                          "1,000",
                          "\\left("};
  const size_t n_tokens = sizeof(tokens) / sizeof(tokens[0]);
  MathVerifier verifier;
  uint64_t state = 12345;
  auto next = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  for (int iter = 0; iter < 3000; ++iter) {
    std::string answer, reference;
    int len_a = next() % 12, len_r = 1 + next() % 6;
    for (int i = 0; i < len_a; ++i) answer += tokens[next() % n_tokens];
    for (int i = 0; i < len_r; ++i) reference += tokens[next() % n_tokens];
    absl::StatusOr<VerifyResult> r = verifier.Verify(answer, reference);
    // Either a verdict or the empty-reference error; never a crash.
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
          << answer << " | " << reference;
    }
  }
}

// ---------------------------------------------------------------------------
// Exact and regex verifiers.

TEST(ExactVerifierTest, TrimmedEquality) {
  ExactVerifier exact(false), ci(true);
  EXPECT_TRUE(exact.Verify("  Paris \n", "Paris").value().correct);
  EXPECT_FALSE(exact.Verify("paris", "Paris").value().correct);
  EXPECT_TRUE(ci.Verify("paris", " PARIS").value().correct);
  EXPECT_FALSE(ci.Verify("Pariss", "Paris").value().correct);
  EXPECT_FALSE(exact.Verify("42", "#### 42").value().correct);  // no extraction
  EXPECT_EQ(exact.Verify(" a ", "b").value().extracted, "a");
}

TEST(RegexVerifierTest, MatchesAnywhere) {
  auto v = MakeVerifier("regex:answer:\\s*(yes|no)\\b");
  ASSERT_TRUE(v.ok()) << v.status();
  absl::StatusOr<VerifyResult> r = (*v)->Verify("My answer: yes.", "ignored");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->correct);
  EXPECT_EQ(r->extracted, "answer: yes");
  r = (*v)->Verify("My answer: maybe", "ignored");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->correct);
  EXPECT_NE(r->detail.find("no match"), std::string::npos);
}

TEST(RegexVerifierTest, AnchoredAndCaseInsensitive) {
  auto v = MakeVerifier("regex:(?i)^\\s*[A-D]\\s*$");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE((*v)->Verify(" c ", "").value().correct);
  EXPECT_FALSE((*v)->Verify("c or d", "").value().correct);
  EXPECT_FALSE((*v)->Verify("E", "").value().correct);
}

TEST(RegexVerifierTest, ReferencePlaceholderIsLiteral) {
  auto v = MakeVerifier("regex:\\bis {reference}$");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE((*v)->Verify("the answer is 3.5", " 3.5 ").value().correct);
  // '.' in the reference is literal, not "any character".
  EXPECT_FALSE((*v)->Verify("the answer is 3x5", "3.5").value().correct);
  // Metacharacters and UTF-8 in the reference.
  EXPECT_TRUE((*v)->Verify("x is (a+b)*[c]", "(a+b)*[c]").value().correct);
  EXPECT_TRUE((*v)->Verify("x is π/2", "π/2").value().correct);
  EXPECT_TRUE((*v)->Verify("x is \\frac{1}{2}", "\\frac{1}{2}").value().correct);
}

TEST(RegexVerifierTest, InvalidUtf8IsNotAnError) {
  auto v = MakeVerifier("regex:ok");
  ASSERT_TRUE(v.ok());
  absl::StatusOr<VerifyResult> r = (*v)->Verify("\xff\xfe ok", "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->correct);
}

TEST(MakeVerifierTest, Errors) {
  auto bad = MakeVerifier("regex:(unclosed");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("(unclosed"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("offset"), std::string::npos);
  EXPECT_FALSE(MakeVerifier("regex:").ok());
  EXPECT_FALSE(MakeVerifier("command:").ok());
  EXPECT_FALSE(MakeVerifier("command:   ").ok());
  EXPECT_FALSE(MakeVerifier("command:echo 'unbalanced").ok());
  auto unknown = MakeVerifier("maths");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("maths"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("regex:PATTERN"), std::string::npos);
  VerifierOptions zero;
  zero.command_timeout_seconds = 0;
  EXPECT_FALSE(MakeVerifier("command:true", zero).ok());
}

TEST(MakeVerifierTest, Describe) {
  EXPECT_EQ(MakeVerifier("math").value()->Describe(), "math");
  EXPECT_EQ(MakeVerifier("exact").value()->Describe(), "exact");
  EXPECT_EQ(MakeVerifier("exact-ci").value()->Describe(), "exact-ci");
  EXPECT_EQ(MakeVerifier("regex:a+").value()->Describe(), "regex:a+");
  EXPECT_EQ(MakeVerifier("command:test -n 'a b'").value()->Describe(), "command:test -n a b");
}

// ---------------------------------------------------------------------------
// Command verifier.

std::unique_ptr<Verifier> Command(const std::string& spec, double timeout = 10.0) {
  VerifierOptions options;
  options.command_timeout_seconds = timeout;
  auto v = MakeVerifier(spec, options);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? std::move(*v) : nullptr;
}

TEST(CommandVerifierTest, ExitCodes) {
  auto yes = Command("command:true");
  auto no = Command("command:false");
  absl::StatusOr<VerifyResult> r = yes->Verify("5", "5");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->correct);
  r = no->Verify("5", "5");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->correct);
  auto three = Command("command:/bin/sh -c 'echo broken >&2; exit 3'");
  r = three->Verify("5", "5");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("status 3"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("broken"), std::string::npos) << r.status();
  auto killed = Command("command:/bin/sh -c 'kill -9 $$'");
  r = killed->Verify("5", "5");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("signal 9"), std::string::npos) << r.status();
}

TEST(CommandVerifierTest, ReadsJsonOnStdin) {
  // The script compares the JSON it receives with the one expected.
  auto v = Command(
      "command:/bin/sh -c 'read -r line; echo \"got $line\"; "
      "test \"$line\" = \"{\\\"answer\\\":\\\"42\\\",\\\"reference\\\":\\\"42\\\"}\"'");
  absl::StatusOr<VerifyResult> r = v->Verify("42", "42");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->correct) << r->detail;
  EXPECT_NE(r->detail.find("got {\"answer\":\"42\""), std::string::npos) << r->detail;
  r = v->Verify("41", "42");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->correct);
}

TEST(CommandVerifierTest, NoShellInjection) {
  // The answer travels as data on stdin, never through a shell: a hostile
  // answer stays a string. `cat` echoes it back; nothing gets executed.
  const std::string marker = ::testing::TempDir() + "/verify_injected";
  std::remove(marker.c_str());
  auto v = Command("command:cat");
  std::string hostile = "$(touch " + marker + "); `touch " + marker + "`";
  absl::StatusOr<VerifyResult> r = v->Verify(hostile, "x");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->correct);  // cat exits 0
  EXPECT_NE(r->detail.find("$(touch"), std::string::npos) << r->detail;
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "a command was executed";
  // Arguments are passed as argv, not re-split: one argument with a space.
  auto arg = Command("command:test -n 'a b'");
  EXPECT_TRUE(arg->Verify("", "").value().correct);
}

TEST(CommandVerifierTest, ProgramThatIgnoresStdin) {
  // A large answer and a program that never reads it: no SIGPIPE, no hang.
  auto v = Command("command:true");
  std::string big(1 << 20, 'x');
  absl::StatusOr<VerifyResult> r = v->Verify(big, "x");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->correct);
}

TEST(CommandVerifierTest, Timeout) {
  auto v = Command("command:sleep 5", 0.3);
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<VerifyResult> r = v->Verify("1", "1");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(seconds, 3.0);
  // A shell whose child sleeps: the whole process group is killed.
  auto sh = Command("command:/bin/sh -c 'sleep 5; exit 0'", 0.3);
  start = std::chrono::steady_clock::now();
  r = sh->Verify("1", "1");
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(seconds, 3.0);
}

TEST(CommandVerifierTest, BackgroundedGrandchildDoesNotBlock) {
  auto v = Command("command:/bin/sh -c 'sleep 5 & exit 0'", 3.0);
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<VerifyResult> r = v->Verify("1", "1");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->correct);
  EXPECT_LT(seconds, 2.0);
}

TEST(CommandVerifierTest, MissingProgram) {
  auto v = Command("command:/nonexistent/verifier --flag");
  absl::StatusOr<VerifyResult> r = v->Verify("1", "1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/verifier"), std::string::npos) << r.status();
}

TEST(CommandVerifierTest, ConcurrentCalls) {
  auto v = Command(
      "command:/bin/sh -c 'read -r line; case \"$line\" in "
      "*\\\"answer\\\":\\\"even*) exit 0;; *) exit 1;; esac'");
  std::vector<std::thread> threads;
  std::vector<int> verdicts(16, -1);
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<VerifyResult> r = v->Verify(i % 2 == 0 ? "even" : "odd", "");
      verdicts[i] = r.ok() ? (r->correct ? 1 : 0) : -2;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 16; ++i) EXPECT_EQ(verdicts[i], i % 2 == 0 ? 1 : 0) << i;
}

TEST(MathVerifierTest, ConcurrentCalls) {
  auto v = MakeVerifier("math").value();
  std::vector<std::thread> threads;
  std::vector<int> wrong(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (const MathCase& c : kMathCases) {
        auto r = v->Verify(c.answer, c.reference);
        if (!r.ok() || r->correct != c.correct) ++wrong[t];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int w : wrong) EXPECT_EQ(w, 0);
}

}  // namespace
}  // namespace retort
