// EndpointClient: a teacher behind an OpenAI-compatible HTTP API (`retort
// serve`, vLLM, SGLang, llama.cpp's server, hosted APIs), asked for chat
// completions with the knobs distillation needs: n samples per prompt,
// temperature / top-p / seed, max tokens, and token-level log-probs with the
// top alternatives (token strings, and token ids when the server gives them:
// `retort serve` adds "token_id" to every log-prob entry; vLLM's
// return_tokens_as_token_ids writes tokens as "token_id:123").
//
// Scoring (on-policy distillation: the student samples, the teacher scores
// every sampled token): ScoreTokens() asks {base}/completions for vLLM's
// "prompt_logprobs" of a token-id prompt, which vLLM and `retort serve`
// answer (hosted APIs do not).
//
// Reasoning: a choice's reasoning_content is read from "reasoning_content"
// (DeepSeek API, vLLM's reasoning parsers, `retort serve`) or "reasoning"
// (newer vLLM). When a server sends neither but the content carries
// <think>...</think>, the client splits it itself (EndpointOptions::
// split_think_tags), with the same ReasoningSplitter the server uses.
//
// Transport: http:// always; https:// because Debian's cpp-httplib is built
// with OpenSSL (checked at compile time: without it, Create() fails with a
// clear error). The API key is sent as "Authorization: Bearer KEY".
//
// Reliability: each call retries connection errors, timeouts, HTTP 429 and
// 5xx with exponential backoff (initial_backoff_s x 2^attempt, capped at
// max_backoff_s) and jitter (a uniform draw in [d/2, d]); a Retry-After header
// (seconds) lengthens the wait. Other 4xx answers are final. Errors name the
// URL, the HTTP status and the server's message.
//
// Concurrency: ChatCompletionAsync() and ScoreTokensAsync() queue the request
// on the client's own pool of max_in_flight threads (independent of the
// compute thread pool in core/thread_pool.h), so at most max_in_flight
// requests are in flight.
//
// Thread-safety: all const methods, ChatCompletionAsync and ScoreTokensAsync
// may be called from any thread. Destroying the client waits for running
// requests and fails the queued ones with CANCELLED.
#ifndef RETORT_DISTILL_ENDPOINT_H_
#define RETORT_DISTILL_ENDPOINT_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace retort {

// Splits a model's output into reasoning (inside <think>...</think>) and the
// answer, as DeepSeek's API and vLLM's deepseek_r1 reasoning parser do. Works
// on a stream: Push() returns what can be told apart so far and holds back a
// suffix that may be the start of a tag; Finish() flushes it.
//
// Modes:
//   kNone       everything is content.
//   kAuto       the first <think> anywhere opens the reasoning, the next
//               </think> closes it; text before <think> and after </think> is
//               content. If `starts_in_reasoning` (the prompt itself ended
//               with <think>, as R1-Distill templates do), the output opens
//               inside the reasoning.
//   kDeepSeekR1 the output always opens inside the reasoning (a leading
//               <think> is dropped) and </think> closes it; an output with no
//               </think> is all reasoning (vLLM's rule).
// Not thread-safe; one per generated sequence.
class ReasoningSplitter {
 public:
  enum class Mode { kNone, kAuto, kDeepSeekR1 };
  struct Delta {
    std::string reasoning;
    std::string content;
  };
  // "none", "auto", "deepseek_r1".
  static absl::StatusOr<Mode> ParseMode(const std::string& name);

  ReasoningSplitter(Mode mode, bool starts_in_reasoning);
  Delta Push(std::string_view text);
  Delta Finish();
  // True once any reasoning was seen (a <think> opened, or the output started
  // inside one).
  bool saw_reasoning() const { return saw_reasoning_; }

  // One-shot: the whole text at once.
  static Delta Split(std::string_view text, Mode mode, bool starts_in_reasoning);

 private:
  enum class State { kContent, kReasoning, kDone };
  void Emit(std::string_view text, Delta* out) const;

