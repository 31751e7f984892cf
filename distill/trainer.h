// Trainer: the student training loop of `retort distill`.
//
// One optimizer step = grad_accum micro-batches per rank (each a packed
// sequence from the DataLoader), forward through the student, the chunked
// CE/KD loss (distill/loss.h) against the targets and, when a teacher is
// given, the teacher's distribution, backward, then (across ranks) the sum of
// gradients and token counts, the mean-per-token gradient, global-norm
// clipping and an AdamW step with the scheduled learning rate.
//
// Output directory:
//   checkpoint-NNNNNNN/   HF directory (config.json, model.safetensors, the
//                         tokenizer files) + trainer_state.json (step, data
//                         position, ...) + master.safetensors (the f32
//                         weights, whatever --save-dtype is) + optimizer.bin
//                         (Adam moments): everything --resume needs to
//                         continue bit-exactly. Written to a temporary folder and
//                         renamed, so a checkpoint either exists whole or not.
//   final/                the trained model (HF directory) at the end.
//   metrics.jsonl         one line per step (loss, lr, grad norm, tokens/s)
//                         and per evaluation (eval_loss).
//
// Stops cleanly on SIGINT/SIGTERM (a checkpoint is saved first) and on a
// non-finite loss or gradient (nothing is saved; the last good checkpoint
// stays). Thread-safety: one Trainer per process, run from one thread.
#ifndef RETORT_DISTILL_TRAINER_H_
#define RETORT_DISTILL_TRAINER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/dtype.h"
#include "core/progress.h"
#include "distill/data.h"
#include "distill/loss.h"
#include "distill/on_policy.h"
#include "distill/optimizer.h"
#include "kernels/collective.h"
#include "model/train_model.h"
#include "nlohmann/json.hpp"

namespace retort {

struct TrainerOptions {
  std::string output_dir;
  // Length of the run: max_steps optimizer steps, or (max_steps == 0) as many
  // as `epochs` passes over the training split take.
  int64_t max_steps = 0;
  double epochs = 1;
  int64_t grad_accum = 1;  // micro-batches per rank per step

  AdamWOptions optimizer;
  // Weight decay on every parameter; by default norms, biases and embeddings
  // are not decayed (TrainModel::Parameter::decay).
  bool decay_all = false;
  LrScheduleOptions schedule;
  float clip_grad_norm = 1.0f;  // <= 0: no clipping

  LossOptions loss;
  // On-policy micro-batches (set_on_policy): their loss, on the student's own
  // samples (kd_weight > 0: sampled_reverse_kl, reverse_kl or jsd).
  LossOptions on_policy_loss;

  int64_t save_every = 0;  // steps between checkpoints; 0: only at the end
  int keep_checkpoints = 2;
  int64_t eval_every = 0;          // steps between evaluations; 0: only at the end
  int64_t eval_batches = 0;        // micro-batches per evaluation; 0: the whole split
  DType save_dtype = DType::kF32;  // weights of the HF directories (f32 or bf16)
  bool resume = false;
  // Sparse fine-tuning (recovery after unstructured / N:M pruning): the
  // entries of the decoder linears that are zero when the run starts (or
  // resumes) get no gradient and stay exactly zero, so the sparsity pattern
  // (2:4 included) survives training.
  bool keep_sparsity = false;
  bool progress = true;          // progress status and log lines (rank 0)
  ProgressSink* sink = nullptr;  // where they go; null: StderrProgress()
  // Files copied into every saved HF directory (tokenizer.json,
  // tokenizer_config.json, ...): name -> contents.
  std::vector<std::pair<std::string, std::string>> extra_files;
  // Written into the output directory as run.json (the command line, for
  // provenance); ignored when empty.
  std::string run_description;
};

// What a finished (or interrupted) run reports.
struct TrainerSummary {
  int64_t steps = 0;      // optimizer steps done in total (incl. before resume)
  int64_t tokens = 0;     // target tokens trained on in this process's run
  double seconds = 0;     // wall time of this run
  double last_loss = 0;   // mean loss per target token of the last step
  double first_loss = 0;  // of the first step of this run
  double eval_loss = -1;  // last evaluation (-1: none)
  bool interrupted = false;
  std::string final_dir;  // the last directory written
};

class Trainer {
 public:
  // `teacher` may be null (SFT only). `eval` may be null (no held-out split).
  // `train` may be null only with an on-policy sampler whose lambda is 1.
  // The pointers must outlive the trainer.
  Trainer(TrainModel* student, TrainModel* teacher, DataLoader* train, DataLoader* eval,
          Collective* collective, TrainerOptions options);

