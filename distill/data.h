// The student's training data: the datasets examples come from, split into
// train and held-out sets. This header also includes what it is made of:
// distill/train_example.h (TrainExample, DataSummary), distill/chat_example.h
// (chat samples through the student's chat template) and
// distill/data_loader.h (packing into micro-batches).
//
// Where examples come from:
//   * chat / trace samples (JSONL): ChatExampleBuilder (chat_example.h);
//   * plain text (pretraining-style): documents split at blank lines or cut
//     into fixed-size token chunks, every token trained;
//   * token shards (offline KD, formats/traces.h): prompt_ids +
//     completion_ids as stored, the teacher's top-k attached to the
//     completion tokens; the teacher's tokenizer must be the student's.
//
// Thread-safety: the Dataset accessors are const and may run on several
// threads. Dataset::Load / ChatJsonlExamples tokenize on the core thread pool
// (ParallelFor), so call them from one thread at a time.
#ifndef RETORT_DISTILL_DATA_H_
#define RETORT_DISTILL_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/progress.h"
#include "distill/chat_example.h"   // IWYU pragma: export
#include "distill/data_loader.h"    // IWYU pragma: export
#include "distill/train_example.h"  // IWYU pragma: export
#include "formats/reasoning.h"
#include "formats/traces.h"
#include "model/sampler.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort {

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

}  // namespace retort

#endif  // RETORT_DISTILL_DATA_H_
