// ComputeLoss: the fused LM-head loss on the default backend (the CPU
// implementation is kernels/cpu/lm_head_loss.cc).
#include "distill/loss.h"

#include "kernels/backend.h"

namespace retort {

absl::StatusOr<LossResult> ComputeLoss(const float* h, int64_t n, int64_t d, const float* w,
                                       int64_t vocab, const int32_t* targets,
                                       const TeacherSignal& teacher, const LossOptions& options,
                                       float grad_scale, float* dh, float* dw) {
  return DefaultBackend().LmHeadLoss(h, n, d, w, vocab, targets, teacher, options, grad_scale, dh,
                                     dw);
}

}  // namespace retort
