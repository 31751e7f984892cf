#include "model/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace retort {

KvCache::KvCache(const ModelConfig& config, int64_t max_tokens, Backend* backend)
    : num_layers_(config.num_layers),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim),
      max_tokens_(max_tokens > 0 ? max_tokens : config.max_position_embeddings),
      backend_(backend != nullptr ? backend : &DefaultBackend()),
      k_(config.num_layers),
      v_(config.num_layers) {}

size_t KvCache::bytes() const {
  return 2 * num_layers_ * num_kv_heads_ * capacity_ * head_dim_ * sizeof(float);
}

absl::Status KvCache::Truncate(int64_t n) {
  if (n < 0 || n > position_) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Truncate(", n, "): the cache holds ", position_, " positions"));
  }
  position_ = n;
  return absl::OkStatus();
}

absl::Status KvCache::Reserve(int64_t needed) {
  if (needed <= capacity_) return absl::OkStatus();
  if (needed > max_tokens_) {
    return absl::OutOfRangeError(
        absl::StrCat("KV cache full: ", needed, " positions needed, max_tokens is ", max_tokens_));
  }
  int64_t cap = std::max<int64_t>(capacity_ * 2, 256);
  cap = std::min(std::max(cap, needed), max_tokens_);
  const int64_t old = capacity_;
  const size_t kept = static_cast<size_t>(position_ * head_dim_) * sizeof(float);
  for (int64_t l = 0; l < num_layers_; ++l) {
    for (Buffer* buf : {&k_[l], &v_[l]}) {
      ASSIGN_OR_RETURN(
          Buffer grown,
          backend_->Allocate(static_cast<size_t>(num_kv_heads_ * cap * head_dim_) * sizeof(float)));
      for (int64_t h = 0; h < num_kv_heads_ && kept > 0; ++h) {
        RETURN_IF_ERROR(backend_->CopyOnDevice(buf->as<float>() + h * old * head_dim_,
                                               grown.as<float>() + h * cap * head_dim_, kept));
      }
      *buf = std::move(grown);
    }
  }
  capacity_ = cap;
  return absl::OkStatus();
}

}  // namespace retort
