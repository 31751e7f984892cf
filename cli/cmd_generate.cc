// retort generate MODEL (--prompt TEXT | --prompt-file FILE | --chat FILE|JSON)
//   one continuation, streamed to stdout; or
// retort generate [MODEL] --prompts PROMPTS.jsonl OUT [--endpoint URL]
//   reasoning traces for a set of prompts (distill/trace_job.h): N samples per
//   prompt, verified, resumable, with the teacher's top-k log-probs.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "model/model_files.h"
#include "model/sampler.h"
#include "model/transformer.h"
#include "text/detokenizer.h"

namespace retort::cli {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Streams decoded text to `out` as it becomes final (text/detokenizer.h):
// a character split across tokens is printed once it is whole, and all that
// is printed is exactly the decoded continuation.
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::ostream& out)
      : decoder_(tok, /*skip_special_tokens=*/true), out_(out) {}
  void Push(int32_t id) {
    const std::string text = decoder_.Push(id);
    if (!text.empty()) out_ << text << std::flush;
  }
  void Finish() { out_ << decoder_.Finish() << "\n" << std::flush; }

 private:
  IncrementalDecoder decoder_;
  std::ostream& out_;
};

bool HasFlag(const Args& args, const std::string& flag) {
  for (const std::string& a : args) {
    if (a == flag || a.rfind(flag + "=", 0) == 0) return true;
  }
  return false;
}

// `retort generate --prompts`: see distill/trace_job.h for the folder layout,
// the commit protocol and the seeds.
int RunGenerateTraces(const Args& args, const CommandIo& io) {
  CommandSpec spec{
      .name = "generate",
      .usage = "[MODEL] --prompts PROMPTS.jsonl OUT [--endpoint URL] [options]",
      .summary =
          "Generate N verified reasoning traces per prompt into OUT (or -o OUT: traces.jsonl, "
          "tokens.shard, rejected.jsonl, done.jsonl, summary.json). A rerun with the same OUT "
          "resumes: finished samples are never generated twice; an OUT that is not a traces "
          "folder, or holds a job with other settings, is refused. With --endpoint and no MODEL, "
          "give -o OUT. The teacher is MODEL (our engine) or an OpenAI-compatible --endpoint (then "
          "MODEL, if given, supplies the tokenizer and chat template for the shard's prompt "
          "ids).\n\nDefaults: with answers in the prompts, --verifier math and --keep correct "
          "(rejection sampling); without, no verifier and --keep all. A prompt longer than the "
          "model's context is skipped (counted in summary.json as prompts_skipped)."};
  spec.default_model = !HasFlag(args, "--endpoint");  // an endpoint is the teacher
  spec.device = true;
  return RunJobCommand(io, spec, *pipeline::NewGenerateTracesJob(), args);
}

}  // namespace