  absl::StatusOr<TrainerSummary> Run();

  // Optimizer steps of the run (known after the data is loaded).
  int64_t TotalSteps() const;

  // On-policy distillation (distill/on_policy.h): micro-batches the sampler
  // calls on-policy are drawn from the student (an inference copy of its
  // weights made once per step) and trained with options.on_policy_loss; the
  // others come from `train` with options.loss. Each step's metrics line adds
  // on_policy_batches, reverse_kl (kd per on-policy token), sample_tokens
  // (mean completion length), finish_stop / finish_length, sampled_accuracy
  // (with a verifier), and generate_s / teacher_s / train_s with
  // generate_tok_s. The sampler must outlive the trainer.
  void set_on_policy(OnPolicySampler* sampler) { on_policy_ = sampler; }

  // Called after every optimizer step with (step, mean loss); tests use it.
  void set_step_callback(std::function<void(int64_t, double)> fn) { on_step_ = std::move(fn); }

 private:
  ProgressSink& Sink() const { return options_.sink ? *options_.sink : StderrProgress(); }
  struct StepStats {
    double loss_sum = 0, ce_sum = 0, kd_sum = 0, tokens = 0;
    double teacher_s = 0;  // the online teacher's forward
  };
  absl::StatusOr<StepStats> RunMicroBatch(const PackedBatch& batch, bool backward,
                                          const LossOptions& loss);
  absl::StatusOr<double> Evaluate();
  absl::Status SaveCheckpoint(int64_t step, const std::string& name);
  absl::Status LoadLatestCheckpoint(int64_t* step);
  absl::Status AppendMetrics(const std::string& json_line);
  // keep_sparsity: records the zeros of the decoder linears (RecordSparsity)
  // and zeroes their gradients / weights (ApplySparsity).
  void RecordSparsity();
  void ApplySparsity(float* arena);
  std::string LatestCheckpoint() const;
  // What a checkpoint records of the run and a resume compares: the data
  // (hash, batches per epoch: other data is refused), the length and the
  // learning-rate schedule (a change is allowed, with a warning line).
  nlohmann::json ResumeSettings();
  absl::Status CheckResumeSettings(const std::string& dir, const nlohmann::json& saved);
  uint64_t data_hash_ = 0;

  TrainModel* student_;
  TrainModel* teacher_;
  DataLoader* train_;
  DataLoader* eval_;
  Collective* collective_;
  TrainerOptions options_;
  std::optional<AdamW> optimizer_;
  std::function<void(int64_t, double)> on_step_;
  OnPolicySampler* on_policy_ = nullptr;
  std::vector<float> hidden_, dhidden_, teacher_hidden_;
  std::vector<int64_t> sparse_zeros_;  // arena offsets held at zero (keep_sparsity)
  double elapsed_before_ = 0;          // seconds of earlier runs (resume)
  double elapsed_at_save_ = 0;
  int64_t tokens_before_ = 0;
};

// Installs SIGINT/SIGTERM handlers that ask running trainers to stop after
// the current step (a second Ctrl-C kills the process as usual).
void InstallTrainerSignalHandlers();
// True once a stop was requested (by a signal or RequestTrainerStop).
bool TrainerStopRequested();
void RequestTrainerStop();
// Clears a stop request (a process that trains again after an interrupt).
void ClearTrainerStopRequest();

}  // namespace retort

#endif  // RETORT_DISTILL_TRAINER_H_
