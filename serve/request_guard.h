// Checks that run on a request before anything expensive sees it: the JSON
// nesting depth (nlohmann's parser recurses once per level, so a deep body
// would overflow the handler thread's stack) and the API key.
//
// Thread-safety: pure functions.
#ifndef RETORT_SERVE_REQUEST_GUARD_H_
#define RETORT_SERVE_REQUEST_GUARD_H_

#include <optional>
#include <string_view>

#include "serve/openai_request.h"

namespace retort::serve {

// The deepest [ / { nesting a request body may have. OpenAI bodies nest a
// handful of levels (messages[i].content[j].text); 64 leaves room for
// chat_template_kwargs and still keeps the parser's recursion shallow.
inline constexpr int kMaxJsonDepth = 64;

// The 400 for a body that opens more than `limit` arrays/objects inside one
// another (core/json_limits.h's scan: linear, brackets in strings skipped),
// or nullopt.
std::optional<ApiError> CheckJsonDepth(std::string_view body, int limit = kMaxJsonDepth);

// Checks an `Authorization` header value against the server's key as OpenAI
// clients send it ("Bearer KEY"). An empty `expected_key` accepts anything.
// Errors: 401 invalid_api_key (missing header, another scheme, wrong key;
// the key itself is never echoed). The comparison takes the same time
// wherever the keys differ.
std::optional<ApiError> CheckApiKey(std::string_view expected_key, std::string_view authorization);

}  // namespace retort::serve

#endif  // RETORT_SERVE_REQUEST_GUARD_H_
