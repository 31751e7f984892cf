// Trace jobs: what `retort generate --prompts` runs. A set of prompts (JSONL,
// distill/trace_prompts.h) becomes N sampled completions per prompt from a
// teacher (our engine or any OpenAI-compatible endpoint,
// distill/trace_teachers.h), each split into reasoning and answer, verified
// against the prompt's answer, and written to an output folder that survives
// being killed at any moment (distill/trace_output_dir.h: its files and the
// commit protocol). This header includes all three.
//
// Thread-safety: a job runs on one thread (the endpoint teacher waits on its
// client's own pool).
#ifndef RETORT_DISTILL_TRACE_JOB_H_
#define RETORT_DISTILL_TRACE_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/progress.h"
#include "distill/trace_output_dir.h"  // IWYU pragma: export
#include "distill/trace_prompts.h"     // IWYU pragma: export
#include "distill/trace_teachers.h"    // IWYU pragma: export
#include "distill/verify.h"
#include "nlohmann/json.hpp"

namespace retort {

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
