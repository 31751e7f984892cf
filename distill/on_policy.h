// On-policy distillation's sampler: the student writes the micro-batches it
// is trained on (GKD, Agarwal et al. 2024; Thinking Machines' "On-Policy
// Distillation", 2025).
//
// For an on-policy micro-batch the trainer hands the sampler an inference
// copy of the student's current weights; the sampler draws one completion
// for each of `prompts_per_batch` prompts with the batched generation engine
// (distill/generation.h) and packs prompt + completion as one row each, with
// the completion tokens as targets (the stop token included: a student must
// learn to stop) and the prompt masked. The teacher then scores exactly those
// tokens (the trainer's dense teacher, or an endpoint's token log-probs
// stored in the batch) and the loss is one of kernels/lm_head_loss.h's
// divergences on them: sampled_reverse_kl, reverse_kl or jsd.
//
// Everything is a pure function of (seed, step, micro-batch), so a resumed
// run redraws exactly what the uninterrupted one drew and nothing but the
// step needs saving (trainer_state.json records the positions anyway):
//   * GKD's lambda mix: micro-batch m of step s (global index g = s * A + m
//     for A micro-batches per step) is on-policy iff
//     Uniform(Xoshiro256(splitmix64(seed ^ splitmix64(g + 0x6f6e)))) < lambda,
//     the same draw on every rank; otherwise the trainer takes the next
//     off-policy batch from its trace data.
//   * Prompts: sample j of rank r in micro-batch g is sample number
//     i = (g * W + r) * B + j of an endless stream of epochs over the
//     prompts, each epoch in EpochPermutation(P, seed, epoch) order (B
//     prompts per batch, W ranks, P prompts). Off-policy micro-batches leave
//     their prompts unused.
//   * Sampling seed of sample i: TraceSampleSeed(seed, prompt id, i).
//
// Endpoint teacher (set_teacher_endpoint): the sampler sends every row's
// prompt + completion to an OpenAI-compatible server's prompt_logprobs
// (vLLM, `retort serve`; EndpointClient::ScoreTokens), all rows in flight at
// once, and stores the teacher's side in the batch: log q of each sampled
// token (teacher_token_logprobs, for sampled_reverse_kl) or its top-K at
// each target row (top_k fields, for reverse_kl / jsd over K ids plus the
// tail bucket). Ids at or past the student's vocabulary (padding rows of a
// larger teacher vocabulary) are dropped from the top-K.
//
// With a verifier and prompts that carry an "answer", every sample is
// verified (its answer part, after </think>); the counts go into the step's
// metrics as the student's sampled accuracy. Nothing is optimised for it.
//
// Thread-safety: one sampler per trainer, used from its thread.
#ifndef RETORT_DISTILL_ON_POLICY_H_
#define RETORT_DISTILL_ON_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distill/data_loader.h"
#include "distill/endpoint.h"
#include "distill/trace_prompts.h"
#include "distill/verify.h"
#include "model/transformer.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort {

struct OnPolicyOptions {
  std::string prompts;  // prompts JSONL (distill/trace_prompts.h)
  int64_t prompts_per_batch = 8;
  float temperature = 1.f;  // sampling (0: greedy)
  float top_p = 1.f;
  int64_t max_new_tokens = 256;
  double lambda = 1.0;   // probability that a micro-batch is on-policy
  std::string verifier;  // spec (distill/verify.h) or empty
  ThinkPrefix think = ThinkPrefix::kAuto;
  uint64_t seed = 0;
};

// A step's on-policy figures: what its on-policy micro-batches generated
// (the sampler adds them) and what training on them gave (the trainer adds
// the divergence and the teacher's time); summed over ranks by the trainer.
struct OnPolicyStats {
  double batches = 0, samples = 0, completion_tokens = 0;
  double stopped = 0, truncated = 0;  // finish reasons "stop" / "length"
  double verified = 0, correct = 0;   // samples with an answer to check
  double generate_s = 0;
  double teacher_s = 0;              // the teacher's scoring: endpoint or local forward
  double kd_sum = 0, kd_tokens = 0;  // the on-policy loss's divergence and its tokens
  static constexpr int kFields = 11;
  double* data() { return &batches; }
};

class OnPolicySampler {
 public:
  // Reads and renders the prompts (errors name the file and line).
  // `chat_template` may not be null; `max_context` bounds prompt + completion.
  static absl::StatusOr<std::unique_ptr<OnPolicySampler>> Create(const OnPolicyOptions& options,
                                                                 const Tokenizer& tokenizer,
                                                                 const ChatTemplate* chat_template,
                                                                 int64_t max_context, int rank,
                                                                 int world_size);

  // Whether micro-batch `micro` of step `step` is on-policy (see the top).
  bool IsOnPolicy(int64_t step, int64_t micro, int64_t grad_accum) const;

  // This rank's samples of that micro-batch, drawn from `student`, packed
  // into *batch (one row per sample; top-k fields empty). Adds to *stats.
  absl::Status Sample(const Transformer& student, int64_t step, int64_t micro, int64_t grad_accum,
                      PackedBatch* batch, OnPolicyStats* stats);

  // Scores the samples with `client` (it must outlive the sampler): top_k 0
  // gives teacher_token_logprobs (sampled_reverse_kl), top_k > 0 the top-K
  // rows. `vocab` is the student's.
  void set_teacher_endpoint(EndpointClient* client, int32_t top_k, int64_t vocab) {
    endpoint_ = client;
    endpoint_top_k_ = top_k;
    vocab_ = vocab;
  }

  // The first stream sample of step `step` (what trainer_state.json records).
  int64_t FirstSampleOfStep(int64_t step, int64_t grad_accum) const;
  int64_t num_prompts() const { return static_cast<int64_t>(prompts_.size()); }
  // A hash of the rendered prompts: a resumed run checks it.
  uint64_t ContentHash() const;
  const OnPolicyOptions& options() const { return options_; }

 private:
  OnPolicySampler(const OnPolicyOptions& options, const Tokenizer& tokenizer, int rank,
                  int world_size)
      : options_(options), tokenizer_(tokenizer), rank_(rank), world_size_(world_size) {}
  // The prompt of stream sample i.
  int64_t PromptOf(int64_t i);
  // Fills the teacher's side of *batch from the endpoint; `lengths` and
  // `prompt_lengths` per row.
  absl::Status ScoreWithEndpoint(const std::vector<int64_t>& prompt_lengths,
                                 const std::vector<int64_t>& lengths, PackedBatch* batch);

  OnPolicyOptions options_;
  const Tokenizer& tokenizer_;
  int rank_, world_size_;
  int64_t max_context_ = 0;
  std::vector<TracePrompt> prompts_;
  std::vector<RenderedPrompt> rendered_;
  std::unique_ptr<Verifier> verifier_;
  EndpointClient* endpoint_ = nullptr;
  int32_t endpoint_top_k_ = 0;
  int64_t vocab_ = 0;
  int64_t perm_epoch_ = -1;
  std::vector<uint32_t> perm_;
};

}  // namespace retort

#endif  // RETORT_DISTILL_ON_POLICY_H_
