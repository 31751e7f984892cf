// The student's optimizer: AdamW over one flat f32 parameter arena, global
// gradient-norm clipping, and learning-rate schedules.
//
// AdamW follows torch.optim.AdamW (amsgrad off, maximize off) step for step:
//   p -= lr * weight_decay * p            (decoupled decay; decay groups only)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with t the 1-based step count. m and v are flat f32 arrays laid out like
// the parameter arena; which parts decay is given once as groups that tile
// the arena (norms, biases and embeddings usually do not decay: the caller
// decides). The state (t, m, v) serialises to bytes or a file and restores
// bit-exactly, so a resumed run continues on the same trajectory.
//
// Thread-safety: Step uses the process-wide thread pool; one caller at a
// time. Results do not depend on the thread count (elementwise updates; the
// clipping norm is reduced over fixed blocks in a fixed order).
#ifndef RETORT_DISTILL_OPTIMIZER_H_
#define RETORT_DISTILL_OPTIMIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace retort {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  // applied to groups with decay = true
};

// A contiguous slice [begin, end) of the arena and whether it decays.
struct ParamGroup {
  int64_t begin = 0;
  int64_t end = 0;
  bool decay = true;
};

class AdamW {
 public:
  // `groups` must tile [0, n) in order, without gaps or overlaps (an empty
  // list means one decaying group over everything).
  static absl::StatusOr<AdamW> Create(int64_t n, const AdamWOptions& options,
                                      std::vector<ParamGroup> groups);

  // One update of params[n] from grads[n] at learning rate lr.
  // REQUIRES: both arrays have the n elements given to Create.
  void Step(float* params, const float* grads, float lr);

  int64_t size() const { return static_cast<int64_t>(m_.size()); }
  int64_t step() const { return step_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  const AdamWOptions& options() const { return options_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // The state as bytes: magic "RTADAMW1", u64 n, i64 step, f32 beta1, beta2,
  // eps, weight_decay, then m[n] and v[n] (f32), all little-endian.
  std::string SerializeState() const;
  // Restores what SerializeState wrote. Errors (nothing changed): wrong
  // magic, size or element count, or hyper-parameters that differ from this
  // optimizer's (a resumed run must use the same ones).
  absl::Status RestoreState(const std::string& bytes);
  // The same bytes in a file, written atomically (temporary + fsync + rename).
  absl::Status SaveState(const std::string& path) const;
  absl::Status LoadState(const std::string& path);

 private:
  AdamW(const AdamWOptions& options, std::vector<ParamGroup> groups, int64_t n);

  AdamWOptions options_;
  std::vector<ParamGroup> groups_;
  int64_t step_ = 0;
  std::vector<float> m_, v_;
};

// Scales grads[n] so their global L2 norm is at most max_norm, as
// torch.nn.utils.clip_grad_norm_ does (factor max_norm / (norm + 1e-6) when
// below 1). Returns the norm before clipping, summed in f64 over fixed blocks
// (deterministic). A non-finite norm leaves the gradients untouched (the
// caller should skip the step); max_norm <= 0 only measures.
double ClipGradNorm(float* grads, int64_t n, double max_norm);

// Learning-rate schedules, as transformers defines them:
//   warmup: lr = peak * step / warmup_steps for step < warmup_steps;
//   then, with progress = (step - warmup) / (total - warmup) clamped to [0, 1],
//   cosine:   min + (peak - min) * 0.5 * (1 + cos(pi * progress))
//   linear:   min + (peak - min) * (1 - progress)
//   constant: peak.
// `step` is the 0-based index of the optimizer step about to run (LambdaLR's
// count of scheduler.step() calls), so with warmup the first step has lr 0.
// With min_lr = 0 these are get_{cosine,linear,constant}_schedule_with_warmup;
// cosine with min_lr is get_cosine_with_min_lr_schedule_with_warmup. Unlike
// transformers, steps past total_steps stay at min_lr (its cosine rises again).
enum class LrScheduleKind { kConstant, kLinear, kCosine };

// "cosine" | "linear" | "constant".
absl::StatusOr<LrScheduleKind> ParseLrSchedule(const std::string& name);
const char* LrScheduleName(LrScheduleKind kind);

struct LrScheduleOptions {
  LrScheduleKind kind = LrScheduleKind::kCosine;
  double peak_lr = 1e-4;
  double min_lr = 0;
  int64_t warmup_steps = 0;
};

double LearningRate(int64_t step, int64_t total_steps, const LrScheduleOptions& options);

}  // namespace retort

#endif  // RETORT_DISTILL_OPTIMIZER_H_
