// Packing the student's examples into fixed-length micro-batches in a
// reproducible, resumable, rank-split order: PackedBatch, the DataLoader and
// the position it resumes from.
//
// Thread-safety: a DataLoader is used from one thread.
#ifndef RETORT_DISTILL_DATA_LOADER_H_
#define RETORT_DISTILL_DATA_LOADER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distill/train_example.h"
#include "nlohmann/json.hpp"

namespace retort {

// One micro-batch: `rows` rows of `seq_len` tokens, concatenated.
struct PackedBatch {
  int64_t seq_len = 0;
  int64_t rows = 0;
  std::vector<int32_t> tokens;     // [n], n = seq_len * rows
  std::vector<int32_t> positions;  // restart at 0 at each document (and padding)
  // Index (into the whole batch) of the first token of the token's document,
  // as kernels/cpu/train_ops.h AttentionForward takes it. A document never
  // crosses a row boundary; the padding at a row's end is a document of its own.
  std::vector<int32_t> doc_start;
  // Next-token label at each position; -1 where nothing is learned: the
  // next token is a prompt token, padding, or the position is the last of
  // its document.
  std::vector<int32_t> targets;
  int64_t num_targets = 0;  // positions with targets != -1
  // Offline KD. top_k == 0 (vectors empty) when no example carries teacher
  // data. Otherwise [n * top_k]; has_teacher[i] == 1 iff targets[i] != -1 and
  // the example came with teacher data; then row i is the teacher's top-k
  // for targets[i] (ids descending by log-prob as stored). Rows with
  // has_teacher[i] == 0 hold ids -1 and log-probs 0: ignore them.
  int32_t top_k = 0;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs;
  std::vector<uint8_t> has_teacher;  // [n] (empty when top_k == 0)
  int64_t num_teacher_targets = 0;
  // On-policy batches scored by an endpoint teacher for the sampled-token
  // loss: [n], log q(targets[i]) at each target row (empty otherwise).
  std::vector<float> teacher_token_logprobs;
  // Where the batch sits in the stream (see DataLoader).
  uint64_t epoch = 0;
  uint64_t index_in_epoch = 0;
};

enum class OverlongPolicy {
  // Keep the first seq_len tokens (cuts the end of the completion); counted.
  kTruncate,
  // Cut into seq_len pieces, each its own document (positions restart);
  // pieces with no trained token are dropped and counted.
  kSplit,
};

struct PackingOptions {
  int64_t seq_len = 2048;
  int64_t rows_per_batch = 1;
  OverlongPolicy overlong = OverlongPolicy::kTruncate;
  int32_t pad_id = 0;  // token written into padding (masked: any id works)
  uint64_t seed = 0;
  // Train: shuffle each epoch and repeat forever. Eval: false, one pass in
  // dataset order.
  bool shuffle = true;
  bool repeat = true;
  // Data parallelism (see DataLoader).
  int rank = 0;
  int world_size = 1;
};

// Where a DataLoader stands: the next round starts at batch `cursor` of
// epoch `epoch` (the global stream, identical on every rank).
struct DataPosition {
  uint64_t epoch = 0;
  uint64_t cursor = 0;
  bool operator==(const DataPosition& o) const { return epoch == o.epoch && cursor == o.cursor; }
  nlohmann::json ToJson() const;
  static absl::StatusOr<DataPosition> FromJson(const nlohmann::json& j);
};

// Shuffling uses model/sampler.h's Xoshiro256 (xoshiro256** seeded through
// splitmix64), identical on every platform and standard library.

// The order of `n` examples in `epoch`: a Fisher-Yates shuffle (i from n-1
// down to 1, swap i with Below(i + 1)) driven by Xoshiro256(splitmix(seed)
// ^ splitmix(epoch)). Same seed and epoch -> same permutation everywhere.
std::vector<uint32_t> EpochPermutation(uint64_t n, uint64_t seed, uint64_t epoch);

// Packs examples into micro-batches in a reproducible order.
//
// The global stream: epoch e lays out its examples in EpochPermutation(seed,
// e) order (dataset order without shuffle), cuts overlong ones per
// PackingOptions::overlong, and packs them greedily: a document goes into the
// current row if it fits, else the row is closed (padded) and a new one
// begins. Every rows_per_batch consecutive rows are one micro-batch (the
// epoch's last micro-batch is filled up with all-padding rows). Batch b of
// epoch e is followed by batch b+1, or batch 0 of epoch e+1.
//
// The rank rule: stream batches are numbered g = 0, 1, 2, ... across epochs;
// rank r of W receives exactly the batches with g % W == r, in order. The
// k-th Next() on rank r returns batch k*W + r. So one optimizer step with
// accumulation A on W ranks consumes batches [s*A*W, (s+1)*A*W) -- the same
// batches that W=1 with accumulation A*W consumes in step s.
//
// position() is the stream location of batch k*W after k calls (the start
// of the next round), the same on every rank; Seek(position()) on a new
// loader with the same dataset and options continues with identical batches.
// With repeat=false the stream ends after epoch 0 and Next returns false
// (ranks may then get one batch fewer than others).
class DataLoader {
 public:
  // `examples` must outlive the loader. Errors: seq_len < 2, rows_per_batch
  // < 1, rank outside [0, world_size), no trainable example, examples whose
  // top_k differ.
  static absl::StatusOr<std::unique_ptr<DataLoader>> Create(
      const std::vector<TrainExample>* examples, const PackingOptions& options);

  // Fills *batch with this rank's next micro-batch; false at the end of a
  // non-repeating stream.
  bool Next(PackedBatch* batch);

  DataPosition position() const { return position_; }
  // REQUIRES: a position from position() of a loader over the same data and
  // options (an epoch and a cursor within that epoch's batches).
  absl::Status Seek(const DataPosition& position);

  // Micro-batches in `epoch` (the same for every epoch without shuffle).
  uint64_t BatchesInEpoch(uint64_t epoch);
  // Truncation / split counts (depend on seq_len), merged by the caller into
  // the dataset's summary.
  const DataSummary& packing_summary() const { return packing_summary_; }
  // A hash of the examples (ids, tokens, loss masks): what a resumed run
  // checks its data against.
  uint64_t ContentHash() const;
  int32_t top_k() const { return top_k_; }

 private:
  // A slice [begin, end) of an example's tokens packed as one document.
  struct Piece {
    uint32_t example;
    uint32_t begin, end;
  };
  struct Row {
    uint32_t first_piece, num_pieces;  // into EpochLayout::pieces
  };
  struct EpochLayout {
    uint64_t epoch = ~uint64_t{0};
    std::vector<Piece> pieces;  // in packing order
    std::vector<Row> rows;
    uint64_t batches = 0;
  };

  DataLoader(const std::vector<TrainExample>* examples, const PackingOptions& options);
  const EpochLayout& Layout(uint64_t epoch);
  // Moves *pos forward by n batches across epochs; false past the end of a
  // non-repeating stream.
  bool Advance(DataPosition* pos, uint64_t n);
  void Fill(const EpochLayout& layout, uint64_t batch_index, PackedBatch* batch) const;

  const std::vector<TrainExample>* examples_;
  PackingOptions options_;
  int32_t top_k_ = 0;
  // Per example, its pieces under the overlong policy (empty = dropped).
  std::vector<std::vector<Piece>> example_pieces_;
  DataSummary packing_summary_;
  EpochLayout layouts_[2];  // small cache: the current and the next epoch
  DataPosition position_;
};

}  // namespace retort

#endif  // RETORT_DISTILL_DATA_LOADER_H_
