// The student's training data: examples (token ids + which of them are
// trained + optional teacher top-k), the datasets they come from, and the
// DataLoader that packs them into fixed-length micro-batches in a
// reproducible, resumable, rank-split order.
//
// Where examples come from:
//   * chat / trace samples (JSONL): rendered through the STUDENT's chat
//     template. prompt = Render(messages before the final assistant turn,
//     add_generation_prompt=true), tokenized with the tokenizer's BOS rules
//     (a BOS the template already rendered is not doubled); completion = what
//     the model must write, tokenized without added special tokens but with
//     special tokens written in the text recognised. Mask 0 on the prompt,
//     1 on the completion. See ChatExampleBuilder for how the completion
//     text is found;
//   * plain text (pretraining-style): documents split at blank lines or cut
//     into fixed-size token chunks, every token trained;
//   * token shards (offline KD, formats/traces.h): prompt_ids +
//     completion_ids as stored, the teacher's top-k attached to the
//     completion tokens; the teacher's tokenizer must be the student's.
//
// Teacher top-k alignment, everywhere in this file: the top-k row stored
// for token t of an example is the teacher's distribution over token t
// (computed from the tokens before it). In a PackedBatch, position i
// predicts targets[i] = tokens[i + 1], so its top-k row is the example's
// row for token i + 1.
//
// Thread-safety: ChatExampleBuilder::Build and the Dataset accessors are
// const and may run on several threads; a DataLoader is used from one thread.
// Dataset::Load / ChatJsonlExamples tokenize on the core thread pool
// (ParallelFor), so call them from one thread at a time.
#ifndef RETORT_DISTILL_DATA_H_
#define RETORT_DISTILL_DATA_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/progress.h"
#include "formats/reasoning.h"
#include "formats/traces.h"
#include "model/sampler.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

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
};

// ---- chat samples -------------------------------------------------------------

struct ChatExampleOptions {
  // false: only the final assistant turn is trained (the default; what
  // reasoning SFT wants). true: every assistant turn is trained as the
  // template renders it in the history (earlier turns without their
  // reasoning when the template drops it), the final turn as below. Needs a
  // template whose renderings of successive prefixes extend each other.
  bool train_all_assistant_turns = false;
  // true: every assistant message loses its reasoning before rendering (the
  // reasoning_content / reasoning / thinking fields and the <think>...</think>
  // blocks of its content, see WithoutReasoning), so the student learns to
  // write the answer alone: the "answers only" baseline of a distillation
  // experiment. A sample left with no answer is skipped ("empty completion").
  bool answers_only = false;
};

// RemoveThinkBlocks (formats/reasoning.h) strips reasoning from one text.

// A copy of `messages` (an OpenAI chat array) whose assistant messages carry
// no reasoning: no reasoning_content / reasoning / thinking field and their
// string content passed through RemoveThinkBlocks. Other messages, and
// anything that is not an object with a string role, are copied unchanged.
nlohmann::ordered_json WithoutReasoning(const nlohmann::ordered_json& messages);

// Turns a chat (a JSON array of {"role", "content", "reasoning_content"?})
// whose last message is the assistant's into a TrainExample.
//
// The completion text of the final assistant turn is, in this order:
//   1. the template's own rendering of that turn, when rendering the whole
//      conversation gives prompt + X and X contains the turn's reasoning (or
//      it has none): templates that know reasoning_content (Qwen3) are
//      followed exactly, empty <think></think> included;
//   2. otherwise constructed: ("<think>\n" + reasoning + "\n</think>\n\n" +
//      content, or content alone) + the template's end-of-turn text. The
//      reasoning loses leading/trailing newlines and the content its leading
//      ones (as Qwen3 renders them). The end-of-turn text is what follows a
//      sentinel content in Render([user, assistant{sentinel}]) (e.g.
//      "<|im_end|>\n" for ChatML, "<｜end▁of▁sentence｜>" for R1-Distill);
//      the final turn is never rendered through the template's history
//      path, which drops <think> in R1-style templates.
// When the generation prompt ends with "<think>\n" (R1-Distill) and the
// completion starts with it, the completion's copy is dropped.
class ChatExampleBuilder {
 public:
  // `tmpl` and `tokenizer` must outlive the builder. Fails when the
  // template's end-of-turn text cannot be found.
  static absl::StatusOr<ChatExampleBuilder> Create(const ChatTemplate* tmpl,
                                                   const Tokenizer* tokenizer,
                                                   ChatExampleOptions options = {});

  // The rendered text pieces of the final turn (for tests and inspection).
  struct Texts {
    std::string prompt;
    std::string completion;
    bool from_template = false;  // case 1 above
  };
  // Errors (InvalidArgument) name `where` (e.g. "data.jsonl:12"): no messages,
  // a message without string role/content, last message not the assistant's,
  // an empty completion, non-UTF-8 text, a template error.
  absl::StatusOr<Texts> RenderFinalTurn(const nlohmann::ordered_json& messages,
                                        const std::string& where) const;
  absl::StatusOr<TrainExample> Build(const nlohmann::ordered_json& messages, const std::string& id,
                                     const std::string& where) const;

  const std::string& end_of_turn() const { return end_of_turn_; }

 private:
  ChatExampleBuilder() = default;
  absl::Status AppendEarlierTurns(const nlohmann::ordered_json& messages, const std::string& where,
                                  TrainExample* ex, std::string* rendered) const;

