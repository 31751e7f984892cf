// One training document of the student (token ids, which of them are
// trained, the teacher's top-k where there is one) and the counts of what
// loading and packing did with them.
//
// Teacher top-k alignment, everywhere in distill/: the top-k row stored for
// token t of an example is the teacher's distribution over token t (computed
// from the tokens before it). In a PackedBatch (distill/data_loader.h),
// position i predicts targets[i] = tokens[i + 1], so its top-k row is the
// example's row for token i + 1.
//
// Thread-safety: plain values.
#ifndef RETORT_DISTILL_TRAIN_EXAMPLE_H_
#define RETORT_DISTILL_TRAIN_EXAMPLE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace retort {

// One training document.
struct TrainExample {
  // Stable identity: the sample's "id" (all samples of one prompt share it,
  // so they land on the same side of the train/held-out split), or a hash of
  // the content when the input has none.
  std::string id;
  std::vector<int32_t> tokens;
  // 1 = token is a completion token the model learns to predict.
  std::vector<uint8_t> loss_mask;
  // Teacher top-k (0 = no teacher data): [tokens.size() * top_k] rows, row t
  // = teacher's top-k over token t; meaningful only where loss_mask[t] == 1
  // (elsewhere ids -1, log-probs 0).
  int32_t top_k = 0;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs;

  bool has_teacher() const { return top_k > 0; }
  int64_t num_trained() const;
  // Appends `ids` to tokens, each with loss mask `mask`.
  void Append(const std::vector<int32_t>& ids, uint8_t mask);
};

// What loading and packing did, for the trainer to print.
struct DataSummary {
  int64_t files = 0;
  int64_t examples = 0;  // kept (train + eval)
  int64_t train_examples = 0;
  int64_t eval_examples = 0;
  int64_t tokens = 0;          // in kept examples
  int64_t trained_tokens = 0;  // loss_mask == 1
  int64_t teacher_examples = 0;
  // Reason -> count of samples not turned into examples ("empty completion",
  // "last message is not the assistant's", ...).
  std::map<std::string, int64_t> skipped;
  // Filled by the DataLoader (depend on seq_len).
  int64_t truncated_examples = 0;   // examples cut to seq_len
  int64_t truncated_tokens = 0;     // tokens cut off
  int64_t split_examples = 0;       // examples split into several documents
  int64_t dropped_untrainable = 0;  // pieces with no trained token left (prompt >= seq_len)
  // Token-shard examples whose prompt ends inside an opened <think> (the
  // teacher's think prefix): the student learns to reason after it, so it
  // must be prompted the same way (think_prefix auto/on, not off).
  int64_t prompts_open_reasoning = 0;
  int64_t shard_examples = 0;

  void Merge(const DataSummary& other);
  // Multi-line, human readable.
  std::string ToString() const;
};

}  // namespace retort

#endif  // RETORT_DISTILL_TRAIN_EXAMPLE_H_