  Mode mode_;
  State state_;
  bool strip_open_tag_;  // kDeepSeekR1: drop a leading <think>
  bool saw_reasoning_ = false;
  std::string pending_;
};

// One log-prob entry: a generated token or one of its alternatives.
struct TokenLogprob {
  std::string token;  // the token's text as the server wrote it
  double logprob = 0;
  int32_t token_id = -1;       // -1 when the server does not say
  std::vector<uint8_t> bytes;  // UTF-8 bytes (may be a partial character)
};

// A generated token with its top alternatives (most likely first).
struct GeneratedTokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;
};

struct ChatChoice {
  int index = 0;
  std::string content;
  std::string reasoning_content;  // "" when there is none
  std::string finish_reason;      // "stop", "length", ...
  bool has_logprobs = false;
  std::vector<GeneratedTokenLogprobs> logprobs;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t total_tokens = 0;
};

struct ChatResponse {
  std::string id;
  std::string model;
  std::vector<ChatChoice> choices;  // ordered by index
  Usage usage;
  int attempts = 1;  // HTTP requests it took (1 + retries)
};

// Sampling and output options of one request. Unset optionals are not sent
// (the server's defaults apply).
struct ChatParams {
  int n = 1;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> max_tokens;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  bool logprobs = false;
  int top_logprobs = 0;  // 0..20; requires logprobs
  // Merged into the request body last (server extensions such as top_k,
  // chat_template_kwargs, repetition_penalty).
  nlohmann::json extra = nlohmann::json::object();
};

// A teacher's scores of given tokens (ScoreTokens): for the P = tokens.size()
// - first positions i = first + p, the log-prob of tokens[i] given
// tokens[0..i) and the top_k most likely tokens there.
struct TokenScores {
  std::vector<float> logprobs;  // [P]
  int32_t top_k = 0;
  // [P * top_k]: position p's top_k tokens, descending log-prob, ties by
  // ascending id; id -1 and log-prob 0 pad where the server returned fewer.
  // The scored token itself is not necessarily among them.
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs;
  int attempts = 1;  // HTTP requests it took (1 + retries)
};

struct EndpointOptions {
  // "http://host:port/v1" (or https). Paths /chat/completions and /models
  // are appended.
  std::string base_url;
  // The API key: `api_key` if set, else the environment variable named by
  // `api_key_env` if set and non-empty, else none.
  std::string api_key;
  std::string api_key_env = "OPENAI_API_KEY";
  std::string model;  // the "model" field of every request
  int max_in_flight = 8;
  int max_retries = 4;  // retries after the first attempt
  double initial_backoff_s = 0.5;
  double max_backoff_s = 30;
  // Per attempt: connecting, and waiting for each read of the answer (a
  // non-streaming answer arrives at once when the generation ends, so this is
  // about the whole request's time).
  double connect_timeout_s = 10;
  double request_timeout_s = 600;
  bool split_think_tags = true;
  uint64_t jitter_seed = 0;  // 0: from std::random_device
};

class EndpointClient {
 public:
  // Checks the URL (scheme http/https, host, optional port and path) and the
  // options. Does not contact the server.
  static absl::StatusOr<std::unique_ptr<EndpointClient>> Create(const EndpointOptions& options);
  ~EndpointClient();
  EndpointClient(const EndpointClient&) = delete;
  EndpointClient& operator=(const EndpointClient&) = delete;

  // POST {base}/chat/completions with retries; blocks. `messages` is the
  // OpenAI array of {"role", "content", ...}.
  absl::StatusOr<ChatResponse> ChatCompletion(const nlohmann::json& messages,
                                              const ChatParams& params) const;
  // The same on the client's own pool (at most max_in_flight at once).
  std::future<absl::StatusOr<ChatResponse>> ChatCompletionAsync(nlohmann::json messages,
                                                                ChatParams params);

