// Trace jobs: what `retort generate --prompts` runs. A set of prompts (JSONL)
// becomes N sampled completions per prompt from a teacher (our engine through
// BatchGenerator, or any OpenAI-compatible endpoint through EndpointClient),
// each split into reasoning and answer, verified against the prompt's answer,
// and written to an output folder that survives being killed at any moment.
//
// Prompts file: one JSON object per line,
//   {"id": "p1", "prompt": "text"}                      one user turn, or
//   {"id": "p1", "messages": [{"role", "content"}...]}  a chat,
//   optional "answer" (string or number): the reference for the verifier.
// Errors name "<path>:<line>": bad JSON, a missing/mistyped id, neither or
// both of prompt/messages, a duplicate id.
//
// Seeds: sample i of prompt `id` is drawn with seed
//   TraceSampleSeed(seed, id, i) = splitmix64(seed ^ splitmix64(fnv1a64(id) + i)) >> 1
// (63 bits, so an endpoint gets it as a non-negative JSON integer)
// so a sample does not depend on the order of the prompts, on the batch it
// ran in, or on whether the job was resumed (up to the f32 rounding
// BatchGenerator documents for different batch compositions).
//
// Output folder (TraceOutputDir):
//   job.json      the parameters that decide the samples (checked on resume)
//   traces.jsonl  kept samples, TraceSampleToJsonLine lines (open-r1 layout)
//   tokens.shard  kept samples' TraceTokens, same order as traces.jsonl
//   done.jsonl    one line per finished sample, kept or rejected: the commit log
//   summary.json  written at the end (verification summary and run counts)
//
// Commit protocol (one group of finished samples at a time):
//   1. the group's shard records are appended and committed (one zstd frame,
//      fsync);
//   2. the kept samples' JSONL lines are appended and traces.jsonl fsynced;
//   3. one done.jsonl line per sample (kept or rejected) is appended and
//      fsynced. A sample is done exactly when its done.jsonl line is whole.
// On open (resume): a torn last line of done.jsonl is cut; traces.jsonl is cut
// back to the lines of the K kept samples done.jsonl lists (they must match it
// line by line); tokens.shard is cut back to its first K records (a damaged
// tail dropped, a frame shared with uncommitted records rewritten). Samples
// listed in done.jsonl are never generated again, so a kill -9 at any moment
// neither loses nor duplicates a finished sample, rejected ones included.
//
// Thread-safety: none of these classes is thread-safe; a job runs on one
// thread (the endpoint teacher waits on its client's own pool).
#ifndef RETORT_DISTILL_TRACE_JOB_H_
#define RETORT_DISTILL_TRACE_JOB_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/progress.h"
#include "distill/endpoint.h"
#include "distill/verify.h"
#include "formats/traces.h"
#include "model/sampler.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort {

// One prompt of a prompts file.
struct TracePrompt {
  std::string id;
  nlohmann::ordered_json messages;    // OpenAI chat array
  std::optional<std::string> answer;  // reference answer
  int64_t line = 0;                   // 1-based line in the file
};

// Reads a prompts JSONL file (blank lines skipped). See the top of the file.
absl::StatusOr<std::vector<TracePrompt>> ReadTracePrompts(const std::string& path);

// The seed of sample `sample` of prompt `id` (see the top of the file).
uint64_t TraceSampleSeed(uint64_t seed, const std::string& id, int64_t sample);

// How to open the assistant turn of a reasoning teacher.
enum class ThinkPrefix { kAuto, kOn, kOff };
absl::StatusOr<ThinkPrefix> ParseThinkPrefix(const std::string& name);  // auto|on|off

// A prompt rendered for the local engine.
struct RenderedPrompt {
  std::string text;
  std::vector<int32_t> ids;
  // The prompt ends inside an opened <think>: the completion is reasoning
  // until </think>.
  bool starts_in_reasoning = false;
};
// Renders `messages` with the chat template (add_generation_prompt) and
// tokenizes it as `retort serve` does (special tokens, no doubled BOS).
// kAuto opens the assistant turn with "<think>\n" when the template mentions
// "<think>" and its generation prompt does not already end with it (R1-style
// teachers; DeepSeek advises forcing it); kOn always (unless already there);
// kOff never adds it. A generation prompt that already ends with "<think>"
// always counts as starting in reasoning.
absl::StatusOr<RenderedPrompt> RenderTracePrompt(const ChatTemplate& chat_template,
                                                 const Tokenizer& tokenizer,
                                                 const nlohmann::ordered_json& messages,
                                                 ThinkPrefix think);

// What decides the samples (recorded in job.json; a resume must match).
struct TraceSamplingOptions {
  int64_t samples = 1;  // per prompt
  float temperature = 0.6f;
  float top_p = 0.95f;
  int64_t max_tokens = 1024;
  uint64_t seed = 0;
  int32_t top_logprobs = 0;  // K stored in the shard (0: ids and sampled log-probs only)
};

// One unit of work: sample `sample` of `prompt`.
struct TraceWorkItem {
  const TracePrompt* prompt = nullptr;
  int64_t sample = 0;
  uint64_t seed = 0;
};

// What a teacher returns for one work item.
struct TraceCompletion {
  const TraceWorkItem* item = nullptr;
  // Not OK: the sample failed. FailedPrecondition = the prompt does not fit
  // the context (counted as skipped, not committed; a resume skips it again);
  // anything else stops the job.
  absl::Status status;
  std::string reasoning, content;   // split, trimmed
  std::string finish_reason;        // "stop", "length", ...
  bool has_tokens = false;          // the ids below are known
  std::vector<int32_t> prompt_ids;  // may be empty (endpoint without a tokenizer)
  std::vector<int32_t> completion_ids;
  std::vector<float> sampled_logprobs;  // [completion] or empty
  int32_t top_k = 0;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double time_s = 0;
};

