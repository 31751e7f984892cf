// The OpenAI request side of the server: a /v1/completions or
// /v1/chat/completions body checked and turned into a CompletionJob, or the
// OpenAI-style error to answer with (status, message, type, param, code).
//
// /v1/completions takes "prompt" as a string, a list of strings, a list of
// token ids or a list of token-id lists: one choice per prompt and per n, in
// that order (choice index = prompt * n + i, as vLLM). "echo": true puts the
// prompt in front of each choice's text and, with "logprobs", the prompt
// tokens' log-probs in front of the generated ones (the first token's are
// null); "max_tokens": 0 then scores the prompt without generating (what
// lm-evaluation-harness's log-likelihood requests need).
//
// "prompt_logprobs": K (vLLM's extension, an integer in [0, kMaxTopLogprobs])
// adds each choice's "prompt_logprobs": per prompt token the log-prob of that
// token, its rank and the K most likely alternatives (the first token's entry
// null); see serve/openai_response.h. It is scored as echo's log-probs are,
// and it too allows "max_tokens": 0.
//
// What differs from OpenAI (refused with 400 rather than silently ignored):
// best_of > 1, suffix, logit_bias, non-zero frequency/presence penalties,
// response_format other than {"type": "text"}, tools, tool_choice other than
// "none", functions and function_call (no constrained decoding or tool-call
// parsing), echo or prompt_logprobs with stream, echo or prompt_logprobs in
// chat. Extensions as in vLLM: top_k, min_p, repetition_penalty,
// stop_token_ids, ignore_eos, chat_template_kwargs, add_generation_prompt,
// return_token_ids, prompt_logprobs.
//
// Limits, checked before the expensive step they guard: JSON nesting
// (kMaxJsonDepth, before parsing), message count and prompt bytes (before
// rendering and tokenizing, RequestContext::max_prompt_bytes), and prompts x
// n x max_tokens (RequestContext::max_request_tokens).
//
// Thread-safety: ParseCompletionRequest may be called from many threads.
#ifndef RETORT_SERVE_OPENAI_REQUEST_H_
#define RETORT_SERVE_OPENAI_REQUEST_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/sampler.h"
#include "serve/text_util.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort::serve {

inline constexpr int kMaxChoices = 16;    // n
inline constexpr int kMaxPrompts = 1024;  // prompts x n in one request
inline constexpr int kMaxTopLogprobs = 20;
inline constexpr int kMaxStopStrings = 16;
inline constexpr int kMaxMessages = 4096;  // chat messages in one request

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
  // The tokenizer's EOS: stopping on it leaves stop_reason null, any other
  // stop id is reported (vLLM's rule).
  int32_t eos_id = -1;
  // Largest prompts x n x max_tokens (tokens one request may generate); 0: no
  // limit. A request that leaves max_tokens out gets it lowered to fit.
  int64_t max_request_tokens = 0;
  // Prompt text (a string prompt, or a chat's message contents together)
  // longer than this cannot fit the context whatever it encodes to, and is
  // refused before it is rendered or tokenized; 0: no check.
  int64_t max_prompt_bytes = 0;
};

// The max_prompt_bytes for a tokenizer and context: context_length tokens of
// the longest token's bytes, doubled for normalizers that shrink text.
int64_t MaxPromptBytes(const Tokenizer& tokenizer, int64_t context_length);

// Everything one request needs to run, decided before anything is sent.
struct CompletionJob {
  bool chat = false;
  std::string id;  // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;
  std::vector<std::vector<int32_t>> prompts;  // chat: one
  std::vector<std::string> prompt_texts;  // echo: each prompt as text, its choices start with it
  int n = 1;
  int64_t max_tokens = 16;  // 0: score the prompt only (echo or prompt_logprobs), generate nothing
  bool echo = false;
  SamplerOptions sampler;
  bool seeded = false;  // choice i of a prompt then samples with seed + i
  std::vector<std::string> stop;
  std::vector<int32_t> stop_ids;
  int32_t silent_stop_id = -1;  // the EOS that ends without a stop_reason (-1 with ignore_eos)
  int top_logprobs = -1;        // < 0: none
  int prompt_logprobs = -1;     // < 0: none; K >= 0: the prompt's log-probs with the top K
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
  bool starts_in_reasoning = false;  // the rendered prompt ends with <think>

  // Choices in the answer: prompts x n, choice c runs prompt c / n.
  int choices() const { return static_cast<int>(prompts.size()) * n; }
  const std::vector<int32_t>& prompt_of(int choice) const { return prompts[choice / n]; }
  int64_t prompt_tokens() const;  // over all prompts (usage)
  // Whether the prompt is scored (echo with logprobs, or prompt_logprobs),
  // and with how many alternatives per token: the larger of the two asks.
  bool scores_prompt() const { return (echo && top_logprobs >= 0) || prompt_logprobs >= 0; }
  int prompt_top_k() const { return std::max(echo ? top_logprobs : -1, prompt_logprobs); }
};

// Parses and checks a request body; fills `job` or returns the error.
std::optional<ApiError> ParseCompletionRequest(const std::string& body, bool chat,
                                               const RequestContext& context, CompletionJob* job);

}  // namespace retort::serve

#endif  // RETORT_SERVE_OPENAI_REQUEST_H_
