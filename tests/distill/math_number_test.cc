#include "distill/math_number.h"

#include <optional>
#include <string>

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(MathHelpersTest, ParseNumbers) {
  auto exact = [](const std::string& s, int64_t num, int64_t den) {
    std::optional<MathNumber> m = ParseMathNumber(s);
    ASSERT_TRUE(m.has_value()) << s;
    EXPECT_TRUE(m->exact) << s;
    EXPECT_EQ(m->numerator, num) << s;
    EXPECT_EQ(m->denominator, den) << s;
  };
  exact("0.75", 3, 4);
  exact("-1,234", -1234, 1);
  exact("\\frac{6}{-8}", -3, 4);
  exact("1e-3", 1, 1000);
  exact("2.5e2", 250, 1);
  exact("\\frac{\\frac{1}{2}}{3}", 1, 6);
  std::optional<MathNumber> big = ParseMathNumber("1e30");
  ASSERT_TRUE(big.has_value());
  EXPECT_FALSE(big->exact);
  EXPECT_DOUBLE_EQ(big->value, 1e30);
  EXPECT_FALSE(ParseMathNumber("1/0").has_value());
  EXPECT_FALSE(ParseMathNumber("x").has_value());
  EXPECT_FALSE(ParseMathNumber("1.2.3").has_value());
  EXPECT_FALSE(ParseMathNumber("\\sqrt{2}").has_value());
  // Overflow in a product of exact rationals falls back to the double.
  std::optional<MathNumber> q = ParseMathNumber("\\frac{9223372036854775807}{3}");
  ASSERT_TRUE(q.has_value());
  EXPECT_NEAR(q->value, 9223372036854775807.0 / 3, 1e3);
}

}  // namespace
}  // namespace retort
