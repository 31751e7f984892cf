#include "distill/math_answer.h"

#include <string>

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(MathHelpersTest, ExtractLastBoxed) {
  EXPECT_EQ(ExtractLastBoxed("a \\boxed{1} b \\boxed{\\frac{a}{b}} c"), "\\frac{a}{b}");
  EXPECT_EQ(ExtractLastBoxed("\\boxed{\\{x\\}}"), "\\{x\\}");
  EXPECT_EQ(ExtractLastBoxed("\\fbox{7} then \\boxed{8}"), "8");
  EXPECT_EQ(ExtractLastBoxed("\\boxed{8} then \\fbox{7}"), "7");
  EXPECT_FALSE(ExtractLastBoxed("no box").has_value());
  EXPECT_FALSE(ExtractLastBoxed("\\boxed{unclosed").has_value());
  EXPECT_FALSE(ExtractLastBoxed("\\boxedx{1}").has_value());
}

TEST(MathHelpersTest, ExtractLastNumber) {
  EXPECT_EQ(ExtractLastNumber("The answer is 1,234."), "1,234");
  EXPECT_EQ(ExtractLastNumber("= -3/4"), "-3/4");
  EXPECT_EQ(ExtractLastNumber("$\\frac{1}{2}$"), "\\frac{1}{2}");
  EXPECT_EQ(ExtractLastNumber("it is 50%"), "50%");
  EXPECT_EQ(ExtractLastNumber("10-3"), "3");
  EXPECT_EQ(ExtractLastNumber("values 1,2,3"), "3");
  EXPECT_EQ(ExtractLastNumber("x 1e3 y"), "1e3");
  EXPECT_EQ(ExtractLastNumber("5 eggs"), "5");
  EXPECT_FALSE(ExtractLastNumber("none").has_value());
}

TEST(MathHelpersTest, ReferenceAndNormalize) {
  EXPECT_EQ(ExtractReferenceAnswer("work\n#### 42"), "42");
  EXPECT_EQ(ExtractReferenceAnswer("so \\boxed{7}."), "7");
  EXPECT_EQ(ExtractReferenceAnswer("  3/4 "), "3/4");
  EXPECT_EQ(NormalizeMathAnswer("$\\dfrac{1}{2}$"), "\\frac{1}{2}");
  EXPECT_EQ(NormalizeMathAnswer("\\left( 1, 2 \\right)"), "(1,2)");
  EXPECT_EQ(NormalizeMathAnswer("\\leftarrow"), "\\leftarrow");
  EXPECT_EQ(NormalizeMathAnswer("\\pi r"), "\\pi r");
  EXPECT_EQ(NormalizeMathAnswer("\\frac12"), "\\frac{1}{2}");
}

}  // namespace
}  // namespace retort
