// The server's batching scheduler: each HTTP thread asks a Generator for one
// sequence and receives its tokens through a callback; BatchedGenerator runs
// every running sequence through distill/generation.h's BatchGenerator
// (continuous batching: up to max_batch sequences share each forward pass;
// the rest wait in its queue).
//
// Thread-safety: Generator::Generate may be called from many threads at once.
#ifndef RETORT_SERVE_SCHEDULER_H_
#define RETORT_SERVE_SCHEDULER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
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
  std::vector<int32_t> stop_ids;             // sampling one ends the sequence (not reported)
  int top_logprobs = -1;                     // < 0: no log-probs; k >= 0: chosen + top k
  const std::atomic<bool>* abort = nullptr;  // when it turns true, the sequence ends ("cancelled")
};

struct GeneratedToken {
  int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
};

// Called per generated token; returning false ends the sequence ("cancelled").
using TokenCallback = std::function<bool(const GeneratedToken&)>;

// The server's view of the engine: generate one sequence, token by token.
// Finish reasons: "stop" (a stop id), "length" (max_new_tokens), "cancelled".
// Generate may be called from several threads at once.
class Generator {
 public:
  virtual ~Generator() = default;
  virtual absl::StatusOr<std::string> Generate(const SequenceRequest& request,
                                               const TokenCallback& on_token) = 0;
};

// Generator over distill/generation.h's BatchGenerator: one owning thread
// runs the continuous-batching loop (up to max_batch sequences share every
// forward pass); each HTTP thread submits its sequence and waits for its
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

  absl::StatusOr<std::string> Generate(const SequenceRequest& request,
                                       const TokenCallback& on_token) override;

 private:
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<GeneratedToken> tokens;
    std::optional<GenerationResult> result;
  };
  std::shared_ptr<Waiter> Find(int64_t index);

  std::unique_ptr<BatchGenerator> batch_;
  std::thread loop_;
  std::mutex mu_;
  std::map<int64_t, std::shared_ptr<Waiter>> waiters_;  // guarded by mu_
};

}  // namespace retort::serve

#endif  // RETORT_SERVE_SCHEDULER_H_
