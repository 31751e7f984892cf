// Trace files: what a teacher writes and a student learns from.
//
// Two formats live side by side in a traces/ folder (formats/traces.md has
// both byte by byte):
//
//  * JSONL, one TraceSample per line, in open-r1's layout (a chat "messages"
//    list whose assistant turn carries "reasoning_content"), so other tools
//    read our traces and we read theirs. The reader also accepts plain OpenAI
//    chat lines, ShareGPT "conversations" and open-r1's dataset columns
//    (problem / generation(s) / answer / solution).
//
//  * Token shards: TraceTokens records (prompt and completion ids, the
//    teacher's top-k log-probs per generated token) as length-delimited
//    protobuf messages (formats/proto/trace.proto) inside a sequence of zstd
//    frames. The writer appends one frame per Commit() and fsyncs, so a crash
//    leaves a readable prefix of whole frames; the reader returns every record
//    of the intact frames and then reports the damaged tail.
//
// Thread-safety: the free functions are pure. A TraceShardWriter or
// TraceShardReader is used by one thread at a time.
#ifndef RETORT_FORMATS_TRACES_H_
#define RETORT_FORMATS_TRACES_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace retort {

// ---- JSONL ------------------------------------------------------------------

// One chat turn. Assistant turns keep the reasoning apart from the answer.
struct TraceMessage {
  std::string role;               // "system", "user", "assistant", "tool", ...
  std::string content;            // for assistant turns: the answer after </think>
  std::string reasoning_content;  // assistant turns: the text inside <think>...</think>
  // Keys of the message object other than role/content/reasoning_content
  // (tool_calls, name, ...), kept for round trips.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

// One generated sample: the prompt, the teacher's reasoning and answer, and
// the bookkeeping `retort generate` needs to resume and filter.
struct TraceSample {
  std::string id;       // prompt id; several samples share one
  int64_t sample = 0;   // index of this generation for the prompt
  std::vector<TraceMessage> messages;
  std::optional<std::string> answer;  // reference answer of the prompt
  std::optional<bool> correct;        // verdict of `verifier` on the final answer
  std::string finish_reason;          // "stop", "length" or "" (unknown)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double time_s = 0.0;
  std::string verifier;  // what set `correct` ("math", "exact", ...); "" = none
  // Any other top-level keys of the line, written back after the known ones.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();

  // The last assistant turn (the completion), or nullptr.
  const TraceMessage* Completion() const;
  // The content of the first user turn, or "".
  std::string PromptText() const;
};

// A reasoning model's output split at its think tags.
struct ThinkSplit {
  std::string reasoning;  // between <think> and </think>, surrounding whitespace trimmed
  std::string answer;     // the rest (text before <think> and after </think>), trimmed
  bool found = false;     // a think tag was present
};
// "<think>\nR\n</think>\n\nA" -> {R, A, true}. Also handles the completion of
// an R1 prompt that already ended in "<think>\n" ("R</think>A") and an
// unterminated "<think>R" cut by the length limit ({R, "", true}). Without
// tags: {"", text, false}.
ThinkSplit SplitThink(std::string_view text);

// Parses one JSONL line in any accepted dialect (see formats/traces.md):
//   native/open-r1 traces  {"id", "sample", "messages", "answer", "correct", ...}
//   OpenAI chat            {"messages": [{"role", "content"}, ...]}
//   ShareGPT               {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
//   open-r1 columns        {"problem"|"prompt", "generation"|"generations",
//                           "answer"|"solution", "messages"}
// Assistant content with <think>...</think> and no "reasoning_content" is split
// with SplitThink. A missing id becomes "uuid" if present, else the line number.
// For a row with a "generations" list and no "messages", this returns the
// first generation; ParseTraceLineSamples returns all of them.
// Errors (InvalidArgument) read "<path>:<line_no>: <field>: <problem>":
// invalid UTF-8 (with the byte offset), bad JSON, no recognised content,
// missing or mistyped fields.
absl::StatusOr<TraceSample> ParseTraceLine(std::string_view line, int64_t line_no,
                                           const std::string& path);
// As ParseTraceLine, but an open-r1 row with "generations": [g0, g1, ...]
// gives one sample per generation (sample = i, correct from
// "correctness_math_verify"[i] when present).
absl::StatusOr<std::vector<TraceSample>> ParseTraceLineSamples(std::string_view line,
                                                               int64_t line_no,
                                                               const std::string& path);

// One line of native JSON, no trailing newline. Invalid UTF-8 in any string is
// replaced by U+FFFD (serialising never fails).
std::string TraceSampleToJsonLine(const TraceSample& sample);

// Every sample of a JSONL file (blank lines skipped, CRLF accepted). The first
// bad line fails the whole read.
absl::StatusOr<std::vector<TraceSample>> ReadTraceJsonl(const std::string& path);

// ---- token shards -----------------------------------------------------------

// Token ids and teacher log-probs of one sample. In-memory form of the
// TraceTokens proto; the `topk` bytes are encoded and decoded by the shard
// writer and reader.
struct TraceTokens {
  std::string id;
  int32_t sample = 0;
  std::vector<int32_t> prompt_ids, completion_ids;
  int32_t top_k = 0;
  std::vector<int32_t> topk_ids;       // [completion * top_k], rank order (best first)
  std::vector<float> topk_logprobs;    // same layout, natural log, non-increasing per row
  std::vector<float> sampled_logprobs; // [completion] or empty
};

// Precision of the stored top-k log-probs (formats/traces.md, "Precision").
// The top-1 log-prob is kept in steps of 2^-12 nat. The others are kept as
// offsets from it: in steps of 2^-step_bits nat up to tail_from_nats below the
// top-1, in coarser steps of 2^-tail_step_bits beyond, where a token has at
// most e^-tail_from_nats of the top-1's probability and an error there moves
// little probability. Defaults: |log-prob error| <= 1/128 within 4 nats of the
// top-1, <= 1/32 beyond; |probability error| < 0.004 everywhere.
struct TopKEncoding {
  int step_bits = 6;       // in [0, 12]
  int tail_step_bits = 4;  // in [0, step_bits]
  int tail_from_nats = 4;  // in [0, 255]
};
// The largest |decoded - original| log-prob error of an encoding (finite
// log-probs, offsets from the top-1 below 2^24 steps).
double TopKMaxLogprobError(const TopKEncoding& encoding);

// The compact topk bytes alone (the shard writer and reader use these).
// REQUIRES (else InvalidArgument): ids.size() == logprobs.size() == rows * k,
// ids in [0, 2^31) and distinct within a row, log-probs not NaN, finite top-1,
// non-increasing within a row (-inf allowed after the top-1).
absl::StatusOr<std::string> EncodeTopK(const std::vector<int32_t>& ids,
                                       const std::vector<float>& logprobs, int64_t rows,
                                       int32_t k, const TopKEncoding& encoding = {});
absl::Status DecodeTopK(std::string_view bytes, int64_t rows, int32_t k,
                        std::vector<int32_t>* ids, std::vector<float>* logprobs);

// Appends TraceTokens records to a shard. Records go to an in-memory batch;
// Commit() compresses the batch into one zstd frame, writes it and fsyncs, so
// after Commit() returns the records survive a crash. A batch larger than
// kAutoFrameBytes is written as a frame (without fsync) by Append itself.
// Close() (or destruction) commits what is pending.
class TraceShardWriter {
 public:
  static constexpr size_t kAutoFrameBytes = 8 << 20;

