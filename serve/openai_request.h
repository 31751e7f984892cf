// The OpenAI request side of the server: a /v1/completions or
// /v1/chat/completions body checked and turned into a CompletionJob, or the
// OpenAI-style error to answer with (status, message, type, param, code).
//
// What differs from OpenAI (refused with 400 rather than silently ignored):
// echo, best_of > 1, suffix, logit_bias, non-zero frequency/presence
// penalties, several prompts in one request. Extensions as in vLLM: top_k,
// min_p, repetition_penalty, stop_token_ids, ignore_eos,
// chat_template_kwargs, add_generation_prompt, return_token_ids.
//
// Thread-safety: ParseCompletionRequest may be called from many threads.
#ifndef RETORT_SERVE_OPENAI_REQUEST_H_
#define RETORT_SERVE_OPENAI_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/sampler.h"
#include "serve/text_util.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort::serve {

inline constexpr int kMaxChoices = 16;
inline constexpr int kMaxTopLogprobs = 20;
inline constexpr int kMaxStopStrings = 16;

// An error answer: HTTP status and the fields of OpenAI's {"error": {...}}
// (an empty param or code is sent as null).
struct ApiError {
  ApiError(int status, std::string message, std::string type = "invalid_request_error",
           std::string param = "", std::string code = "")
      : status(status),
        message(std::move(message)),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string message;
  std::string type;
  std::string param;
  std::string code;
};

// 400 "\"field\": expected EXPECTED".
ApiError BadField(const std::string& field, const std::string& expected);
// 404 model_not_found for a model this server does not serve.
ApiError UnknownModel(const std::string& name, const std::string& served);

// What requests are checked against: the served model.
struct RequestContext {
  std::string model_name;
  int64_t max_tokens_limit = 0;  // largest max_tokens (already capped at the context)
  int64_t context_length = 0;    // max_position_embeddings
  int64_t vocab_size = 0;
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;  // null: chat requests get 400
  std::vector<int32_t> eos_ids;                 // stop ids unless ignore_eos
};

// Everything one request needs to run, decided before anything is sent.
struct CompletionJob {
  bool chat = false;
  std::string id;  // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;
  std::vector<int32_t> prompt;
  int n = 1;
  int64_t max_tokens = 16;
  SamplerOptions sampler;
  bool seeded = false;  // choice i then samples with seed + i
  std::vector<std::string> stop;
  std::vector<int32_t> stop_ids;
  int top_logprobs = -1;  // < 0: none
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
  bool starts_in_reasoning = false;  // the rendered prompt ends with <think>
};

// Parses and checks a request body; fills `job` or returns the error.
std::optional<ApiError> ParseCompletionRequest(const std::string& body, bool chat,
                                               const RequestContext& context, CompletionJob* job);

}  // namespace retort::serve

#endif  // RETORT_SERVE_OPENAI_REQUEST_H_