  const ChatTemplate* tmpl_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  ChatExampleOptions options_;
  std::string end_of_turn_;
};

// ---- plain text --------------------------------------------------------------

struct TextSplitOptions {
  // 0: documents are blank-line separated paragraphs (lines of only
  // whitespace count as blank). > 0: the whole file is tokenized and cut
  // into documents of this many tokens (the last one shorter).
  int64_t chunk_tokens = 0;
  // Append the tokenizer's EOS to each paragraph document.
  bool add_eos = false;
};

// Paragraph documents of `text` (CRLF treated as LF; surrounding newlines
// removed; empty ones dropped).
std::vector<std::string> SplitParagraphs(const std::string& text);

// Examples of a plain-text file's contents, every token trained. Ids are
// hashes of each document's text, so the split does not depend on order.
// `source` names the file in errors (non-UTF-8 text).
absl::StatusOr<std::vector<TrainExample>> TextExamples(const std::string& text,
                                                       const Tokenizer& tokenizer,
                                                       const TextSplitOptions& options,
                                                       const std::string& source);

// ---- datasets ----------------------------------------------------------------

// 64-bit FNV-1a; the split hash (fixed: changing it moves examples between
// train and held-out sets of existing runs).
uint64_t StableHash64(const std::string& s);
// True when the example with this id belongs to the held-out set:
// Mix(StableHash64(id)) / 2^64 < eval_fraction, Mix = splitmix64's output
// function (FNV-1a alone splits ids like "prompt-17" unevenly).
bool IsHeldOut(const std::string& id, double eval_fraction);

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

  void Merge(const DataSummary& other);
  // Multi-line, human readable.
  std::string ToString() const;
};

struct DatasetOptions {
  double eval_fraction = 0.0;  // in [0, 1)
  // Trace samples the verifier marked "correct": false, and generations cut
  // by the length limit (finish_reason "length"), are skipped (counted)
  // unless kept here.
  bool keep_incorrect = false;
  bool keep_unfinished = false;
  // Token ids of every example must be below this (the student's embedding
  // rows); 0 = only shard ids are checked, against the tokenizer's vocab_size().
  int32_t student_vocab = 0;
  // chat.answers_only (--answers-only) applies to chat/trace samples; token
  // shards keep the teacher's tokens as written, so Load refuses them then.
  ChatExampleOptions chat;
  TextSplitOptions text;
  // A progress line every this many lines/records (0 = quiet), to `sink`
  // (null: StderrProgress()).
  int64_t progress_every = 0;
  ProgressSink* sink = nullptr;
};

// All examples of a set of files, tokenized once, split into train and
// held-out by IsHeldOut(id). File kinds, by name:
//   *.jsonl / *.json  chat or trace samples, one JSON object a line (every
//                     dialect formats/traces.h ParseTraceLineSamples reads:
//                     our traces, OpenAI messages, ShareGPT, open-r1
//                     columns); needs a chat template;
//   *.txt / *.md      plain text (DatasetOptions::text);
//   anything else     a trace token shard (TraceShardReader); its ids
//                     must be < DatasetOptions::student_vocab.
// Errors name file:line (JSONL) or file record <id> (shards).
class Dataset {
 public:
  Dataset() = default;
  // `tmpl` may be null when no file needs it.
  static absl::StatusOr<Dataset> Load(const std::vector<std::string>& paths,
                                      const Tokenizer& tokenizer, const ChatTemplate* tmpl,
                                      const DatasetOptions& options);

  // Adds examples already built (tests, programmatic use); split the same way.
  void Add(TrainExample example, double eval_fraction);
  void CountSkipped(const std::string& reason, int64_t n = 1) { summary_.skipped[reason] += n; }

  const std::vector<TrainExample>& train() const { return train_; }
  const std::vector<TrainExample>& eval() const { return eval_; }
  const DataSummary& summary() const { return summary_; }

 private:
  std::vector<TrainExample> train_, eval_;
  DataSummary summary_;
};

// Reads one JSONL file of chat / trace samples (any dialect ParseTraceLine
// accepts; open-r1 rows with several generations give one example each)
// into examples (no split). Skipped samples are counted in *summary.
absl::StatusOr<std::vector<TrainExample>> ChatJsonlExamples(const std::string& path,
                                                            const ChatExampleBuilder& builder,
                                                            const DatasetOptions& options,
                                                            DataSummary* summary);

// A token-shard record as an example: prompt_ids (mask 0) + completion_ids
// (mask 1), the teacher's top-k on the completion rows. Every id (prompt,
// completion, top-k) must be < student_vocab, else InvalidArgument
// "student vocabulary (N) does not cover token id X in <path> record <id>":
// the teacher's tokenizer must be the student's.
absl::StatusOr<TrainExample> TraceTokensExample(const TraceTokens& record, int32_t student_vocab,
                                                const std::string& path);
// Every record of a shard (records with no completion are skipped, counted).
absl::StatusOr<std::vector<TrainExample>> TraceShardExamples(const std::string& path,
                                                             int32_t student_vocab,
                                                             const DatasetOptions& options,
                                                             DataSummary* summary);

// ---- packing and loading -----------------------------------------------------

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

#endif  // RETORT_DISTILL_DATA_H_
