// Teachers of a trace job: what turns a prompt into sampled completions,
// either our engine (LocalTraceTeacher, through BatchGenerator) or any
// OpenAI-compatible endpoint (EndpointTraceTeacher, through EndpointClient).
// Each completion comes back split into reasoning and answer, with its token
// ids and log-probs where the teacher gives them.
//
// Thread-safety: a teacher is not thread-safe; it runs on one thread (the
// endpoint teacher waits on its client's own pool).
#ifndef RETORT_DISTILL_TRACE_TEACHERS_H_
#define RETORT_DISTILL_TRACE_TEACHERS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "distill/endpoint.h"
#include "distill/trace_prompts.h"
#include "model/transformer.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort {

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

}  // namespace retort

#endif  // RETORT_DISTILL_TRACE_TEACHERS_H_
