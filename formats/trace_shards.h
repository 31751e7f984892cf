// Trace token shards: TraceTokens records (prompt and completion ids, the
// teacher's top-k log-probs per generated token) as length-delimited protobuf
// messages (formats/proto/trace.proto) inside a sequence of zstd frames. The
// writer appends one frame per Commit() and fsyncs, so a crash leaves a
// readable prefix of whole frames; the reader returns every record of the
// intact frames and then reports the damaged tail. formats/traces.md has the
// bytes.
//
// Thread safety: a TraceShardWriter or TraceShardReader is used by one thread
// at a time.
#ifndef RETORT_FORMATS_TRACE_SHARDS_H_
#define RETORT_FORMATS_TRACE_SHARDS_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/topk_codec.h"

namespace retort {

// Token ids and teacher log-probs of one sample. In-memory form of the
// TraceTokens proto; the `topk` bytes are encoded and decoded by the shard
// writer and reader.
struct TraceTokens {
  std::string id;
  int32_t sample = 0;
  std::vector<int32_t> prompt_ids, completion_ids;
  int32_t top_k = 0;
  std::vector<int32_t> topk_ids;        // [completion * top_k], rank order (best first)
  std::vector<float> topk_logprobs;     // same layout, natural log, non-increasing per row
  std::vector<float> sampled_logprobs;  // [completion] or empty
};

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
  std::string frame_;  // decompressed current frame
  size_t frame_pos_ = 0;
  bool done_ = false;
  absl::Status tail_status_;
};

// True when the file at `path` starts with the zstd frame magic (28 b5 2f fd),
// as every shard does; false otherwise, a missing or unreadable file
// included. How a data file is told apart from JSONL and plain text.
bool StartsLikeTraceShard(const std::string& path);

// What `retort traces stats` prints for a shard.
struct TraceShardStats {
  int64_t records = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // generated tokens
  int64_t topk_entries = 0;       // sum of completion * top_k
  int64_t frames = 0;
  int64_t file_bytes = 0;                   // on disk
  int64_t valid_bytes = 0;                  // intact prefix
  double bytes_per_completion_token = 0.0;  // valid_bytes / completion_tokens
  std::string tail;                         // "" or the damaged tail's description
};
// Reads the whole shard. A damaged tail is reported in `tail`, not as an
// error; other failures (missing file, malformed record) are errors.
absl::StatusOr<TraceShardStats> ComputeTraceShardStats(const std::string& path);

}  // namespace retort

#endif  // RETORT_FORMATS_TRACE_SHARDS_H_
