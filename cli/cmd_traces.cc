// retort traces import|export|stats: trace files in and out of our JSONL
// layout (formats/traces.h), and what a folder of traces holds.
//
//   import IN... --output OUT.jsonl    any dialect ParseTraceLineSamples reads
//                                      (open-r1/native, OpenAI messages,
//                                      ShareGPT, open-r1 columns) -> native lines
//   export IN.jsonl --format openai|sharegpt|r1 --output OUT.jsonl
//                                      native -> another dialect; the reasoning
//                                      goes back inside <think>...</think> in
//                                      the assistant text
//   stats DIR_OR_FILE...               counts, lengths, accuracy and pass@k,
//                                      finish reasons; for shards records,
//                                      tokens and bytes per generated token
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/status.h"
#include "distill/verify.h"
#include "formats/traces.h"

namespace retort::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Every sample of a file in any dialect (open-r1 rows with several
// generations give several).
absl::StatusOr<std::vector<TraceSample>> ReadAnyDialect(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<TraceSample> out;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    ASSIGN_OR_RETURN(std::vector<TraceSample> samples, ParseTraceLineSamples(line, line_no, path));
    for (TraceSample& s : samples) out.push_back(std::move(s));
  }
  return out;
}

// The assistant text with its reasoning back inside think tags.
std::string WithThink(const TraceMessage& m) {
  if (m.reasoning_content.empty()) return m.content;
  return absl::StrCat("<think>\n", m.reasoning_content, "\n</think>\n\n", m.content);
}

Json ExportLine(const TraceSample& s, const std::string& format) {
  if (format == "openai") {
    Json messages = Json::array();
    for (const TraceMessage& m : s.messages) {
      messages.push_back(
          {{"role", m.role}, {"content", m.role == "assistant" ? WithThink(m) : m.content}});
    }
    return {{"messages", messages}};
  }
  if (format == "sharegpt") {
    Json conv = Json::array();
    for (const TraceMessage& m : s.messages) {
      std::string from = m.role == "user" ? "human" : m.role == "assistant" ? "gpt" : m.role;
      conv.push_back({{"from", from}, {"value", m.role == "assistant" ? WithThink(m) : m.content}});
    }
    return {{"conversations", conv}};
  }
  // r1: open-r1's dataset columns, one generation per row.
  Json row = {{"problem", s.PromptText()}};
  const TraceMessage* c = s.Completion();
  row["generation"] = c ? WithThink(*c) : "";
  if (s.answer) row["answer"] = *s.answer;
  if (s.correct) row["correctness_math_verify"] = Json::array({*s.correct});
  if (!s.finish_reason.empty()) row["finish_reason"] = s.finish_reason;
  return row;
}

int RunImport(const Args& args) {
  CommandSpec spec{"traces import", "IN.jsonl... --output OUT.jsonl",
                   "Convert trace files in any dialect (open-r1, OpenAI messages, ShareGPT, "
                   "open-r1 columns) to retort's JSONL."};
  po::options_description opts("options");
  std::vector<std::string> inputs;
  std::string output;
  opts.add_options()("input", po::value(&inputs)->multitoken()->required(), "input JSONL files")(
      "output,o", po::value(&output)->required(), "output JSONL");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  std::string text;
  int64_t n = 0;
  for (const std::string& in : inputs) {
    auto samples = ReadAnyDialect(in);
    if (!samples.ok()) return Fail(spec.name, samples.status());
    for (const TraceSample& s : *samples) {
      absl::StrAppend(&text, TraceSampleToJsonLine(s), "\n");
      ++n;
    }
  }
  if (auto s = WriteFileAtomically(output, text); !s.ok()) return Fail(spec.name, s);
  std::cout << absl::StrFormat("imported %d samples -> %s\n", n, output);
  return kExitOk;
}

