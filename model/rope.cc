#include "model/rope.h"

#include <cmath>

namespace retort {

std::vector<float> RopeInvFreq(const ModelConfig& config) {
  const int64_t dim = config.head_dim, half = dim / 2;
  const float base = static_cast<float>(config.rope_theta);
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    // 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in f32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[i] = 1.0f / std::pow(base, exponent);
  }
  const RopeScaling& s = config.rope_scaling;
  switch (s.type) {
    case RopeScaling::Type::kNone:
      break;
    case RopeScaling::Type::kLinear:
      for (float& f : inv) f = f / static_cast<float>(s.factor);
      break;
    case RopeScaling::Type::kLlama3: {
      // Long wavelengths (beyond the original context / low_freq_factor) are
      // slowed down by `factor`, short ones (below context / high_freq_factor)
      // kept, and the band between interpolated smoothly.
      const float factor = static_cast<float>(s.factor);
      const float low = static_cast<float>(s.low_freq_factor),
                  high = static_cast<float>(s.high_freq_factor);
      const float old_ctx = static_cast<float>(s.original_max_position_embeddings);
      const float low_freq_wavelen = old_ctx / low, high_freq_wavelen = old_ctx / high;
      for (float& f : inv) {
        const float wavelen = static_cast<float>(2 * M_PI) / f;
        float scaled = wavelen > low_freq_wavelen ? f / factor : f;
        if (!(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen)) {
          const float smooth = (old_ctx / wavelen - low) / (high - low);
          scaled = (1 - smooth) * scaled / factor + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
  }
  return inv;
}

}  // namespace retort
