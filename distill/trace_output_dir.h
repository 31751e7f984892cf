// The output folder of a trace job (`retort generate --prompts`), which
// survives being killed at any moment:
//   job.json      the parameters that decide the samples (checked on resume)
//   traces.jsonl  kept samples, TraceSampleToJsonLine lines (open-r1 layout)
//   rejected.jsonl the samples the keep policy threw away, same layout, each
//                 with "reject_reason": wrong_answer, verify_error or unverified
//   tokens.shard  kept samples' TraceTokens, same order as traces.jsonl
//   done.jsonl    one line per finished sample, kept or rejected: the commit log
//   summary.json  written at the end (verification summary and run counts)
//
// Commit protocol (one group of finished samples at a time):
//   1. the group's shard records are appended and committed (one zstd frame,
//      fsync);
//   2. the kept samples' JSONL lines are appended and traces.jsonl fsynced,
//      the rejected ones' to rejected.jsonl;
//   3. one done.jsonl line per sample (kept or rejected) is appended and
//      fsynced. A sample is done exactly when its done.jsonl line is whole.
// On open (resume): a torn last line of done.jsonl is cut; traces.jsonl is cut
// back to the lines of the K kept samples done.jsonl lists (they must match it
// line by line), rejected.jsonl to the rejected ones'; tokens.shard is cut back to its first K
// records (a damaged tail dropped, a frame shared with uncommitted records rewritten). Samples
// listed in done.jsonl are never generated again, so a kill -9 at any moment
// neither loses nor duplicates a finished sample, rejected ones included.
//
// Thread-safety: not thread-safe; a job commits from one thread.
#ifndef RETORT_DISTILL_TRACE_OUTPUT_DIR_H_
#define RETORT_DISTILL_TRACE_OUTPUT_DIR_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/file.h"
#include "formats/traces.h"
#include "nlohmann/json.hpp"

namespace retort {

// One finished sample of done.jsonl.
struct TraceDoneEntry {
  std::string id;
  int64_t sample = 0;
  bool kept = false;
  std::string rejected;  // why not kept ("" when kept; see RejectReason)
  std::optional<bool> correct;
  std::string finish_reason;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double time_s = 0;
};

// What Open() had to repair.
struct TraceRecovery {
  int64_t done = 0;                   // samples already done
  int64_t kept = 0;                   // of which kept
  int64_t done_log_cut_bytes = 0;     // torn done.jsonl tail
  int64_t jsonl_cut_bytes = 0;        // uncommitted traces.jsonl lines
  int64_t rejected_cut_bytes = 0;     // uncommitted rejected.jsonl lines
  int64_t shard_dropped_records = 0;  // uncommitted shard records
  int64_t shard_cut_bytes = 0;        // damaged or dropped shard bytes
};

// The output folder (see the top of the file).
class TraceOutputDir {
 public:
  // Creates `dir` (and job.json) or resumes it: an existing job.json must
  // equal `job` (else FailedPrecondition naming the first differing key).
  static absl::StatusOr<std::unique_ptr<TraceOutputDir>> Open(const std::string& dir,
                                                              const nlohmann::ordered_json& job,
                                                              bool write_shard);
  ~TraceOutputDir();

  const TraceRecovery& recovery() const { return recovery_; }
  const std::vector<TraceDoneEntry>& done() const { return done_; }
  bool IsDone(const std::string& id, int64_t sample) const;

  // One finished sample to commit: its done entry, its JSONL line and shard
  // record when kept.
  struct Pending {
    TraceDoneEntry entry;
    std::string jsonl_line;  // no newline; to traces.jsonl when kept, else rejected.jsonl
    TraceTokens tokens;      // used when entry.kept and the shard is written
  };
  // Commits a group (the protocol at the top of the file).
  absl::Status Commit(std::vector<Pending> group);
  absl::Status Close();

  const std::string& dir() const { return dir_; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  TraceOutputDir() = default;
  absl::Status Recover(bool write_shard);

  std::string dir_;
  bool write_shard_ = false;
  std::vector<TraceDoneEntry> done_;
  std::map<std::pair<std::string, int64_t>, size_t> done_index_;
  TraceRecovery recovery_;
  std::FILE* jsonl_ = nullptr;
  std::FILE* rejected_ = nullptr;  // null for a folder written before rejected.jsonl existed
  std::FILE* done_log_ = nullptr;
  std::optional<TraceShardWriter> shard_;
  std::optional<DirectoryLock> lock_;  // held while the folder is open
};

}  // namespace retort

#endif  // RETORT_DISTILL_TRACE_OUTPUT_DIR_H_
