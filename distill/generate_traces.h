// The job behind `retort generate --prompts`: reads the prompts, builds the
// teacher (our engine on MODEL, or an OpenAI-compatible endpoint, with MODEL
// then supplying the tokenizer and chat template for the shard's prompt ids)
// and the verifier, and runs the resumable trace job (trace_job.h) into the
// output folder. Progress and the job's log go to a ProgressSink.
#ifndef RETORT_DISTILL_GENERATE_TRACES_H_
#define RETORT_DISTILL_GENERATE_TRACES_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/progress.h"
#include "distill/trace_job.h"

namespace retort {

struct GenerateTracesOptions {
  std::string model;         // teacher (or, with an endpoint, its tokenizer); may be empty then
  std::string prompts_path;  // {"id", "prompt" | "messages", "answer"?} per line
  std::string output;        // resumed when it exists
  TraceSamplingOptions sampling;
  std::string verifier;  // math | exact | ... | none; empty: math when the prompts have answers
  std::string keep;      // correct | all; empty: correct when verifying answers, else all
  ThinkPrefix think = ThinkPrefix::kAuto;
  std::string think_name = "auto";  // as given, for the job's parameters
  bool write_shard = true;
  int64_t max_batch = 8;  // local teacher: sequences generated at once
  // An OpenAI-compatible teacher:
  std::string endpoint;
  std::string model_name;  // empty: the endpoint's first model
  std::string api_key_env = "OPENAI_API_KEY";
  int concurrency = 8, retries = 4;
  double timeout_s = 600;
};

// Usage mistakes only visible here ("--keep correct" without a verifier) are
// OptionError (core/status.h).
absl::StatusOr<TraceJobReport> GenerateTraces(const GenerateTracesOptions& options,
                                              ProgressSink& progress);

}  // namespace retort

#endif  // RETORT_DISTILL_GENERATE_TRACES_H_
