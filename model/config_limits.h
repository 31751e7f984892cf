// Plausibility bounds on the sizes a config.json or GGUF declares, checked
// before anything is allocated from them: a hostile file claiming 10^9 layers
// or a 10^12-token context is refused with a clear error instead of running
// out of memory (or overflowing a size computation) later.
//
// The bounds are generous: each is 4-64x the largest released model's value
// (as of 2025: Llama-3.1-405B has hidden 16384, 126 layers, 128 heads,
// intermediate 53248; DeepSeek-V3 and Kimi-K2 (~1T parameters) hidden 7168,
// 61 layers; Gemma-3 vocab 262144; Llama-4-Scout a 10M context; head_dim is
// at most 256). With every size at its bound the products the loaders form
// (vocab x hidden, hidden x intermediate, layers x heads x head_dim) stay
// below 2^45, far from int64 overflow.
#ifndef RETORT_MODEL_CONFIG_LIMITS_H_
#define RETORT_MODEL_CONFIG_LIMITS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace retort {

struct ModelConfig;

inline constexpr int64_t kMaxHiddenSize = int64_t{1} << 17;        // 131072
inline constexpr int64_t kMaxIntermediateSize = int64_t{1} << 20;  // 1048576
inline constexpr int64_t kMaxLayers = 1024;
inline constexpr int64_t kMaxHeads = 1024;  // query and key/value heads
inline constexpr int64_t kMaxHeadDim = 4096;
inline constexpr int64_t kMaxVocabSize = int64_t{1} << 24;      // 16.7M token ids
inline constexpr int64_t kMaxContextLength = int64_t{1} << 26;  // 67M positions

// InvalidArgument "<source>: field "<name>" is <n>, above the plausible
// maximum <max> ..." for the first size above its bound. Part of
// ModelConfig::Validate; loaders call it early, before sizing anything.
absl::Status CheckPlausibleSizes(const ModelConfig& c, const std::string& source);

}  // namespace retort

#endif  // RETORT_MODEL_CONFIG_LIMITS_H_