int RunGenerate(const Args& args, const CommandIo& io) {
  if (HasFlag(args, "--prompts") || HasFlag(args, "--endpoint")) return RunGenerateTraces(args, io);
  CommandSpec spec{
      .name = "generate",
      .usage = "MODEL (--prompt TEXT | --prompt-file FILE | --chat FILE|JSON) [options]",
      .summary =
          "Generate a continuation, streaming the text to stdout; speeds go to stderr.\nFor "
          "verified reasoning traces over a prompts file (resumable, teacher log-probs, --endpoint "
          "teachers) see `retort generate --prompts FILE --help`.",
      .default_model = true,
      .device = true};
  po::options_description opts("options");
  std::string model, prompt, prompt_file, chat;
  int64_t max_tokens = 256;
  int threads = 0;
  SamplerOptions so;
  opts.add_options()("model", po::value(&model)->required(), "model directory or .gguf file")(
      "prompt", po::value(&prompt), "prompt text")("prompt-file", po::value(&prompt_file),
                                                   "file with the prompt")(
      "chat", po::value(&chat),
      "chat messages (JSON file or inline JSON), rendered with the model's chat template")(
      "max-tokens", po::value(&max_tokens)->default_value(256), "tokens to generate at most")(
      "temperature", po::value(&so.temperature)->default_value(0.6f, "0.6"), "0 = greedy")(
      "top-k", po::value(&so.top_k)->default_value(0), "keep the k most likely tokens (0 = off)")(
      "top-p", po::value(&so.top_p)->default_value(0.95f, "0.95"),
      "nucleus sampling mass (1 = off)")("min-p", po::value(&so.min_p)->default_value(0.0f, "0"),
                                         "drop tokens below min-p x top probability")(
      "repetition-penalty", po::value(&so.repetition_penalty)->default_value(1.0f, "1"),
      "HF-style penalty (1 = off)")("seed", po::value(&so.seed)->default_value(0),
                                    "random seed (same seed, same text)")(
      "greedy", po::bool_switch(), "same as --temperature 0")(
      "ignore-eos", po::bool_switch(), "keep generating past end-of-sequence tokens")(
      "no-special", po::bool_switch(), "do not add the tokenizer's BOS to a plain prompt")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)")(
      "json", po::bool_switch(),
      "print one JSON object (text, token ids, timings) instead of streaming");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, opts, pos, vm)) {
    if (*exit == kExitOk && vm.count("help")) {
      // Trace mode's options too: one `generate --help` shows everything.
      po::options_description trace("trace mode (with --prompts PROMPTS.jsonl OUT)");
      pipeline::NewGenerateTracesJob()->AddOptions(trace, /*command_line=*/true);
      std::ostringstream text;
      text << trace;
      *io.out << ShortestDefaults(text.str()) << "\n";
    }
    return *exit;
  }
  int sources = vm.count("prompt") + !prompt_file.empty() + !chat.empty();
  if (sources != 1)
    return UsageError(io, spec.name, "give exactly one of --prompt, --prompt-file, --chat");
  if (max_tokens < 1) return UsageError(io, spec.name, "--max-tokens must be at least 1");
  if (vm["greedy"].as<bool>()) so.temperature = 0;
  if (auto s = ValidateSamplerOptions(so); !s.ok()) return Fail(io, spec.name, s);
  if (threads > 0) SetNumThreads(threads);

  auto tokenizer = LoadTokenizer(model);
  if (!tokenizer.ok()) return Fail(io, spec.name, tokenizer.status());
  TextSource source{prompt, vm.count("prompt") > 0,         prompt_file,
                    chat,   /*add_generation_prompt=*/true, !vm["no-special"].as<bool>()};
  auto tokenized = TokenizeSource(model, **tokenizer, source, "prompt");
  if (!tokenized.ok()) return Fail(io, spec.name, tokenized.status());
  std::vector<int32_t> ids = *std::move(tokenized);
  if (ids.empty())
    return Fail(io, spec.name, absl::InvalidArgumentError("the prompt is empty (no tokens)"));

  auto engine = LoadEngine(model);
  if (!engine.ok()) return Fail(io, spec.name, engine.status());
  const ModelConfig& config = (*engine)->config();
  std::set<int32_t> stop;
  for (int64_t e : config.eos_token_ids) stop.insert(static_cast<int32_t>(e));
  if ((*tokenizer)->eos_id() >= 0) stop.insert((*tokenizer)->eos_id());
  if (vm["ignore-eos"].as<bool>()) stop.clear();

  int64_t budget = std::min<int64_t>(
      max_tokens, config.max_position_embeddings - static_cast<int64_t>(ids.size()));
  if (budget < 1) {
    return Fail(io, spec.name,
                absl::InvalidArgumentError(
                    absl::StrFormat("the prompt has %d tokens, the model's context is %d",
                                    ids.size(), config.max_position_embeddings)));
  }
  KvCache cache = (*engine)->NewCache(static_cast<int64_t>(ids.size()) + budget);
  std::vector<float> logits(config.vocab_size);
  Sampler sampler(so);
  bool json = vm["json"].as<bool>();
  TextStream stream(**tokenizer, *io.out);

  auto t0 = Clock::now();
  if (auto s = (*engine)->Forward(ids.data(), ids.size(), cache, logits.data()); !s.ok())
    return Fail(io, spec.name, s);
  auto t1 = Clock::now();
  std::vector<int32_t> history = ids, generated;
  std::string finish = "length";
  for (int64_t i = 0; i < budget; ++i) {
    int32_t next = sampler.Sample(logits.data(), config.vocab_size, history);
    if (next < 0)
      return Fail(io, spec.name,
                  absl::InternalError("no token can be sampled (all logits NaN or -inf)"));
    if (stop.count(next)) {
      finish = "stop";
      break;
    }
    generated.push_back(next);
    history.push_back(next);
    if (!json) stream.Push(next);
    if (i + 1 == budget) break;
    if (auto s = (*engine)->Forward(&next, 1, cache, logits.data()); !s.ok())
      return Fail(io, spec.name, s);
  }
  auto t2 = Clock::now();
  double prefill_s = Seconds(t0, t1), decode_s = Seconds(t1, t2);
  // Decode steps = forward passes after the prefill (the last sampled token is not run).
  int64_t decode_steps =
      std::max<int64_t>(0, static_cast<int64_t>(generated.size()) - (finish == "stop" ? 0 : 1));
  double prefill_tps = ids.size() / std::max(prefill_s, 1e-9);
  double decode_tps = decode_steps / std::max(decode_s, 1e-9);
  if (json) {
    nlohmann::json out = {{"text", (*tokenizer)->Decode(generated, true)},
                          {"prompt_tokens", ids.size()},
                          {"completion_tokens", generated.size()},
                          {"token_ids", generated},
                          {"finish_reason", finish},
                          {"prefill_seconds", prefill_s},
                          {"decode_seconds", decode_s},
                          {"prefill_tokens_per_second", prefill_tps},
                          {"decode_tokens_per_second", decode_tps}};
    *io.out << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    stream.Finish();
    *io.err << absl::StrFormat(
        "[prompt %d tokens, prefill %.1f tok/s | generated %d tokens, decode %.1f tok/s | finish: "
        "%s]\n",
        ids.size(), prefill_tps, generated.size(), decode_tps, finish);
  }
  return kExitOk;
}

}  // namespace retort::cli
