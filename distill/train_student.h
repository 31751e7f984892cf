// The job behind `retort distill`: trains a student (HF directory, GGUF
// dequantized to f32, or the output of `retort init`) on chat/trace JSONL,
// plain text or trace shards: SFT (cross-entropy on completion tokens) and/or
// logit distillation from an online teacher or the teacher top-k stored in
// trace shards; checkpoints, resume and data-parallel ranks (kernels'
// collective) included. Its summary, progress and log go to a ProgressSink
// (rank 0 only).
#ifndef RETORT_DISTILL_TRAIN_STUDENT_H_
#define RETORT_DISTILL_TRAIN_STUDENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/progress.h"
#include "distill/endpoint.h"
#include "distill/on_policy.h"

namespace retort {

struct TrainStudentOptions {
  std::string student, teacher, output;
  std::vector<std::string> data;
  int64_t seq_len = 512, rows = 4, grad_accum = 1, max_steps = 0;
  double epochs = 1, eval_fraction = 0.05;
  int64_t eval_every = 0, eval_batches = 0, save_every = 0;
  int keep_checkpoints = 2;
  std::string save_dtype = "f32", overlong = "truncate", schedule = "cosine";
  std::string divergence = "forward_kl", topk_tail = "bucket";
  float lr = 3e-4f, min_lr_ratio = 0.1f, weight_decay = 0.0f, beta1 = 0.9f, beta2 = 0.95f,
        adam_eps = 1e-8f, clip = 1.0f;
  int64_t warmup_steps = 0;
  bool decay_all = false;
  float ce_weight = 1, kd_weight = 0, jsd_beta = 0.5f, temperature = 1;
  int64_t chunk_tokens = 0;
  uint64_t seed = 0;
  int threads = 0;
  bool resume = false, quiet = false, all_turns = false, answers_only = false,
       keep_sparsity = false;
  // Activation checkpointing of the student (TrainModel::SetActivationCheckpointing):
  // less memory, one more forward pass per step. An online teacher always
  // keeps only its layer inputs (it never runs backward).
  bool gradient_checkpointing = false;
  // On-policy distillation (distill/on_policy.h): with probability `lambda`
  // a micro-batch is the student's own completions of `prompts_per_batch`
  // prompts, scored by the --teacher and trained with `on_policy_loss`
  // (sampled_reverse_kl, reverse_kl or jsd with jsd_beta); otherwise it comes
  // from --data with the loss above. --data may be left out at lambda 1.
  bool on_policy = false;
  // The sampler's settings (prompts, per batch, temperature, top-p, new
  // tokens, lambda, verifier); its seed is `seed` and its think prefix `think`.
  OnPolicyOptions sampling;
  std::string on_policy_loss = "sampled_reverse_kl", think = "auto";
  // An OpenAI-compatible teacher (vLLM, `retort serve`) scoring the samples
  // through prompt_logprobs, instead of --teacher (base_url empty: none; an
  // empty model: the first it serves), and the top-K kept for reverse_kl / jsd.
  EndpointOptions teacher_endpoint;
  int teacher_top_k = 20;
  std::string command_line;  // recorded in the output as run.json (provenance)
};

// Cancelled when a stop signal ended the run early (a checkpoint is saved).
absl::Status TrainStudent(const TrainStudentOptions& options, ProgressSink& progress);

}  // namespace retort

#endif  // RETORT_DISTILL_TRAIN_STUDENT_H_
