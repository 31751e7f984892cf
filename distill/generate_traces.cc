#include "distill/generate_traces.h"

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "distill/endpoint.h"
#include "distill/verify.h"
#include "model/model_files.h"
#include "model/transformer.h"

namespace retort {

absl::StatusOr<TraceJobReport> GenerateTraces(const GenerateTracesOptions& o,
                                              ProgressSink& progress) {
  ASSIGN_OR_RETURN(std::vector<TracePrompt> prompts, ReadTracePrompts(o.prompts_path));
  const bool any_answer = std::any_of(prompts.begin(), prompts.end(),
                                      [](const TracePrompt& p) { return p.answer.has_value(); });
  std::string verifier_spec = o.verifier;
  if (verifier_spec.empty()) verifier_spec = any_answer ? "math" : "none";
  std::unique_ptr<Verifier> verifier;
  if (verifier_spec != "none") {
    ASSIGN_OR_RETURN(verifier, MakeVerifier(verifier_spec));
  }
  std::string keep_name = o.keep;
  if (keep_name.empty()) keep_name = verifier && any_answer ? "correct" : "all";
  KeepPolicy keep;
  if (keep_name == "correct") {
    keep = KeepPolicy::kCorrect;
    if (!verifier) return OptionError("--keep correct needs a --verifier");
  } else if (keep_name == "all") {
    keep = KeepPolicy::kAll;
  } else {
    return OptionError("--keep must be correct or all");
  }

  // The teacher.
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;
  std::unique_ptr<Transformer> engine;
  std::unique_ptr<EndpointClient> client;
  std::unique_ptr<TraceTeacher> teacher;
  std::string teacher_name;
  if (!o.model.empty()) {
    ASSIGN_OR_RETURN(tokenizer, LoadTokenizer(o.model));
    auto c = LoadChatTemplate(o.model);
    if (!c.ok()) {
      return absl::Status(c.status().code(),
                          absl::StrCat("a trace job renders prompts with the teacher's chat "
                                       "template: ",
                                       c.status().message()));
    }
    chat_template = *std::move(c);
  }
  if (!o.endpoint.empty()) {
    EndpointOptions eo;
    eo.base_url = o.endpoint;
    eo.api_key_env = o.api_key_env;
    eo.max_in_flight = o.concurrency;
    eo.max_retries = o.retries;
    eo.request_timeout_s = o.timeout_s;
    eo.model = o.model_name;
    ASSIGN_OR_RETURN(client, ConnectEndpoint(eo));
    teacher_name = client->options().model;
    EndpointTeacherOptions to;
    to.want_tokens = o.write_shard;
    to.tokenizer = tokenizer.get();
    to.chat_template = chat_template ? &*chat_template : nullptr;
    teacher = std::make_unique<EndpointTraceTeacher>(*client, o.sampling, to);
  } else {
    ASSIGN_OR_RETURN(engine, LoadEngine(o.model));
    LocalTeacherOptions lo;
    lo.max_batch = o.max_batch;
    lo.think = o.think;
    teacher =
        std::make_unique<LocalTraceTeacher>(*engine, *tokenizer, *chat_template, o.sampling, lo);
    teacher_name = o.model;
  }

  nlohmann::ordered_json job =
      TraceJobParams(o.sampling, keep, verifier ? verifier->Describe() : "none", teacher_name,
                     o.write_shard, o.prompts_path);
  job["think_prefix"] = o.endpoint.empty() ? o.think_name : "server";
  ASSIGN_OR_RETURN(std::unique_ptr<TraceOutputDir> out,
                   TraceOutputDir::Open(o.output, job, o.write_shard));
  TraceJobOptions jo;
  jo.progress = &progress;
  jo.sampling = o.sampling;
  jo.keep = keep;
  jo.verifier = verifier.get();
  jo.teacher_name = teacher_name;
  const TraceSamplingOptions& so = o.sampling;
  progress.Line(absl::StrFormat(
      "[generate] %d prompts x %d samples, teacher %s, temperature %g, top-p %g, max %d tokens, "
      "verifier %s, keep %s -> %s",
      prompts.size(), so.samples, teacher_name, so.temperature, so.top_p, so.max_tokens,
      verifier ? verifier->Describe() : "none", keep_name, o.output));
  ASSIGN_OR_RETURN(TraceJobReport report, RunTraceJob(prompts, *teacher, *out, jo));
  RETURN_IF_ERROR(out->Close());
  return report;
}

}  // namespace retort
