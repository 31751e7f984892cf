// KvCache: the per-sequence state of a Transformer forward pass — the keys
// and values of every position seen so far (f32, per layer laid out
// [kv_head][position][head_dim] so each head's keys are contiguous for the
// attention kernel) plus reusable scratch buffers.
//
// One KvCache per sequence; Transformer::Forward appends to it. The keys and
// values are Buffers of the backend the model runs on (kernels/backend.h),
// so they live on that device; they grow on demand (doubling, copied on the
// device) up to max_tokens, so a short generation does not reserve the full
// context. Move-only. Not thread-safe.
#ifndef RETORT_MODEL_KV_CACHE_H_
#define RETORT_MODEL_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "model/config.h"

namespace retort {

class KvCache {
 public:
  // max_tokens <= 0 means config.max_position_embeddings. `backend`: where
  // the keys and values live (null: DefaultBackend()).
  explicit KvCache(const ModelConfig& config, int64_t max_tokens = 0, Backend* backend = nullptr);
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;

  // Tokens processed so far (= position of the next token).
  int64_t position() const { return position_; }
  int64_t max_tokens() const { return max_tokens_; }
  // Positions currently allocated (<= max_tokens).
  int64_t capacity() const { return capacity_; }
  // Bytes held by keys and values.
  size_t bytes() const;

  // Forget everything (keeps the allocation).
  void Clear() { position_ = 0; }
  // Keep only the first n positions (rewind, e.g. to re-score a suffix).
  // REQUIRES: 0 <= n <= position().
  absl::Status Truncate(int64_t n);

 private:
  friend class Transformer;

  // Makes room for `needed` positions; error past max_tokens.
  absl::Status Reserve(int64_t needed);
  float* keys(int64_t layer) { return k_[layer].as<float>(); }
  float* values(int64_t layer) { return v_[layer].as<float>(); }
  // Offset between consecutive kv heads in keys()/values().
  int64_t head_stride() const { return capacity_ * head_dim_; }

  int64_t num_layers_, num_kv_heads_, head_dim_;
  int64_t max_tokens_;
  int64_t capacity_ = 0;
  int64_t position_ = 0;
  Backend* backend_;
  std::vector<Buffer> k_, v_;  // per layer: [kv_head][capacity][head_dim] f32

  // Forward scratch of a pass of Transformer::ForwardPieces (one per thread,
  // grown to the largest pass seen): activations, RoPE tables, the pass's
  // token ids and positions and its logits, in the backend's memory; the ids
  // and positions are staged on the host first.
  struct Workspace {
    Buffer x, h, q, k, v, attn, gate, up, cos, sin, positions, tokens, logits;
    std::vector<int64_t> host_positions;
    std::vector<int32_t> host_tokens;
  };
};

}  // namespace retort

#endif  // RETORT_MODEL_KV_CACHE_H_