int RunExport(const Args& args) {
  CommandSpec spec{"traces export", "IN.jsonl --format openai|sharegpt|r1 --output OUT.jsonl",
                   "Write traces in another dialect (reasoning inside <think>...</think>)."};
  po::options_description opts("options");
  std::string input, format, output;
  opts.add_options()("input", po::value(&input)->required(), "input JSONL")(
      "format", po::value(&format)->required(), "openai | sharegpt | r1")(
      "output,o", po::value(&output)->required(), "output JSONL");
  po::positional_options_description pos;
  pos.add("input", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (format != "openai" && format != "sharegpt" && format != "r1") {
    return UsageError(spec.name, "--format must be openai, sharegpt or r1");
  }
  auto samples = ReadAnyDialect(input);
  if (!samples.ok()) return Fail(spec.name, samples.status());
  std::string text;
  for (const TraceSample& s : *samples) absl::StrAppend(&text, Dump(ExportLine(s, format)), "\n");
  if (auto s = WriteFileAtomically(output, text); !s.ok()) return Fail(spec.name, s);
  std::cout << absl::StrFormat("exported %d samples (%s) -> %s\n", samples->size(), format, output);
  return kExitOk;
}

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

absl::StatusOr<Json> JsonlStats(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<TraceSample> samples, ReadAnyDialect(path));
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

absl::StatusOr<Json> ShardStats(const std::string& path) {
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

void PrintQuantiles(const char* name, const Json& q) {
  if (q.is_null()) return;
  std::cout << absl::StrFormat("  %-18s mean %.1f  median %.0f  p90 %.0f  max %.0f\n", name,
                               q["mean"].get<double>(), q["median"].get<double>(),
                               q["p90"].get<double>(), q["max"].get<double>());
}

int RunStats(const Args& args) {
  CommandSpec spec{"traces stats", "DIR_OR_FILE... [--json]",
                   "Counts, lengths, accuracy / pass@k and finish reasons of trace JSONL files; "
                   "records, tokens and bytes per generated token of token shards. A folder "
                   "means its traces.jsonl and tokens.shard."};
  po::options_description opts("options");
  std::vector<std::string> inputs;
  opts.add_options()("input", po::value(&inputs)->multitoken()->required(), "folders or files")(
      "json", po::bool_switch(), "print one JSON object per input");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  const bool json = vm["json"].as<bool>();
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      bool any = false;
      for (const char* name : {"traces.jsonl", "tokens.shard"}) {
        fs::path p = fs::path(in) / name;
        if (fs::exists(p)) {
          files.push_back(p.string());
          any = true;
        }
      }
      if (!any) {
        return Fail(spec.name, absl::NotFoundError(absl::StrCat(
                                   in, ": no traces.jsonl or tokens.shard in this folder")));
      }
    } else {
      files.push_back(in);
    }
  }
  for (const std::string& f : files) {
    const bool shard = f.size() >= 6 && f.compare(f.size() - 6, 6, ".shard") == 0;
    absl::StatusOr<Json> j = shard ? ShardStats(f) : JsonlStats(f);
    if (!j.ok()) return Fail(spec.name, j.status());
    if (json) {
      std::cout << Dump(*j) << "\n";
      continue;
    }
    std::cout << f << "\n";
    if (shard) {
      std::cout << absl::StrFormat(
          "  records %d, prompt tokens %d, generated tokens %d, top-k %d, %d frames, %s bytes\n"
          "  bytes per generated token: %.1f\n",
          (*j)["records"].get<int64_t>(), (*j)["prompt_tokens"].get<int64_t>(),
          (*j)["completion_tokens"].get<int64_t>(), (*j)["top_k"].get<int64_t>(),
          (*j)["frames"].get<int64_t>(), std::to_string((*j)["file_bytes"].get<int64_t>()),
          (*j)["bytes_per_generated_token"].get<double>());
      if (j->contains("damaged_tail"))
        std::cout << "  damaged tail: " << (*j)["damaged_tail"].get<std::string>() << "\n";
      continue;
    }
    std::cout << absl::StrFormat("  samples %d, prompts %d, with reasoning %d\n",
                                 (*j)["samples"].get<int64_t>(), (*j)["prompts"].get<int64_t>(),
                                 (*j)["with_reasoning"].get<int64_t>());
    PrintQuantiles("completion tokens", (*j)["completion_tokens"]);
    PrintQuantiles("reasoning chars", (*j)["reasoning_chars"]);
    PrintQuantiles("answer chars", (*j)["answer_chars"]);
    std::string fr;
    for (auto it = (*j)["finish_reasons"].begin(); it != (*j)["finish_reasons"].end(); ++it) {
      absl::StrAppend(&fr, fr.empty() ? "" : ", ", it.key(), " ", it.value().get<int64_t>());
    }
    std::cout << "  finish reasons: " << fr << "\n";
    if (j->contains("verification")) std::cout << FormatVerificationSummary((*j)["verification"]);
  }
  return kExitOk;
}

}  // namespace

int RunTraces(const Args& args) {
  const std::string usage =
      "usage: retort traces import IN... --output OUT.jsonl\n"
      "       retort traces export IN.jsonl --format openai|sharegpt|r1 --output OUT.jsonl\n"
      "       retort traces stats DIR_OR_FILE... [--json]\n";
  if (args.empty()) {
    std::cerr << usage;
    return kExitUsage;
  }
  const std::string& sub = args[0];
  Args rest(args.begin() + 1, args.end());
  if (sub == "import") return RunImport(rest);
  if (sub == "export") return RunExport(rest);
  if (sub == "stats") return RunStats(rest);
  if (sub == "--help" || sub == "-h") {
    std::cout << usage;
    return kExitOk;
  }
  std::cerr << "retort traces: unknown subcommand \"" << sub << "\"\n" << usage;
  return kExitUsage;
}

}  // namespace retort::cli