  // append=false creates or truncates `path`. append=true keeps the intact
  // frames of an existing shard (creating it if missing) and cuts off a
  // damaged tail left by a crash; truncated_bytes() says how much was cut.
  static absl::StatusOr<TraceShardWriter> Open(const std::string& path, bool append,
                                               TopKEncoding encoding = {}, int zstd_level = 3);
  TraceShardWriter(TraceShardWriter&& other) noexcept;
  TraceShardWriter& operator=(TraceShardWriter&& other) noexcept;
  ~TraceShardWriter();

  // Errors (record not written): inconsistent sizes (topk arrays != completion
  // * top_k, sampled_logprobs neither empty nor [completion]), see EncodeTopK,
  // id not UTF-8, write failure.
  absl::Status Append(const TraceTokens& record);
  // Writes the pending batch as one frame and fsyncs. No-op when nothing is pending.
  absl::Status Commit();
  absl::Status Close();

  int64_t records_appended() const { return records_; }
  int64_t truncated_bytes() const { return truncated_bytes_; }
  const std::string& path() const { return path_; }

 private:
  TraceShardWriter() = default;
  absl::Status WriteFrame();

  std::string path_;
  std::FILE* file_ = nullptr;
  TopKEncoding encoding_;
  int zstd_level_ = 3;
  std::string pending_;  // length-delimited serialized records
  int64_t records_ = 0;
  int64_t truncated_bytes_ = 0;
};

class MappedFile;

// Reads the records of a shard in order. Frames are decompressed (and their
// zstd checksums verified) whole, so only records of intact frames are
// returned.
class TraceShardReader {
 public:
  static absl::StatusOr<TraceShardReader> Open(const std::string& path);
  TraceShardReader(TraceShardReader&&) noexcept;
  TraceShardReader& operator=(TraceShardReader&&) noexcept;
  ~TraceShardReader();

  // true: *record filled. false: clean end of the shard. After the last
  // record of the intact frames, a truncated or corrupt tail is DataLoss
  // ("<path>: truncated or corrupt zstd frame at byte X of Y; ..."), returned
  // once, and then false. A frame that decompresses but holds a malformed
  // record is also DataLoss.
  absl::StatusOr<bool> Next(TraceTokens* record);

  // Bytes from the start of the file through the last intact frame read so
  // far; after Next() returned false or DataLoss: the length to keep when
  // resuming (TraceShardWriter::Open(path, true) cuts there).
  int64_t valid_bytes() const { return valid_bytes_; }
  int64_t file_bytes() const;
  // Intact frames decompressed so far.
  int64_t frames_read() const { return frames_read_; }
  // OK, or the DataLoss of a damaged tail once Next() reached it.
  const absl::Status& tail_status() const { return tail_status_; }

 private:
  TraceShardReader() = default;
  absl::StatusOr<bool> LoadNextFrame();

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  int64_t frame_offset_ = 0;  // next frame starts here
  int64_t frame_start_ = 0;   // where the current frame starts
  int64_t valid_bytes_ = 0;
  int64_t frames_read_ = 0;
  int64_t records_read_ = 0;
  std::string frame_;         // decompressed current frame
  size_t frame_pos_ = 0;
  bool done_ = false;
  absl::Status tail_status_;
};

// What `retort traces stats` prints for a shard.
struct TraceShardStats {
  int64_t records = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // generated tokens
  int64_t topk_entries = 0;       // sum of completion * top_k
  int64_t frames = 0;
  int64_t file_bytes = 0;   // on disk
  int64_t valid_bytes = 0;  // intact prefix
  double bytes_per_completion_token = 0.0;  // valid_bytes / completion_tokens
  std::string tail;  // "" or the damaged tail's description
};
// Reads the whole shard. A damaged tail is reported in `tail`, not as an
// error; other failures (missing file, malformed record) are errors.
absl::StatusOr<TraceShardStats> ComputeTraceShardStats(const std::string& path);

}  // namespace retort

#endif  // RETORT_FORMATS_TRACES_H_
