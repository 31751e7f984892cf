// CheckJsonDepth and CheckApiKey: the checks a request meets before
// the JSON parser or a route sees it.
#include "serve/request_guard.h"

#include <string>

#include "gtest/gtest.h"

namespace retort::serve {
namespace {

bool JsonNestingDepthExceeds(std::string_view body, int limit) {
  return CheckJsonDepth(body, limit).has_value();
}

std::string Nested(int depth, char open = '[', char close = ']') {
  return std::string(depth, open) + std::string(depth, close);
}

TEST(JsonNestingDepthTest, CountsTheDeepestNestingOfArraysAndObjects) {
  EXPECT_FALSE(JsonNestingDepthExceeds("", 0));
  EXPECT_FALSE(JsonNestingDepthExceeds("1", 0));
  EXPECT_TRUE(JsonNestingDepthExceeds("[]", 0));
  EXPECT_FALSE(JsonNestingDepthExceeds(Nested(64), 64));
  EXPECT_TRUE(JsonNestingDepthExceeds(Nested(65), 64));
  EXPECT_FALSE(JsonNestingDepthExceeds(Nested(64, '{', '}'), 64));
  EXPECT_TRUE(JsonNestingDepthExceeds(R"({"a": [{"b": [1]}]})", 3));
  EXPECT_FALSE(JsonNestingDepthExceeds(R"({"a": [{"b": [1]}]})", 4));
  // Siblings do not add up: depth, not count.
  EXPECT_FALSE(JsonNestingDepthExceeds("[[1], [2], [3], {\"x\": [4]}]", 3));
  EXPECT_TRUE(JsonNestingDepthExceeds("[[1], [2], [3], {\"x\": [4]}]", 2));
  EXPECT_TRUE(JsonNestingDepthExceeds(Nested(200000), kMaxJsonDepth));
}

TEST(JsonNestingDepthTest, IgnoresBracketsInsideStrings) {
  EXPECT_FALSE(JsonNestingDepthExceeds("{\"k\": \"" + std::string(1000, '[') + "\"}", 1));
  // An escaped quote does not end the string; an escaped backslash does not
  // escape the closing quote.
  EXPECT_FALSE(JsonNestingDepthExceeds(R"(["a\"[[[[", 1])", 1));
  EXPECT_TRUE(JsonNestingDepthExceeds(R"(["a\\", [[1]]])", 2));
  EXPECT_FALSE(JsonNestingDepthExceeds(R"(["a\\", [[1]]])", 3));
}

TEST(JsonNestingDepthTest, StrayClosersCannotBuyDepth) {
  // "]]]]" first must not let the next opens go unnoticed.
  EXPECT_TRUE(JsonNestingDepthExceeds("]]]]" + Nested(5), 4));
}

TEST(JsonNestingDepthTest, CheckJsonDepthSays400WithTheLimit) {
  EXPECT_FALSE(CheckJsonDepth(Nested(kMaxJsonDepth)));
  std::optional<ApiError> e = CheckJsonDepth(Nested(kMaxJsonDepth + 1));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->type, "invalid_request_error");
  EXPECT_NE(e->message.find("64 levels"), std::string::npos) << e->message;
}

TEST(ApiKeyTest, NoKeyConfiguredAcceptsAnything) {
  EXPECT_FALSE(CheckApiKey("", ""));
  EXPECT_FALSE(CheckApiKey("", "Bearer whatever"));
}

TEST(ApiKeyTest, AcceptsOnlyBearerWithTheKey) {
  EXPECT_FALSE(CheckApiKey("sk-secret", "Bearer sk-secret"));
  EXPECT_FALSE(CheckApiKey("sk-secret", "bearer sk-secret"));  // the scheme is case-insensitive
  EXPECT_FALSE(CheckApiKey("sk-secret", "  Bearer   sk-secret "));
  for (const char* header :
       {"", "sk-secret", "Basic sk-secret", "Bearer", "Bearer ", "Bearer sk-secre",
        "Bearer sk-secret2", "Bearer SK-SECRET", "Bearer sk-secreT", "Token sk-secret"}) {
    SCOPED_TRACE(header);
    std::optional<ApiError> e = CheckApiKey("sk-secret", header);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->status, 401);
    EXPECT_EQ(e->type, "invalid_request_error");
    EXPECT_EQ(e->code, "invalid_api_key");
    EXPECT_EQ(e->message.find("sk-secret"), std::string::npos) << "the key leaks: " << e->message;
  }
  EXPECT_NE(CheckApiKey("k", "")->message.find("missing API key"), std::string::npos);
  EXPECT_NE(CheckApiKey("k", "Basic k")->message.find("Bearer"), std::string::npos);
  EXPECT_NE(CheckApiKey("k", "Bearer x")->message.find("incorrect API key"), std::string::npos);
}

}  // namespace
}  // namespace retort::serve
