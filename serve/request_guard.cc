#include "serve/request_guard.h"

#include <cctype>
#include <cstddef>

#include "absl/strings/str_cat.h"
#include "core/json_limits.h"

namespace retort::serve {
namespace {

std::string_view StripSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  }
  return true;
}

}  // namespace

std::optional<ApiError> CheckJsonDepth(std::string_view body, int limit) {
  if (retort::CheckJsonDepth(body, "request body", {.max_depth = limit}).ok()) return std::nullopt;
  return ApiError{
      400, absl::StrCat("the request body nests arrays/objects more than ", limit, " levels deep")};
}

std::optional<ApiError> CheckApiKey(std::string_view expected_key, std::string_view authorization) {
  if (expected_key.empty()) return std::nullopt;
  auto refuse = [](std::string message) {
    return ApiError{401, std::move(message), "invalid_request_error", "", "invalid_api_key"};
  };
  authorization = StripSpaces(authorization);
  if (authorization.empty()) {
    return refuse(
        "missing API key: send it as the header \"Authorization: Bearer KEY\" (this server was "
        "started with --api-key or RETORT_API_KEY)");
  }
  constexpr std::string_view kScheme = "bearer ";
  if (!StartsWithIgnoreCase(authorization, kScheme)) {
    return refuse("the Authorization header must be \"Bearer KEY\"");
  }
  const std::string_view key = StripSpaces(authorization.substr(kScheme.size()));
  // Constant time in the position of the first difference.
  unsigned char diff = key.size() == expected_key.size() ? 0 : 1;
  for (size_t i = 0; i < expected_key.size(); ++i) {
    const unsigned char k = i < key.size() ? static_cast<unsigned char>(key[i]) : 0;
    diff |= static_cast<unsigned char>(k ^ static_cast<unsigned char>(expected_key[i]));
  }
  if (diff != 0) return refuse("incorrect API key provided");
  return std::nullopt;
}

}  // namespace retort::serve
