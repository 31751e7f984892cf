#include "distill/data_loader.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/sampler.h"

namespace retort {

// ---- shuffling ---------------------------------------------------------------

std::vector<uint32_t> EpochPermutation(uint64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<uint32_t> p(n);
  for (uint64_t i = 0; i < n; ++i) p[i] = static_cast<uint32_t>(i);
  uint64_t a = seed, b = epoch ^ 0xD1B54A32D192ED03ull;
  Xoshiro256 rng(SplitMix64(a) ^ SplitMix64(b));
  for (uint64_t i = n; i > 1; --i) {
    const uint64_t j = rng.Below(i);
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

// ---- packing -----------------------------------------------------------------

nlohmann::json DataPosition::ToJson() const { return {{"epoch", epoch}, {"cursor", cursor}}; }

absl::StatusOr<DataPosition> DataPosition::FromJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("epoch") || !j.contains("cursor") ||
      !j["epoch"].is_number_unsigned() || !j["cursor"].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        "data position: expected {\"epoch\": unsigned integer, \"cursor\": unsigned integer}");
  }
  DataPosition p;
  p.epoch = j["epoch"].get<uint64_t>();
  p.cursor = j["cursor"].get<uint64_t>();
  return p;
}

DataLoader::DataLoader(const std::vector<TrainExample>* examples, const PackingOptions& options)
    : examples_(examples), options_(options) {}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Create(
    const std::vector<TrainExample>* examples, const PackingOptions& options) {
  if (examples == nullptr) return absl::InvalidArgumentError("DataLoader: no examples");
  if (options.seq_len < 2 || options.seq_len > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_len must be in [2, 2^31), got ", options.seq_len));
  }
  if (options.rows_per_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows_per_batch must be >= 1, got ", options.rows_per_batch));
  }
  if (options.seq_len * options.rows_per_batch > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        "seq_len * rows_per_batch must fit in int32 (doc_start indices)");
  }
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " outside world of size ", options.world_size));
  }
  if (examples->size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("DataLoader: more than 2^32 - 1 examples");
  }
  std::unique_ptr<DataLoader> dl(new DataLoader(examples, options));
  const int64_t L = options.seq_len;
  dl->example_pieces_.resize(examples->size());
  for (size_t e = 0; e < examples->size(); ++e) {
    const TrainExample& ex = (*examples)[e];
    if (ex.loss_mask.size() != ex.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat("example ", ex.id, ": loss_mask has ",
                                                     ex.loss_mask.size(), " entries for ",
                                                     ex.tokens.size(), " tokens"));
    }
    if (ex.has_teacher()) {
      if (dl->top_k_ != 0 && dl->top_k_ != ex.top_k) {
        return absl::InvalidArgumentError(absl::StrCat("example ", ex.id, ": teacher top_k ",
                                                       ex.top_k, " differs from other examples' ",
                                                       dl->top_k_));
      }
      dl->top_k_ = ex.top_k;
      const size_t want = ex.tokens.size() * static_cast<size_t>(ex.top_k);
      if (ex.topk_ids.size() != want || ex.topk_logprobs.size() != want) {
        return absl::InvalidArgumentError(
            absl::StrCat("example ", ex.id, ": teacher top-k arrays have ", ex.topk_ids.size(), "/",
                         ex.topk_logprobs.size(), " entries, expected tokens * top_k = ", want));
      }
    }
    // A piece trains something when some token after its first is masked 1
    // (position i predicts token i + 1 of the same piece).
    auto trainable = [&](int64_t b, int64_t end) {
      for (int64_t i = b + 1; i < end; ++i) {
        if (ex.loss_mask[i]) return true;
      }
      return false;
    };
    const int64_t n = static_cast<int64_t>(ex.tokens.size());
    std::vector<Piece>& pieces = dl->example_pieces_[e];
    if (n <= L) {
      pieces.push_back({static_cast<uint32_t>(e), 0, static_cast<uint32_t>(n)});
    } else if (options.overlong == OverlongPolicy::kTruncate) {
      ++dl->packing_summary_.truncated_examples;
      dl->packing_summary_.truncated_tokens += n - L;
      pieces.push_back({static_cast<uint32_t>(e), 0, static_cast<uint32_t>(L)});
    } else {
      ++dl->packing_summary_.split_examples;
      for (int64_t b = 0; b < n; b += L) {
        pieces.push_back({static_cast<uint32_t>(e), static_cast<uint32_t>(b),
                          static_cast<uint32_t>(std::min(n, b + L))});
      }
    }
    std::vector<Piece> kept;
    for (const Piece& p : pieces) {
      if (trainable(p.begin, p.end)) {
        kept.push_back(p);
      } else {
        ++dl->packing_summary_.dropped_untrainable;
      }
    }
    pieces = std::move(kept);
  }
  bool any = false;
  for (const auto& p : dl->example_pieces_) any |= !p.empty();
  if (!any) {
    return absl::InvalidArgumentError(absl::StrCat("DataLoader: none of the ", examples->size(),
                                                   " examples has a trained token within seq_len ",
                                                   L));
  }
  return dl;
}

