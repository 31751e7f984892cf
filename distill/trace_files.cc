#include "distill/trace_files.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/file.h"
#include "core/status.h"
#include "distill/verify.h"
#include "formats/reasoning.h"

namespace retort {
namespace {
using Json = nlohmann::ordered_json;

Json Quantiles(std::vector<double> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(std::ceil(q * v.size()));
    return v[std::min(v.size() - 1, i > 0 ? i - 1 : 0)];
  };
  double sum = 0;
  for (double x : v) sum += x;
  return {{"mean", sum / v.size()}, {"median", at(0.5)}, {"p90", at(0.9)}, {"max", v.back()}};
}

}  // namespace

// ReadTraceJsonl reads every dialect ParseTraceLineSamples does, all
// generations of an open-r1 row included.
absl::StatusOr<std::vector<TraceSample>> ReadTraceSamplesAnyDialect(const std::string& path) {
  return ReadTraceJsonl(path);
}

Json ExportTraceLine(const TraceSample& s, const std::string& format) {
  if (format == "openai") {
    Json messages = Json::array();
    for (const TraceMessage& m : s.messages) {
      messages.push_back(
          {{"role", m.role},
           {"content",
            m.role == "assistant" ? JoinReasoning(m.reasoning_content, m.content) : m.content}});
    }
    return {{"messages", messages}};
  }
  if (format == "sharegpt") {
    Json conv = Json::array();
    for (const TraceMessage& m : s.messages) {
      std::string from = m.role == "user" ? "human" : m.role == "assistant" ? "gpt" : m.role;
      conv.push_back(
          {{"from", from},
           {"value",
            m.role == "assistant" ? JoinReasoning(m.reasoning_content, m.content) : m.content}});
    }
    return {{"conversations", conv}};
  }
  // r1: open-r1's dataset columns, one generation per row.
  Json row = {{"problem", s.PromptText()}};
  const TraceMessage* c = s.Completion();
  row["generation"] = c ? JoinReasoning(c->reasoning_content, c->content) : "";
  if (s.answer) row["answer"] = *s.answer;
  if (s.correct) row["correctness_math_verify"] = Json::array({*s.correct});
  if (!s.finish_reason.empty()) row["finish_reason"] = s.finish_reason;
  return row;
}

absl::StatusOr<Json> TraceJsonlStats(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<TraceSample> samples, ReadTraceSamplesAnyDialect(path));
  std::set<std::string> ids;
  std::vector<double> completion, reasoning_chars, answer_chars;
  std::map<std::string, int64_t> finish;
  std::map<std::string, PromptStats> per_prompt;
  std::vector<std::string> order;
  int64_t with_reasoning = 0;
  for (const TraceSample& s : samples) {
    ids.insert(s.id);
    if (s.completion_tokens > 0) completion.push_back(static_cast<double>(s.completion_tokens));
    if (const TraceMessage* c = s.Completion()) {
      reasoning_chars.push_back(static_cast<double>(c->reasoning_content.size()));
      answer_chars.push_back(static_cast<double>(c->content.size()));
      with_reasoning += c->reasoning_content.empty() ? 0 : 1;
    }
    ++finish[s.finish_reason.empty() ? "unknown" : s.finish_reason];
    if (s.correct) {
      auto [it, fresh] = per_prompt.emplace(s.id, PromptStats{s.id, 0, 0});
      if (fresh) order.push_back(s.id);
      ++it->second.n;
      it->second.correct += *s.correct ? 1 : 0;
    }
  }
  Json j = {{"file", path},
            {"samples", samples.size()},
            {"prompts", ids.size()},
            {"with_reasoning", with_reasoning},
            {"completion_tokens", Quantiles(completion)},
            {"reasoning_chars", Quantiles(reasoning_chars)},
            {"answer_chars", Quantiles(answer_chars)},
            {"finish_reasons", finish}};
  if (!per_prompt.empty()) {
    std::vector<PromptStats> list;
    int max_n = 1;
    for (const std::string& id : order) {
      list.push_back(per_prompt[id]);
      max_n = std::max(max_n, per_prompt[id].n);
    }
    std::vector<int> ks = {1};
    for (int k = 2; k < max_n; k *= 2) ks.push_back(k);
    if (max_n > 1) ks.push_back(max_n);
    ASSIGN_OR_RETURN(j["verification"], SummarizeVerification(list, ks));
  }
  return j;
}

absl::StatusOr<Json> TraceShardStatsJson(const std::string& path) {
  ASSIGN_OR_RETURN(TraceShardStats s, ComputeTraceShardStats(path));
  Json j = {{"file", path},
            {"records", s.records},
            {"prompt_tokens", s.prompt_tokens},
            {"completion_tokens", s.completion_tokens},
            {"top_k", s.completion_tokens > 0 ? s.topk_entries / s.completion_tokens : 0},
            {"frames", s.frames},
            {"file_bytes", s.file_bytes},
            {"bytes_per_generated_token", s.bytes_per_completion_token}};
  if (!s.tail.empty()) j["damaged_tail"] = s.tail;
  return j;
}

}  // namespace retort
