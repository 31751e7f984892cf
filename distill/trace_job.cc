#include "distill/trace_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/process.h"
#include "core/status.h"
#include "distill/verify_stats.h"

namespace retort {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

}  // namespace

nlohmann::ordered_json TraceJobParams(const TraceSamplingOptions& sampling, KeepPolicy keep,
                                      const std::string& verifier, const std::string& teacher,
                                      bool write_shard, const std::string& prompts_path) {
  return Json{{"format", "retort-traces-v1"},
              {"prompts", prompts_path},
              {"teacher", teacher},
              {"samples", sampling.samples},
              {"temperature", sampling.temperature},
              {"top_p", sampling.top_p},
              {"max_tokens", sampling.max_tokens},
              {"seed", sampling.seed},
              {"top_logprobs", sampling.top_logprobs},
              {"verifier", verifier},
              {"keep", keep == KeepPolicy::kCorrect ? "correct" : "all"},
              {"shard", write_shard}};
}

absl::StatusOr<TraceJobReport> RunTraceJob(const std::vector<TracePrompt>& prompts,
                                           TraceTeacher& teacher, TraceOutputDir& out,
                                           const TraceJobOptions& options) {
  const auto start = Clock::now();
  const int64_t n = std::max<int64_t>(1, options.sampling.samples);
  ProgressSink& sink = options.progress ? *options.progress : StderrProgress();
  auto log = [&sink](const std::string& s) { sink.Line(s); };
  TraceJobReport report;
  report.prompts = static_cast<int64_t>(prompts.size());
  report.samples_total = report.prompts * n;

  std::map<std::string, int64_t> done_per_prompt;
  for (const TraceDoneEntry& e : out.done()) ++done_per_prompt[e.id];
  std::vector<TraceWorkItem> items;
  int64_t prompts_done = 0;
  for (const TracePrompt& p : prompts) {
    int64_t already = 0;
    for (int64_t s = 0; s < n; ++s) {
      if (out.IsDone(p.id, s)) {
        ++already;
        continue;
      }
      items.push_back({&p, s, TraceSampleSeed(options.sampling.seed, p.id, s)});
    }
    report.samples_resumed += already;
    if (already == n) ++prompts_done;
  }
  if (report.samples_resumed > 0) {
    const TraceRecovery& r = out.recovery();
    log(absl::StrFormat(
        "resuming: %d of %d samples already done (%d prompts complete); repaired: done.jsonl -%d "
        "B, traces.jsonl -%d B, tokens.shard -%d records / -%d B",
        report.samples_resumed, report.samples_total, prompts_done, r.done_log_cut_bytes,
        r.jsonl_cut_bytes, r.shard_dropped_records, r.shard_cut_bytes));
  }

  std::map<std::string, int64_t> remaining;  // samples left per prompt this run
  for (const TraceWorkItem& it : items) ++remaining[it.prompt->id];
  std::set<std::string> skipped;
  auto last_progress = Clock::now();
  const bool verify_any = options.verifier != nullptr;

  auto progress = [&](bool force) {
    if (!force && (options.progress_interval_s <= 0 ||
                   SecondsSince(last_progress) < options.progress_interval_s)) {
      return;
    }
    last_progress = Clock::now();
    double secs = SecondsSince(start);
    double tps = teacher.generated_tokens() / std::max(secs, 1e-9);
    int64_t todo = static_cast<int64_t>(items.size()) - report.samples_generated;
    double per_sample = report.samples_generated > 0 ? secs / report.samples_generated : NAN;
    log(absl::StrFormat(
        "[generate] prompts %d/%d done | samples %d/%d (kept %d, rejected %d) | %.1f tok/s | "
        "elapsed %s | ETA %s",
        prompts_done, report.prompts, report.samples_resumed + report.samples_generated,
        report.samples_total, report.samples_kept, report.samples_rejected, tps,
        HumanDuration(secs), HumanDuration(per_sample * std::max<int64_t>(0, todo))));
  };

  auto on_done = [&](std::vector<TraceCompletion>&& group) -> absl::Status {
    std::vector<TraceOutputDir::Pending> pending;
    for (TraceCompletion& c : group) {
      const TracePrompt& p = *c.item->prompt;
      if (absl::IsFailedPrecondition(c.status)) {
        if (skipped.insert(p.id).second) log(absl::StrCat("skipped: ", c.status.message()));
        continue;
      }
      if (!c.status.ok()) {
        return absl::Status(c.status.code(),
                            absl::StrCat("prompt \"", p.id, "\" sample ", c.item->sample, ": ",
                                         c.status.message()));
      }
      TraceSample t;
      t.id = p.id;
      t.sample = c.item->sample;
      for (const Json& m : p.messages) {
        TraceMessage tm;
        for (auto it = m.begin(); it != m.end(); ++it) {
          if (it.key() == "role" && it->is_string()) {
            tm.role = it->get<std::string>();
          } else if (it.key() == "content" && it->is_string()) {
            tm.content = it->get<std::string>();
          } else if (it.key() == "reasoning_content" && it->is_string()) {
            tm.reasoning_content = it->get<std::string>();
          } else {
            tm.extra[it.key()] = *it;
          }
        }
        t.messages.push_back(std::move(tm));
      }
      TraceMessage assistant;
      assistant.role = "assistant";
      assistant.content = c.content;
      assistant.reasoning_content = c.reasoning;
      t.messages.push_back(std::move(assistant));
      t.answer = p.answer;
      t.finish_reason = c.finish_reason;
      t.prompt_tokens = c.prompt_tokens;
      t.completion_tokens = c.completion_tokens;
      t.time_s = std::round(c.time_s * 1000) / 1000;
      if (verify_any && p.answer) {
        absl::StatusOr<VerifyResult> v = options.verifier->Verify(c.content, *p.answer);
        t.verifier = options.verifier->Describe();
        if (v.ok()) {
          t.correct = v->correct;
          t.extra["extracted_answer"] = v->extracted;
        } else {
          ++report.verify_errors;
          t.extra["verify_error"] = std::string(v.status().message());
        }
      }
      t.extra["seed"] = c.item->seed;
      if (!options.teacher_name.empty()) t.extra["model"] = options.teacher_name;
      const bool kept = options.keep == KeepPolicy::kAll || t.correct.value_or(false);
      std::string rejected;
      if (!kept) {
        rejected = t.correct.has_value()              ? "wrong_answer"
                   : t.extra.contains("verify_error") ? "verify_error"
                                                      : "unverified";
        t.extra["reject_reason"] = rejected;
      }

      TraceOutputDir::Pending pd;
      pd.entry.id = p.id;
      pd.entry.sample = c.item->sample;
      pd.entry.kept = kept;
      pd.entry.rejected = rejected;
      pd.jsonl_line = TraceSampleToJsonLine(t);
      pd.entry.correct = t.correct;
      pd.entry.finish_reason = c.finish_reason;
      pd.entry.prompt_tokens = c.prompt_tokens;
      pd.entry.completion_tokens = c.completion_tokens;
      pd.entry.time_s = t.time_s;
      if (kept) {
        pd.tokens.id = p.id;
        pd.tokens.sample = static_cast<int32_t>(c.item->sample);
        pd.tokens.prompt_ids = std::move(c.prompt_ids);
        pd.tokens.completion_ids = std::move(c.completion_ids);
        pd.tokens.top_k = c.top_k;
        pd.tokens.topk_ids = std::move(c.topk_ids);
        pd.tokens.topk_logprobs = std::move(c.topk_logprobs);
        pd.tokens.sampled_logprobs = std::move(c.sampled_logprobs);
      }
      pending.push_back(std::move(pd));
      ++report.samples_generated;
      if (--remaining[p.id] == 0) ++prompts_done;
    }
    RETURN_IF_ERROR(out.Commit(std::move(pending)));
    // Kept/rejected over everything done so far.
    report.samples_kept = report.samples_rejected = 0;
    for (const TraceDoneEntry& e : out.done())
      (e.kept ? report.samples_kept : report.samples_rejected)++;
    progress(false);
    return absl::OkStatus();
  };
  for (const TraceDoneEntry& e : out.done())
    (e.kept ? report.samples_kept : report.samples_rejected)++;
  if (!items.empty()) RETURN_IF_ERROR(teacher.Run(items, on_done));
  report.prompts_skipped = static_cast<int64_t>(skipped.size());
  report.generated_tokens = teacher.generated_tokens();
  report.seconds = SecondsSince(start);
  progress(true);

  // The summary over every done sample of these prompts.
  std::map<std::string, const TracePrompt*> by_id;
  for (const TracePrompt& p : prompts) by_id[p.id] = &p;
  std::map<std::string, PromptStats> stats;
  std::map<std::string, int64_t> finish, rejected_why;
  std::vector<int64_t> lengths;
  int64_t done_samples = 0, kept = 0, rejected = 0;
  for (const TraceDoneEntry& e : out.done()) {
    if (!by_id.count(e.id)) continue;
    ++done_samples;
    (e.kept ? kept : rejected)++;
    if (!e.kept) ++rejected_why[e.rejected.empty() ? "unknown" : e.rejected];
    ++finish[e.finish_reason.empty() ? "unknown" : e.finish_reason];
    lengths.push_back(e.completion_tokens);
    if (e.correct.has_value()) {
      PromptStats& s = stats[e.id];
      s.id = e.id;
      ++s.n;
      s.correct += *e.correct ? 1 : 0;
    }
  }
  Json summary = Json::object();
  summary["teacher"] = options.teacher_name;
  summary["prompts"] = report.prompts;
  summary["prompts_skipped"] = report.prompts_skipped;
  summary["samples_per_prompt"] = n;
  summary["samples"] = done_samples;
  summary["kept"] = kept;
  summary["rejected"] = rejected;
  summary["rejected_reasons"] = rejected_why;
  summary["warnings"] = Json::array();
  if (done_samples > 0 && kept == 0) {
    std::string why;
    for (const auto& [reason, count] : rejected_why)
      absl::StrAppend(&why, ", ", count, " ", reason);
    const std::string w = absl::StrFormat(
        "warning: 0 of %d samples kept (--keep correct%s): traces.jsonl and tokens.shard are "
        "empty; the rejected samples are in %s; use --keep all to train on them",
        done_samples, why, out.Path("rejected.jsonl"));
    log(w);
    summary["warnings"].push_back(w);
  }
  summary["verify_errors"] = report.verify_errors;
  summary["finish_reasons"] = finish;
  std::sort(lengths.begin(), lengths.end());
  auto pct = [&](double q) -> Json {
    if (lengths.empty()) return nullptr;
    size_t i = static_cast<size_t>(std::ceil(q * lengths.size())) - (q > 0 ? 1 : 0);
    return lengths[std::min(i, lengths.size() - 1)];
  };
  double mean = 0;
  for (int64_t l : lengths) mean += static_cast<double>(l);
  summary["completion_tokens"] = {
      {"total", static_cast<int64_t>(mean)},
      {"mean", lengths.empty() ? 0.0 : mean / static_cast<double>(lengths.size())},
      {"median", pct(0.5)},
      {"p90", pct(0.9)}};
  if (!stats.empty()) {
    std::vector<PromptStats> list;
    for (const TracePrompt& p : prompts) {
      if (auto it = stats.find(p.id); it != stats.end()) list.push_back(it->second);
    }
    std::vector<int> ks = {1};
    for (int k = 2; k < n; k *= 2) ks.push_back(k);
    if (n > 1) ks.push_back(static_cast<int>(n));
    ASSIGN_OR_RETURN(summary["verification"], SummarizeVerification(list, ks));
  } else {
    summary["verification"] = nullptr;
  }
  summary["this_run"] = {
      {"samples_generated", report.samples_generated},
      {"samples_resumed", report.samples_resumed},
      {"generated_tokens", report.generated_tokens},
      {"seconds", report.seconds},
      {"tokens_per_second", report.generated_tokens / std::max(report.seconds, 1e-9)}};
  RETURN_IF_ERROR(WriteFileAtomically(out.Path("summary.json"), summary.dump(2) + "\n"));
  report.summary = std::move(summary);
  return report;
}

}  // namespace retort