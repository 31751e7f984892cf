// BatchGenerator: the teacher's generation engine. Runs many requests
// (prompt ids + sampling options + limits) on one Transformer with up to
// `max_batch` sequences in flight and continuous batching: every step is one
// Transformer::ForwardBatch over all active sequences (1 new token for each
// decoding sequence, a bounded chunk of prompt for each prefilling one), and
// a sequence that finishes frees its slot (and its KV cache, reused) for the
// next waiting request at the next step.
//
// What is recorded per generated token (what offline distillation stores,
// formats/traces.h TraceTokens):
//   * the token id;
//   * its log-prob, natural log, and when top_logprobs K > 0 the K most
//     likely ids with their log-probs in rank order (descending log-prob,
//     ties by ascending id). Which distribution (GeneratorOptions::logprobs):
//       kModel (default): log_softmax(raw logits), the model's untempered
//         distribution, what KD losses match, whatever the request samples
//         with;
//       kTempered: log_softmax(logits / temperature) (temperature <= 0:
//         as kModel), i.e. the sampling distribution before the repetition
//         penalty and the top-k/top-p/min-p filters. (vLLM's default
//         "raw_logprobs" is kModel; its "processed" mode also applies
//         penalties and filters, which we do not.)
// A stop token (a request's stop ids, or the model's EOS unless ignore_eos)
// ends the sequence with finish_reason "stop"; it IS kept as the last
// completion token with its log-probs (a student must learn to stop) unless
// the request sets include_stop_token = false. A stop string (needs
// GeneratorOptions::detokenize) also finishes with "stop": the tokens up to
// and including the one that completed the string are kept, and
// GenerationResult::stop_string names it. "length": max_new_tokens reached or
// the sequence filled the context (prompt + completion == max_context).
//
// Determinism: a request's samples depend only on its prompt, its options
// and its seed (its own Sampler, history = prompt + its completion), never on
// the other requests or the batch size, up to the f32 rounding that
// ForwardBatch documents: the matrix kernels take another path (GEMV vs
// sgemm, or 8-bit activations vs f32 for GGUF block weights) as the number
// of rows in a step changes. Greedy decoding flips only on a near-tie of the
// top two logits; seeded sampling only when the draw falls within that
// rounding of a boundary between two tokens. Observed: identical tokens for tiny
// f32/bf16 models at batch 1, 3, 8 (tests) and 100m bf16 at 8 and 32 vs 1; SmolLM2-135M
// Q4_1 (GGUF) agrees while every step stays on the integer GEMV (<= 16 rows)
// but one of two 64-token greedy completions diverged after a step that
// mixed prefill rows into the batch (sgemm on f32 activations instead of
// 8-bit ones). Bit-exact batch invariance for block weights would need a
// matrix kernel whose per-row result does not depend on the row count.
//
// Memory: one KvCache per slot, f32 keys and values growing with the longest
// sequence the slot has held (2 * layers * kv_heads * head_dim * 4 bytes per
// position: SmolLM2-135M ~46 KB, so a 6,000-token trace ~276 MB per slot).
//
// Thread-safety: Submit() and Cancel() may be called from any thread; every
// other method runs on one owning thread (the kernels share the thread pool),
// and the callbacks run on it.
#ifndef RETORT_DISTILL_GENERATION_H_
#define RETORT_DISTILL_GENERATION_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/sampler.h"
#include "model/transformer.h"