using TraceDoneFn = std::function<absl::Status(std::vector<TraceCompletion>&&)>;

// A source of completions. Run() produces one TraceCompletion per item
// through `on_done` (on the calling thread, in finishing order, a group of
// those that finished together per call; also called with an empty group now
// and then, for progress) and returns when all are done or on_done returned
// an error (which it then returns).
class TraceTeacher {
 public:
  virtual ~TraceTeacher() = default;
  virtual std::string Describe() const = 0;
  virtual absl::Status Run(const std::vector<TraceWorkItem>& items, const TraceDoneFn& on_done) = 0;
  // Generated tokens so far (for tokens/s).
  virtual int64_t generated_tokens() const = 0;
};

// Our engine. Keeps the stop token (EOS / end of turn) as the last completion
// id with its log-probs, so a student learns to stop; the JSONL
// completion_tokens counts it too (== the shard's completion_ids). OpenAI
// servers do not return it (see EndpointTraceTeacher).
struct LocalTeacherOptions {
  int64_t max_batch = 8;
  ThinkPrefix think = ThinkPrefix::kAuto;
  // Flush group: committed after every generator step that finished samples.
};
class LocalTraceTeacher : public TraceTeacher {
 public:
  // REQUIRES: all arguments outlive the teacher.
  LocalTraceTeacher(const Transformer& model, const Tokenizer& tokenizer,
                    const ChatTemplate& chat_template, const TraceSamplingOptions& sampling,
                    LocalTeacherOptions options);
  std::string Describe() const override { return "local"; }
  absl::Status Run(const std::vector<TraceWorkItem>& items, const TraceDoneFn& on_done) override;
  int64_t generated_tokens() const override { return generated_; }

 private:
  const Transformer& model_;
  const Tokenizer& tokenizer_;
  const ChatTemplate& chat_template_;
  TraceSamplingOptions sampling_;
  LocalTeacherOptions options_;
  int64_t generated_ = 0;
};

// An OpenAI-compatible server: one chat/completions request per sample (n=1,
// the sample's seed), at most the client's max_in_flight at once. Token ids
// come from the log-prob entries ("token_id", as `retort serve` writes them,
// or vLLM's "token_id:N" strings); logprobs are requested whenever a shard is
// written. A server that gives no ids: the job fails with a message saying to
// pass --no-shard. OpenAI servers drop the stop token, so an endpoint shard
// record ends before it. Prompt ids are filled when a tokenizer and chat
// template are given (rendered locally, as the server should).
// top_logprobs is limited to 20 (the OpenAI API's maximum).
struct EndpointTeacherOptions {
  bool want_tokens = true;                      // false: no ids needed (no shard)
  const Tokenizer* tokenizer = nullptr;         // optional
  const ChatTemplate* chat_template = nullptr;  // optional (rendered with ThinkPrefix::kOff,
                                                // as a server renders it)
};
class EndpointTraceTeacher : public TraceTeacher {
 public:
  EndpointTraceTeacher(EndpointClient& client, const TraceSamplingOptions& sampling,
                       EndpointTeacherOptions options);
  std::string Describe() const override;
  absl::Status Run(const std::vector<TraceWorkItem>& items, const TraceDoneFn& on_done) override;
  int64_t generated_tokens() const override { return generated_; }

  // Converts one answer choice (exposed for tests).
  static absl::Status FillFromChoice(const ChatChoice& choice, bool want_tokens,
                                     TraceCompletion* out);

 private:
  EndpointClient& client_;
  TraceSamplingOptions sampling_;
  EndpointTeacherOptions options_;
  int64_t generated_ = 0;
};

// One finished sample of done.jsonl.
struct TraceDoneEntry {
  std::string id;
  int64_t sample = 0;
  bool kept = false;
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
    std::string jsonl_line;  // no newline; used when entry.kept
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
  std::FILE* done_log_ = nullptr;
  std::optional<TraceShardWriter> shard_;
};

enum class KeepPolicy { kAll, kCorrect };

struct TraceJobOptions {
  TraceSamplingOptions sampling;
  KeepPolicy keep = KeepPolicy::kAll;
  const Verifier* verifier = nullptr;  // null: no verification
  std::string teacher_name;            // written into each sample's "model"
  // Progress line on stderr every this many seconds (<= 0: never).
  double progress_interval_s = 2.0;
  ProgressSink* progress = nullptr;  // log and progress lines; null: StderrProgress()
};

// Counts of one run (this process) and the summary over all done samples.
struct TraceJobReport {
  int64_t prompts = 0;
  int64_t prompts_skipped = 0;  // did not fit the context
  int64_t samples_total = 0;    // prompts * samples
  int64_t samples_resumed = 0;  // already done when the run started
  int64_t samples_generated = 0;
  int64_t samples_kept = 0;  // over all done samples
  int64_t samples_rejected = 0;
  int64_t verify_errors = 0;
  int64_t generated_tokens = 0;  // this run
  double seconds = 0;
  nlohmann::ordered_json summary;  // what summary.json holds
};

// Runs (or resumes) a job into `out` and writes summary.json.
absl::StatusOr<TraceJobReport> RunTraceJob(const std::vector<TracePrompt>& prompts,
                                           TraceTeacher& teacher, TraceOutputDir& out,
                                           const TraceJobOptions& options);

// The job.json parameters of a run.
nlohmann::ordered_json TraceJobParams(const TraceSamplingOptions& sampling, KeepPolicy keep,
                                      const std::string& verifier, const std::string& teacher,
                                      bool write_shard, const std::string& prompts_path);

}  // namespace retort

#endif  // RETORT_DISTILL_TRACE_JOB_H_
