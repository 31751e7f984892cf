#include "core/json_limits.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace retort {
namespace {

using ::testing::HasSubstr;

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(JsonLimitsTest, ParsesOrdinaryDocuments) {
  absl::StatusOr<nlohmann::json> j = ParseJson(R"({"a": [1, {"b": "x"}]})", "config.json");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["a"][1]["b"], "x");
  absl::StatusOr<nlohmann::ordered_json> o = ParseOrderedJson(R"({"z": 1, "a": 2})", "r.json");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->begin().key(), "z");
}

TEST(JsonLimitsTest, AcceptsNestingUpToTheLimit) {
  EXPECT_TRUE(ParseJson(Nested(64), "x.json").ok());
  EXPECT_TRUE(ParseJson(Nested(3), "x.json", JsonLimits{.max_depth = 3}).ok());
}

TEST(JsonLimitsTest, RefusesDeepNestingWithoutRecursing) {
  // Deep enough to overflow any stack if the parser saw it.
  std::string deep = std::string(2'000'000, '[');
  absl::StatusOr<nlohmann::json> j = ParseJson(deep, "model/tokenizer.json");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(j.status().message(),
              HasSubstr("model/tokenizer.json: JSON nests deeper than 64 levels (at byte 64)"));
  EXPECT_FALSE(ParseJson(Nested(65), "x.json").ok());
  EXPECT_FALSE(ParseOrderedJson(std::string(100, '{'), "x.json").ok());
  EXPECT_FALSE(ParseJson(Nested(4), "x.json", JsonLimits{.max_depth = 3}).ok());
}

TEST(JsonLimitsTest, BracketsInsideStringsDoNotCount) {
  std::string s = "[\"" + std::string(1000, '[') + "\\\"[[[\"]";
  absl::StatusOr<nlohmann::json> j = ParseJson(s, "x.json");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)[0].get<std::string>().size(), 1004u);
  // An escaped backslash ends the escape: the quote after it closes the string.
  EXPECT_FALSE(CheckJsonDepth("[\"\\\\\"" + std::string(70, '['), "x.json").ok());
}

TEST(JsonLimitsTest, SyntaxErrorsAreOneLineStatuses) {
  absl::StatusOr<nlohmann::json> j = ParseJson("{\"a\": ", "model/config.json");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(j.status().message(), HasSubstr("model/config.json: not valid JSON: parse error"));
  EXPECT_THAT(std::string(j.status().message()), ::testing::Not(HasSubstr("\n")));
  EXPECT_THAT(std::string(j.status().message()), ::testing::Not(HasSubstr("json.exception")));
  EXPECT_FALSE(ParseJson("", "empty.json").ok());
  absl::StatusOr<nlohmann::json> bytes = ParseJson("\"\xff\n\"", "bytes.json");
  ASSERT_FALSE(bytes.ok());
  for (unsigned char c : bytes.status().message()) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << int{c};
}

}  // namespace
}  // namespace retort
