// The OpenAI response side of the server: the JSON of answers, errors, the
// model list, log-probs and streamed (SSE) chunks, byte for byte what
// OpenAI clients parse.
//
// Log-probs are the model's own (log-softmax of the raw logits, as vLLM
// reports them); every entry also carries "token_id" (an extension), and a
// non-finite log-prob is written as -9999. With echo, the legacy lists start
// with the prompt's tokens (the first one's log-prob and top_logprobs null)
// and text_offset counts the code points of the tokens before, as vLLM.
//
// prompt_logprobs (vLLM's layout): one entry per prompt token, the first
// null, every other {"ID": {"logprob", "rank", "decoded_token"}, ...}
// holding the prompt token itself (rank: 1 + the number of more likely
// tokens) and its K most likely alternatives (ranks 1..K), so K or K + 1
// keys; keys are token ids as strings, the prompt token's first.
//
// stop_reason, as vLLM sets it: the stop string matched, or the stop token id
// sampled (any but the tokenizer's EOS); null otherwise.
//
// All functions are pure and thread-safe.
#ifndef RETORT_SERVE_OPENAI_RESPONSE_H_
#define RETORT_SERVE_OPENAI_RESPONSE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "serve/openai_request.h"
#include "serve/scheduler.h"
#include "serve/text_stream.h"
#include "serve/text_util.h"
#include "text/tokenizer.h"

namespace retort::serve {

// One choice: what was generated and, with echo and logprobs, the prompt's
// scores.
struct ChoiceResult {
  std::string text;            // as generated, cut at a stop string
  std::string reasoning;       // chat: the text split by the reasoning parser
  std::string content;         //
  bool saw_reasoning = false;  // chat: reasoning_content is sent
  TextDelta reasoning_tail;    // what the split held back to the end (streaming)
  std::vector<GeneratedToken> tokens;
  std::vector<size_t> offsets;  // text_offset (code points) per token
  std::string finish_reason;    // "stop", "length", "abort"
  Json stop_reason = nullptr;   // null, the stop string or the stop token id
  // Echo with logprobs, or prompt_logprobs: the log-probs of prompt[1..n)
  // (PromptLogprobs) with CompletionJob::prompt_top_k() alternatives each.
  std::vector<GeneratedToken> prompt_scores;
};

// {"error": {"message", "type", "param", "code"}}.
Json ErrorJson(const ApiError& error);

// GET /v1/models/{id}; /v1/models lists it.
Json ModelCardJson(const std::string& model_name, int64_t created, int64_t max_model_len);
Json ModelListJson(const Json& card);

// {"prompt_tokens", "completion_tokens", "total_tokens"}.
Json UsageJson(const CompletionJob& job, int64_t completion_tokens);

// Log-probs of tokens[begin, end) in the job's format: chat's {"content":
// [...]} or the legacy parallel lists (with text_offset from `offsets`).
Json LogprobsJson(const CompletionJob& job, const Tokenizer& tokenizer,
                  const std::vector<GeneratedToken>& tokens, const std::vector<size_t>& offsets,
                  size_t begin, size_t end);

// ---- non-streamed answers

// A choice's "prompt_logprobs": `scores` are those of prompt[1..n); at most
// `top_k` of each one's alternatives are written.
Json PromptLogprobsJson(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                        const std::vector<GeneratedToken>& scores, int top_k);

// One entry of "choices" (`index` picks the prompt: CompletionJob::prompt_of);
// with prompt_logprobs it ends with "prompt_logprobs".
Json ChoiceJson(const CompletionJob& job, const Tokenizer& tokenizer, int index,
                const ChoiceResult& result);
// The whole answer.
Json CompletionJson(const CompletionJob& job, const std::string& model_name, Json choices,
                    int64_t completion_tokens);

// ---- streamed answers: "data: {chunk}\n\n" events ending in kSseDone

inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";
std::string SseEvent(const Json& chunk);

// A chunk carrying one choice.
Json ChunkJson(const CompletionJob& job, const std::string& model_name, Json choice);
// The last chunk when stream_options.include_usage: no choices, the usage.
Json UsageChunkJson(const CompletionJob& job, const std::string& model_name,
                    int64_t completion_tokens);
// Chat's first chunk of a choice: {"role": "assistant", "content": ""}.
Json RoleChoiceJson(int index);
// Text that became final (chat: a delta with reasoning_content and/or
// content; completions: "text"), with its tokens' log-probs or null.
Json TextChoiceJson(const CompletionJob& job, int index, const TextDelta& delta, Json logprobs);
// Chat: the reasoning split's held-back rest, sent after the text.
Json ReasoningTailChoiceJson(int index, const TextDelta& tail);
// The choice's last chunk: empty text, the finish reason (and token_ids
// when asked).
Json FinishChoiceJson(const CompletionJob& job, int index, const ChoiceResult& result);

}  // namespace retort::serve

#endif  // RETORT_SERVE_OPENAI_RESPONSE_H_