const DataLoader::EpochLayout& DataLoader::Layout(uint64_t epoch) {
  const uint64_t key = options_.shuffle ? epoch : 0;
  for (EpochLayout& l : layouts_) {
    if (l.epoch == key) return l;
  }
  // Replace the entry that is not the current position's epoch.
  EpochLayout& l =
      layouts_[0].epoch == (options_.shuffle ? position_.epoch : 0) ? layouts_[1] : layouts_[0];
  l = EpochLayout();
  l.epoch = key;
  std::vector<uint32_t> order;
  if (options_.shuffle) {
    order = EpochPermutation(examples_->size(), options_.seed, epoch);
  } else {
    order.resize(examples_->size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  }
  const int64_t L = options_.seq_len;
  int64_t used = 0;  // tokens in the current (last) row
  for (uint32_t e : order) {
    for (const Piece& p : example_pieces_[e]) {
      const int64_t len = p.end - p.begin;
      if (l.rows.empty() || used + len > L) {
        used = 0;
        l.rows.push_back({static_cast<uint32_t>(l.pieces.size()), 0});
      }
      l.pieces.push_back(p);
      ++l.rows.back().num_pieces;
      used += len;
    }
  }
  const uint64_t R = options_.rows_per_batch;
  l.batches = (l.rows.size() + R - 1) / R;
  return l;
}

uint64_t DataLoader::BatchesInEpoch(uint64_t epoch) { return Layout(epoch).batches; }

uint64_t DataLoader::ContentHash() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the bytes below
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  for (const TrainExample& e : *examples_) {
    const uint64_t sizes[] = {e.id.size(), e.tokens.size(), e.loss_mask.size()};
    mix(sizes, sizeof sizes);
    mix(e.id.data(), e.id.size());
    mix(e.tokens.data(), e.tokens.size() * sizeof(int32_t));
    mix(e.loss_mask.data(), e.loss_mask.size());
  }
  return h;
}

bool DataLoader::Advance(DataPosition* pos, uint64_t n) {
  while (true) {
    const uint64_t batches = Layout(pos->epoch).batches;
    if (pos->cursor + n < batches) {
      pos->cursor += n;
      return true;
    }
    if (!options_.repeat) {
      pos->cursor = batches;
      return false;
    }
    n -= batches - pos->cursor;
    ++pos->epoch;
    pos->cursor = 0;
  }
}

absl::Status DataLoader::Seek(const DataPosition& position) {
  if (!options_.repeat && position.epoch > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data position epoch ", position.epoch, " of a single-pass loader"));
  }
  const uint64_t batches = Layout(position.epoch).batches;
  if (position.cursor > batches || (options_.repeat && position.cursor == batches)) {
    return absl::InvalidArgumentError(
        absl::StrCat("data position cursor ", position.cursor, " past the ", batches,
                     " batches of epoch ", position.epoch, " (different data or options?)"));
  }
  position_ = position;
  return absl::OkStatus();
}

bool DataLoader::Next(PackedBatch* batch) {
  DataPosition mine = position_;
  const uint64_t batches = Layout(mine.epoch).batches;
  if (!options_.repeat && mine.cursor >= batches) return false;
  if (options_.rank > 0 && !Advance(&mine, options_.rank)) {
    // This rank has no batch left in the stream; the round is done.
    position_ = mine;
    return false;
  }
  Fill(Layout(mine.epoch), mine.cursor, batch);
  batch->epoch = mine.epoch;
  batch->index_in_epoch = mine.cursor;
  DataPosition next = position_;
  Advance(&next, options_.world_size);
  position_ = next;
  return true;
}

void DataLoader::Fill(const EpochLayout& layout, uint64_t batch_index, PackedBatch* b) const {
  const int64_t L = options_.seq_len;
  const int64_t R = options_.rows_per_batch;
  const int64_t n = L * R;
  const int32_t K = top_k_;
  b->seq_len = L;
  b->rows = R;
  b->tokens.assign(n, options_.pad_id);
  b->positions.assign(n, 0);
  b->doc_start.assign(n, 0);
  b->targets.assign(n, -1);
  b->num_targets = 0;
  b->top_k = K;
  b->topk_ids.assign(K > 0 ? n * K : 0, -1);
  b->topk_logprobs.assign(K > 0 ? n * K : 0, 0.0f);
  b->has_teacher.assign(K > 0 ? n : 0, 0);
  b->num_teacher_targets = 0;
  for (int64_t r = 0; r < R; ++r) {
    const uint64_t row_index = batch_index * R + r;
    int64_t at = r * L;  // next free slot
    const int64_t row_end = (r + 1) * L;
    if (row_index < layout.rows.size()) {
      const Row& row = layout.rows[row_index];
      for (uint32_t pi = row.first_piece; pi < row.first_piece + row.num_pieces; ++pi) {
        const Piece& p = layout.pieces[pi];
        const TrainExample& ex = (*examples_)[p.example];
        const int64_t start = at;
        for (uint32_t t = p.begin; t < p.end; ++t, ++at) {
          b->tokens[at] = ex.tokens[t];
          b->positions[at] = static_cast<int32_t>(t - p.begin);
          b->doc_start[at] = static_cast<int32_t>(start);
          if (t + 1 < p.end && ex.loss_mask[t + 1]) {
            b->targets[at] = ex.tokens[t + 1];
            ++b->num_targets;
            if (ex.has_teacher()) {
              b->has_teacher[at] = 1;
              ++b->num_teacher_targets;
              std::copy_n(ex.topk_ids.begin() + (t + 1) * K, K, b->topk_ids.begin() + at * K);
              std::copy_n(ex.topk_logprobs.begin() + (t + 1) * K, K,
                          b->topk_logprobs.begin() + at * K);
            }
          }
        }
      }
    }
    // Padding: one document of its own up to the row end.
    const int64_t pad_start = at;
    for (; at < row_end; ++at) {
      b->positions[at] = static_cast<int32_t>(at - pad_start);
      b->doc_start[at] = static_cast<int32_t>(pad_start);
    }
  }
}

}  // namespace retort
