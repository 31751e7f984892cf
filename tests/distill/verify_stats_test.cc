#include "distill/verify_stats.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace retort {
namespace {

// ---------------------------------------------------------------------------
// pass@k and the summary.

double Pass(int n, int c, int k) {
  absl::StatusOr<double> v = PassAtK(n, c, k);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::nan("");
}

TEST(PassAtKTest, HandComputed) {
  EXPECT_DOUBLE_EQ(Pass(5, 2, 1), 0.4);
  // 1 - C(3,2)/C(5,2) = 1 - 3/10.
  EXPECT_DOUBLE_EQ(Pass(5, 2, 2), 0.7);
  EXPECT_DOUBLE_EQ(Pass(5, 0, 1), 0.0);
  EXPECT_DOUBLE_EQ(Pass(5, 0, 5), 0.0);
  EXPECT_DOUBLE_EQ(Pass(5, 4, 2), 1.0);  // n - c = 1 < k
  EXPECT_DOUBLE_EQ(Pass(5, 5, 1), 1.0);
  EXPECT_DOUBLE_EQ(Pass(4, 1, 4), 1.0);
  // 1 - C(7,3)/C(10,3) = 1 - 35/120.
  EXPECT_NEAR(Pass(10, 3, 3), 1.0 - 35.0 / 120.0, 1e-15);
  // Large n stays finite and matches the closed form via lgamma.
  double direct = 1.0 - std::exp(std::lgamma(1000 - 10 + 1) - std::lgamma(1000 - 10 - 100 + 1) -
                                 std::lgamma(1000 + 1) + std::lgamma(1000 - 100 + 1));
  EXPECT_NEAR(Pass(1000, 10, 100), direct, 1e-9);
}

TEST(PassAtKTest, Errors) {
  EXPECT_FALSE(PassAtK(5, 2, 0).ok());
  EXPECT_FALSE(PassAtK(5, 6, 1).ok());
  EXPECT_FALSE(PassAtK(5, -1, 1).ok());
  EXPECT_FALSE(PassAtK(3, 1, 4).ok());
}

TEST(SummaryTest, JsonAndText) {
  std::vector<PromptStats> prompts = {{"p1", 4, 4}, {"p2", 4, 1}, {"p3", 4, 0}, {"p4", 2, 1}};
  absl::StatusOr<nlohmann::ordered_json> s = SummarizeVerification(prompts, {4, 2});
  ASSERT_TRUE(s.ok()) << s.status();
  const nlohmann::ordered_json& j = *s;
  EXPECT_EQ(j["prompts"], 4);
  EXPECT_EQ(j["samples"], 14);
  EXPECT_EQ(j["correct"], 6);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), 6.0 / 14.0);
  EXPECT_DOUBLE_EQ(j["prompt_accuracy"].get<double>(), (1.0 + 0.25 + 0.0 + 0.5) / 4.0);
  // pass@1 = mean of c/n over all four prompts.
  EXPECT_DOUBLE_EQ(j["pass@k"]["1"].get<double>(), (1.0 + 0.25 + 0.0 + 0.5) / 4);
  // pass@2: p1 1, p2 1 - C(3,2)/C(4,2) = 0.5, p3 0, p4 1.
  EXPECT_DOUBLE_EQ(j["pass@k"]["2"].get<double>(), (1.0 + 0.5 + 0.0 + 1.0) / 4);
  // pass@4 only over prompts with n >= 4: p1 1, p2 1, p3 0.
  EXPECT_DOUBLE_EQ(j["pass@k"]["4"].get<double>(), 2.0 / 3.0);
  EXPECT_EQ(j["pass@k_prompts"]["4"], 3);
  EXPECT_EQ(j["pass@k_prompts"]["1"], 4);
  // ks sorted and deduplicated, 1 first.
  std::vector<std::string> keys;
  for (const auto& [k, v] : j["pass@k"].items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"1", "2", "4"}));
  ASSERT_EQ(j["per_prompt"].size(), 4u);
  EXPECT_EQ(j["per_prompt"][1]["id"], "p2");
  EXPECT_DOUBLE_EQ(j["per_prompt"][1]["accuracy"].get<double>(), 0.25);

  std::string text = FormatVerificationSummary(j, 2);
  EXPECT_NE(text.find("prompts 4  samples 14  correct 6"), std::string::npos) << text;
  EXPECT_NE(text.find("pass@4"), std::string::npos) << text;
  EXPECT_NE(text.find("0.6667"), std::string::npos) << text;
  // Worst prompts first: p3 (0/4) then p2 (1/4); the other two are counted.
  EXPECT_LT(text.find("p3"), text.find("p2")) << text;
  EXPECT_EQ(text.find("p1 "), std::string::npos) << text;
  EXPECT_NE(text.find("(2 more prompts)"), std::string::npos) << text;
}

TEST(SummaryTest, EdgeCases) {
  absl::StatusOr<nlohmann::ordered_json> empty = SummarizeVerification({}, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE((*empty)["accuracy"].is_null());
  EXPECT_TRUE((*empty)["pass@k"]["1"].is_null());
  EXPECT_FALSE(FormatVerificationSummary(*empty).empty());
  // A prompt with no samples counts as a prompt but not in the means.
  absl::StatusOr<nlohmann::ordered_json> s = SummarizeVerification({{"a", 0, 0}, {"b", 2, 2}}, {8});
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ((*s)["prompt_accuracy"].get<double>(), 1.0);
  EXPECT_TRUE((*s)["pass@k"]["8"].is_null());
  EXPECT_EQ((*s)["pass@k_prompts"]["8"], 0);
  EXPECT_FALSE(SummarizeVerification({{"a", 2, 3}}, {}).ok());
  EXPECT_FALSE(SummarizeVerification({{"a", 2, 1}}, {0}).ok());
  // Malformed JSON handed to the formatter does not throw.
  nlohmann::ordered_json broken = {{"pass@k", 5}};
  EXPECT_FALSE(FormatVerificationSummary(broken).empty());
}

}  // namespace
}  // namespace retort
