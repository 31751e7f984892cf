// The server's batching scheduler: each HTTP thread asks a Generator for one
// sequence and receives its tokens through a callback, or for the log-probs
// of a prompt (echo); BatchedGenerator runs every running sequence through
// distill/generation.h's BatchGenerator (continuous batching: up to max_batch
// sequences share each forward pass; the rest wait in its queue) and scores
// prompts between its steps.
//
// Thread-safety: Generator's methods may be called from many threads at once.
#ifndef RETORT_SERVE_SCHEDULER_H_
#define RETORT_SERVE_SCHEDULER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "distill/generation.h"
#include "model/sampler.h"
#include "model/transformer.h"

namespace retort::serve {

// One sequence to generate.
struct SequenceRequest {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 16;
  SamplerOptions sampler;
  std::vector<int32_t> stop_ids;             // sampling one ends the sequence (not a token)
  int top_logprobs = -1;                     // < 0: no log-probs; k >= 0: chosen + top k
  const std::atomic<bool>* abort = nullptr;  // when it turns true, the sequence ends ("cancelled")
};

struct GeneratedToken {
  int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
  // 1 + the number of tokens more likely than `id` (vLLM's rank). Set by
  // PromptLogprobs; 0 (unknown) for generated tokens.
  int32_t rank = 0;
};

// Called per generated token; returning false ends the sequence ("cancelled").
using TokenCallback = std::function<bool(const GeneratedToken&)>;

// How a sequence ended: finish_reason "stop" (a stop id, named in stop_id),
// "length" (max_new_tokens) or "cancelled".
struct SequenceEnd {
  std::string finish_reason;
  int32_t stop_id = -1;
};

// The server's view of the engine. Both methods may be called from several
// threads at once.
class Generator {
 public:
  virtual ~Generator() = default;
  // Generates one sequence, token by token.
  virtual absl::StatusOr<SequenceEnd> Generate(const SequenceRequest& request,
                                               const TokenCallback& on_token) = 0;
  // The log-probs of prompt[1..n) (PromptLogprobs).
  virtual absl::StatusOr<std::vector<GeneratedToken>> ScorePrompt(
      const std::vector<int32_t>& prompt, int top_logprobs) = 0;
};

// The model's log-probs of a prompt's tokens: entry t - 1 is token prompt[t]
// with log_softmax(logits[t - 1])[prompt[t]], its rank in that row and, when
// top_logprobs K > 0, the K most likely tokens after prompt[0..t)
// (distill/generation.h's TopKIds order). The logits are those of `retort
// eval --dump-logits`: one Forward(kAll) over a fresh cache, run in
// kPrefillChunk pieces (the chunks Forward makes itself) so only one piece's
// logits is held. Runs on the
// calling thread: see Transformer for who may call it when.
absl::StatusOr<std::vector<GeneratedToken>> PromptLogprobs(const Transformer& engine,
                                                           const std::vector<int32_t>& prompt,
                                                           int top_logprobs);

// Generator over distill/generation.h's BatchGenerator: one owning thread
// runs the continuous-batching loop (up to max_batch sequences share every
// forward pass) and, between two of its steps, the prompts waiting to be
// scored (the kernels share one thread pool, so the engine runs on that
// thread only; a long prompt delays the running sequences' next token by
// its forward pass); each HTTP thread submits its sequence and waits for its
// tokens. Tokens are handed over live when no top-K is asked for; the
// BatchGenerator reports the top-K only with the finished result, so those
// requests get their tokens when the sequence ends (streaming then arrives in
// one burst). A callback that returns false cancels the sequence (a stop
// string matched, the client went away, shutdown).
class BatchedGenerator final : public Generator {
 public:
  // REQUIRES: max_batch >= 1; `engine` outlives the generator.
  BatchedGenerator(const Transformer& engine, int64_t max_batch);
  ~BatchedGenerator() override;

  absl::StatusOr<SequenceEnd> Generate(const SequenceRequest& request,
                                       const TokenCallback& on_token) override;
  absl::StatusOr<std::vector<GeneratedToken>> ScorePrompt(const std::vector<int32_t>& prompt,
                                                          int top_logprobs) override;

 private:
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<GeneratedToken> tokens;
    std::optional<GenerationResult> result;
  };
  struct Scoring {
    const std::vector<int32_t>* prompt;
    int top_logprobs;
    std::promise<absl::StatusOr<std::vector<GeneratedToken>>> done;
  };
  std::shared_ptr<Waiter> Find(int64_t index);
  // The owning thread: scores what waits, steps the batch, sleeps when idle.
  void Loop();

  const Transformer& engine_;
  std::unique_ptr<BatchGenerator> batch_;
  std::thread loop_;
  std::mutex mu_;
  std::condition_variable work_;                        // new request, scoring or close
  std::map<int64_t, std::shared_ptr<Waiter>> waiters_;  // guarded by mu_
  std::vector<Scoring*> scorings_;                      // guarded by mu_
  bool closing_ = false;                                // guarded by mu_
};

}  // namespace retort::serve

#endif  // RETORT_SERVE_SCHEDULER_H_
