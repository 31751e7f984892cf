// RoPE inverse frequencies of a ModelConfig, computed as transformers does
// (in f32), including llama3 and linear scaling. The rotation itself is
// kernels/cpu ApplyRope (half-rotated layout).
#ifndef RETORT_MODEL_ROPE_H_
#define RETORT_MODEL_ROPE_H_

#include <vector>

#include "model/config.h"

namespace retort {

// head_dim / 2 values: inv_freq[i] = 1 / theta^(2i / head_dim), then scaled.
std::vector<float> RopeInvFreq(const ModelConfig& config);

}  // namespace retort

#endif  // RETORT_MODEL_ROPE_H_