  // Log-probs of tokens[i] given tokens[0..i) for i in [first, tokens.size()),
  // with the top_k alternatives (the model's own distribution, untempered):
  // POST {base}/completions with the ids as the prompt, "max_tokens": 1 and
  // vLLM's "prompt_logprobs": top_k (the one generated token is ignored),
  // with the retries of ChatCompletion; blocks. InvalidArgument unless
  // 1 <= first <= tokens.size() (token 0 has no log-prob), ids >= 0 and
  // 0 <= top_k <= 20; first == tokens.size() scores nothing and sends
  // nothing. Errors name the URL (ParseScoreResponse).
  absl::StatusOr<TokenScores> ScoreTokens(const std::vector<int32_t>& tokens, int64_t first,
                                          int32_t top_k) const;
  // The same on the client's own pool (at most max_in_flight at once,
  // shared with ChatCompletionAsync).
  std::future<absl::StatusOr<TokenScores>> ScoreTokensAsync(std::vector<int32_t> tokens,
                                                            int64_t first, int32_t top_k);

  // GET {base}/models: the ids the server serves.
  absl::StatusOr<std::vector<std::string>> ListModels() const;

  // The request body ChatCompletion sends (for logging and tests).
  nlohmann::json BuildChatRequest(const nlohmann::json& messages, const ChatParams& params) const;
  // Parses a chat.completion answer. `source` names it in errors.
  absl::StatusOr<ChatResponse> ParseChatResponse(const std::string& body,
                                                 const std::string& source) const;

  // The request body ScoreTokens sends.
  nlohmann::json BuildScoreRequest(const std::vector<int32_t>& tokens, int32_t top_k) const;
  // Reads the prompt_logprobs of a /v1/completions answer for `tokens`: from
  // choices[0] (recent vLLM, `retort serve`) or the top level (older vLLM),
  // one entry per token, each (from `first` on) an object mapping token ids
  // (decimal strings) to {"logprob": x, ...} or to x; the top_k are the best
  // of those entries. Errors, one line starting with `source`: UNIMPLEMENTED
  // when there are no prompt_logprobs, DATA_LOSS when they have the wrong
  // length, a key that is not a token id, a log-prob that is not a number, or
  // no entry for the scored token.
  absl::StatusOr<TokenScores> ParseScoreResponse(const std::string& body,
                                                 const std::vector<int32_t>& tokens, int64_t first,
                                                 int32_t top_k, const std::string& source) const;

  const EndpointOptions& options() const { return options_; }
  // "http://host:port/v1/chat/completions"-style URL of a path under the base.
  std::string Url(const std::string& path) const;

 private:
  struct HttpAnswer {
    int status = 0;
    std::string body;
    double retry_after_s = -1;
  };
  explicit EndpointClient(const EndpointOptions& options);
  // One exchange with retries; returns the final 2xx answer or an error.
  absl::StatusOr<HttpAnswer> Exchange(const std::string& method, const std::string& path,
                                      const std::string& body, int* attempts) const;
  // One attempt: OK with the answer (any status), or a transport error.
  absl::StatusOr<HttpAnswer> Attempt(const std::string& method, const std::string& path,
                                     const std::string& body) const;
  double BackoffSeconds(int retry, double retry_after_s) const;
  // Runs `call` on the pool; CANCELLED (naming POST {base}`path`) if the
  // client is destroyed before it starts. Defined for the calls in the .cc.
  template <typename T>
  std::future<absl::StatusOr<T>> RunAsync(const std::string& path,
                                          std::function<absl::StatusOr<T>()> call);
  void WorkerLoop();

  EndpointOptions options_;
  std::string scheme_host_port_;  // "http://host:port"
  std::string path_prefix_;       // "/v1"
  std::string api_key_;

  mutable std::mutex rng_mu_;
  mutable uint64_t rng_state_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::function<void(bool cancelled)>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// Create() for a user's flags: an empty options.model asks the server
// (GET /models) and takes the first model it serves.
absl::StatusOr<std::unique_ptr<EndpointClient>> ConnectEndpoint(EndpointOptions options);

}  // namespace retort

#endif  // RETORT_DISTILL_ENDPOINT_H_
