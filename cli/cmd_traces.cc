// retort traces import|export|stats: trace files in and out of our JSONL
// layout (formats/traces.h), and what a folder of traces holds.
//
//   import IN... OUT.jsonl             any dialect ParseTraceLineSamples reads
//                                      (open-r1/native, OpenAI messages,
//                                      ShareGPT, open-r1 columns) -> native lines
//   export IN.jsonl OUT.jsonl --format openai|sharegpt|r1
//                                      native -> another dialect; the reasoning
//                                      goes back inside <think>...</think> in
//                                      the assistant text
//   stats DIR_OR_FILE...               counts, lengths, accuracy and pass@k,
//                                      finish reasons; for shards records,
//                                      tokens and bytes per generated token
// OUT is also -o OUT, "-" for stdout; an existing OUT needs --force.
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
#include "distill/trace_files.h"
#include "distill/verify.h"

namespace retort::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Writes `text` to OUT (atomically) or, for "-", to stdout; the summary line
// goes to stdout, or to stderr when stdout carries the traces.
int WriteTraces(const std::string& command, const pipeline::OutputOption& out,
                const std::string& text, const std::string& summary) {
  if (out.to_stdout()) {
    std::cout << text << std::flush;
    std::cerr << summary << "\n";
    return kExitOk;
  }
  if (auto s = WriteFileAtomically(out.path(), text); !s.ok()) return Fail(command, s);
  std::cout << summary << "\n";
  return kExitOk;
}

// OUT may not be one of the inputs (it is read whole before it is written,
// but a mistake that replaces an input is not what --force is for).
absl::Status CheckNotAnInput(const std::string& out, const std::vector<std::string>& inputs) {
  std::error_code ec;
  for (const std::string& in : inputs) {
    if (out != "-" && fs::equivalent(in, out, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(out, " is also an input; choose another OUT"));
    }
  }
  return absl::OkStatus();
}

int RunImport(const Args& args) {
  CommandSpec spec{.name = "traces import",
                   .usage = "IN.jsonl... OUT.jsonl (or -o OUT.jsonl) [--force]",
                   .summary =
                       "Convert trace files in any dialect (open-r1, OpenAI messages, ShareGPT, "
                       "open-r1 columns) to retort's JSONL. Without -o the last argument is OUT."};
  po::options_description opts("options");
  std::vector<std::string> inputs;
  pipeline::OutputOption output(pipeline::OutputOption::Kind::kStream);
  opts.add_options()("input", po::value(&inputs)->multitoken()->required(), "input JSONL files");
  output.AddOptions(opts, /*required=*/false, "output JSONL");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (output.path().empty()) {
    if (inputs.size() < 2) return UsageError(spec.name, "give OUT: IN... OUT, or -o OUT");
    output.path() = inputs.back();
    inputs.pop_back();
  }
  if (auto s = output.Check(); !s.ok()) return Fail(spec.name, s);
  if (auto s = CheckNotAnInput(output.path(), inputs); !s.ok()) return Fail(spec.name, s);
  std::string text;
  int64_t n = 0;
  for (const std::string& in : inputs) {
    auto samples = ReadTraceSamplesAnyDialect(in);
    if (!samples.ok()) return Fail(spec.name, samples.status());
    for (const TraceSample& s : *samples) {
      absl::StrAppend(&text, TraceSampleToJsonLine(s), "\n");
      ++n;
    }
  }
  return WriteTraces(spec.name, output, text,
                     absl::StrFormat("imported %d samples -> %s", n,
                                     output.to_stdout() ? "stdout" : output.path()));
}

int RunExport(const Args& args) {
  CommandSpec spec{
      .name = "traces export",
      .usage = "IN.jsonl OUT.jsonl (or -o OUT.jsonl) --format openai|sharegpt|r1 [--force]",
      .summary = "Write traces in another dialect (reasoning inside <think>...</think>)."};
  po::options_description opts("options");
  std::string input, format;
  pipeline::OutputOption output(pipeline::OutputOption::Kind::kStream);
  opts.add_options()("input", po::value(&input)->required(), "input JSONL")(
      "format", po::value(&format)->required(), "openai | sharegpt | r1");
  output.AddOptions(opts, /*required=*/true, "output JSONL");
  po::positional_options_description pos;
  pos.add("input", 1).add("output", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (format != "openai" && format != "sharegpt" && format != "r1") {
    return UsageError(spec.name, "--format must be openai, sharegpt or r1");
  }
  if (auto s = output.Check(); !s.ok()) return Fail(spec.name, s);
  if (auto s = CheckNotAnInput(output.path(), {input}); !s.ok()) return Fail(spec.name, s);
  auto samples = ReadTraceSamplesAnyDialect(input);
  if (!samples.ok()) return Fail(spec.name, samples.status());
  std::string text;
  for (const TraceSample& s : *samples)
    absl::StrAppend(&text, Dump(ExportTraceLine(s, format)), "\n");
  return WriteTraces(spec.name, output, text,
                     absl::StrFormat("exported %d samples (%s) -> %s", samples->size(), format,
                                     output.to_stdout() ? "stdout" : output.path()));
}

void PrintQuantiles(const char* name, const Json& q) {
  if (q.is_null()) return;
  std::cout << absl::StrFormat("  %-18s mean %.1f  median %.0f  p90 %.0f  max %.0f\n", name,
                               q["mean"].get<double>(), q["median"].get<double>(),
                               q["p90"].get<double>(), q["max"].get<double>());
}

int RunStats(const Args& args) {
  CommandSpec spec{.name = "traces stats",
                   .usage = "DIR_OR_FILE... [--json]",
                   .summary =
                       "Counts, lengths, accuracy / pass@k and finish reasons of trace JSONL "
                       "files; records, tokens and bytes per generated token of token shards. A "
                       "folder means its traces.jsonl and tokens.shard."};
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
    absl::StatusOr<Json> j = shard ? TraceShardStatsJson(f) : TraceJsonlStats(f);
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
      "usage: retort traces import IN... OUT.jsonl (or -o OUT.jsonl; - is stdout)\n"
      "       retort traces export IN.jsonl OUT.jsonl --format openai|sharegpt|r1\n"
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