namespace retort {

struct GenerationRequest {
  std::string id;  // the caller's name for it, echoed in the result
  std::vector<int32_t> prompt;
  SamplerOptions sampling;  // its own seed
  int64_t max_new_tokens = 256;
  std::vector<int32_t> stop_token_ids;    // besides the model's EOS ids
  bool ignore_eos = false;                // do not stop at config().eos_token_ids
  bool include_stop_token = true;         // keep the stop token in the completion
  std::vector<std::string> stop_strings;  // needs GeneratorOptions::detokenize
  int32_t top_logprobs = 0;               // K (0 = none); clamped to the vocabulary
};

struct GenerationResult {
  std::string id;
  int64_t index = -1;  // what Submit returned
  // Not OK: the request was rejected (empty prompt, id outside the vocabulary,
  // prompt that leaves no room in the context, invalid options) or no token
  // could be sampled; finish_reason is then "error".
  absl::Status status;
  std::vector<int32_t> tokens;  // the completion
  std::vector<float> logprobs;  // [completion]
  int32_t top_k = 0;
  std::vector<int32_t> topk_ids;     // [completion * top_k], rank order
  std::vector<float> topk_logprobs;  // same layout
  std::string finish_reason;         // "stop", "length", "cancelled", "error"
  std::string stop_string;           // the stop string matched, if any
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double queue_seconds = 0;        // Submit -> given a slot
  double first_token_seconds = 0;  // given a slot -> first token (prefill included)
  double total_seconds = 0;        // given a slot -> finished
};

// One generated token, for streaming.
struct TokenEvent {
  const std::string* id;  // the request's id
  int64_t index;          // the request's Submit index
  int64_t position;       // 0-based index within the completion
  int32_t token;
  float logprob;
  // This token's top-K (the request's top_logprobs, clamped), rank order;
  // valid during the callback only. top_k 0: none asked for.
  int32_t top_k = 0;
  const int32_t* topk_ids = nullptr;
  const float* topk_logprobs = nullptr;
};

enum class LogprobSource { kModel, kTempered };

struct GeneratorOptions {
  int64_t max_batch = 8;  // sequences in flight
  // Prompt tokens run per step, over all prefilling sequences together:
  // bounds how long one step (hence every decoding sequence) waits behind a
  // long prompt.
  int64_t max_prefill_tokens_per_step = 256;
  // Longest sequence (prompt + completion); <= 0 or larger than the model's
  // max_position_embeddings: that.
  int64_t max_context = 0;
  LogprobSource logprobs = LogprobSource::kModel;
  // Called on the owning thread as each request finishes (in finishing order).
  std::function<void(GenerationResult&&)> on_finished;
  // Called for every generated token (may be null).
  std::function<void(const TokenEvent&)> on_token;
  // Token ids -> text, for stop strings (e.g. Tokenizer::Decode).
  std::function<std::string(const std::vector<int32_t>&)> detokenize;
};

// Log-softmax helpers (exposed for tests). log_softmax(logits / temperature)
// over vocab entries, accumulated in f64; returns log Z (in the scaled units).
double LogSumExp(const float* logits, int64_t vocab, float inv_temperature);
// The k largest logits' ids, descending, ties by ascending id (NaN never
// chosen). k is clamped to vocab.
void TopKIds(const float* logits, int64_t vocab, int32_t k, std::vector<int32_t>* ids);

class BatchGenerator {
 public:
  // REQUIRES: model outlives the generator.
  BatchGenerator(const Transformer& model, GeneratorOptions options);
  ~BatchGenerator();
  BatchGenerator(const BatchGenerator&) = delete;
  BatchGenerator& operator=(const BatchGenerator&) = delete;

  // Queues a request; returns its index (0, 1, 2, ... in submission order).
  // Thread-safe. The result comes through on_finished (or Generate's return).
  int64_t Submit(GenerationRequest request);
  // Finishes a queued or running request at the next step with finish_reason
  // "cancelled" (what it generated so far is kept). Thread-safe; unknown or
  // finished indices are ignored.
  void Cancel(int64_t index);
  // Makes Run() return once nothing is queued or running. Thread-safe.
  void Close();

  // One step: admit queued requests into free slots, one ForwardBatch, sample
  // and record one token for every sequence that has logits, retire finished
  // ones. Returns an error only for an engine failure (then the running
  // requests are finished with it).
  absl::Status Step();
  // Steps until nothing is queued or running.
  absl::Status RunUntilIdle();
  // Steps while there is work; when idle, waits for Submit; returns after
  // Close() once idle.
  absl::Status Run();
  // Convenience for batch jobs: submits `requests`, runs until idle, returns
  // the results in the order of `requests` (on_finished is still called).
  std::vector<GenerationResult> Generate(std::vector<GenerationRequest> requests);

  // Requests queued or running (thread-safe).
  int64_t Pending() const;

  struct Stats {
    int64_t steps = 0;
    int64_t prompt_tokens = 0;     // prefilled
    int64_t generated_tokens = 0;  // sampled
    double forward_seconds = 0;
    double total_seconds = 0;  // inside Step()
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Sequence;
  struct Queued {
    GenerationRequest request;
    int64_t index;
    double submit_time;
  };

  void Admit();
  // Validates a request; OK when it can run.
  absl::Status Check(const GenerationRequest& request) const;
  // Records token `tok` sampled from `logits` for slot `s`; true if it finished.
  bool Record(Sequence& s, const float* logits, int32_t tok);
  void Finish(Sequence& s, const std::string& reason, absl::Status status = absl::OkStatus());
  bool HasWork() const;

  const Transformer& model_;
  GeneratorOptions options_;
  int64_t max_context_;
  std::vector<std::unique_ptr<Sequence>> slots_;  // max_batch entries, null = free
  std::vector<KvCache> caches_;                   // one per slot, reused
  std::vector<float> logits_;
  std::vector<double> scratch_;
  std::vector<int32_t> topk_scratch_;
  Stats stats_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;     // guarded by mu_
  std::set<int64_t> cancelled_;  // guarded by mu_
  int64_t next_index_ = 0;       // guarded by mu_
  int64_t running_ = 0;          // guarded by mu_ (slots in use)
  bool closed_ = false;          // guarded by mu_
};

}  // namespace retort

#endif  // RETORT_DISTILL_GENERATION_H_
