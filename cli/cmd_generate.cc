// retort generate MODEL (--prompt TEXT | --prompt-file FILE | --chat FILE|JSON)
#include <chrono>
#include <iostream>
#include <set>

#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "model/sampler.h"
#include "model/transformer.h"

namespace retort::cli {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Streams decoded text: decoding the whole continuation each step and
// printing the new suffix keeps multi-byte characters split across tokens
// intact; a trailing U+FFFD (an incomplete character) is held back.
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::ostream& out) : tok_(tok), out_(out) {}
  void Push(int32_t id) {
    ids_.push_back(id);
    std::string text = tok_.Decode(ids_, /*skip_special_tokens=*/true);
    static const std::string kReplacement = "\xEF\xBF\xBD";
    if (text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacement) == 0) return;
    if (text.size() > printed_) {
      out_ << text.substr(printed_) << std::flush;
      printed_ = text.size();
    }
  }
  void Finish() {
    std::string text = tok_.Decode(ids_, true);
    if (text.size() > printed_) out_ << text.substr(printed_);
    out_ << "\n" << std::flush;
  }

 private:
  const Tokenizer& tok_;
  std::ostream& out_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;
};

}  // namespace

int RunGenerate(const Args& args) {
  CommandSpec spec{"generate", "MODEL (--prompt TEXT | --prompt-file FILE | --chat FILE|JSON) [options]",
                   "Generate a continuation, streaming the text to stdout; speeds go to stderr."};
  po::options_description opts("options");
  std::string model, prompt, prompt_file, chat;
  int64_t max_tokens = 256;
  int threads = 0;
  SamplerOptions so;
  opts.add_options()("model", po::value(&model)->required(), "model directory or .gguf file")(
      "prompt", po::value(&prompt), "prompt text")("prompt-file", po::value(&prompt_file), "file with the prompt")(
      "chat", po::value(&chat), "chat messages (JSON file or inline JSON), rendered with the model's chat template")(
      "max-tokens", po::value(&max_tokens)->default_value(256), "tokens to generate at most")(
      "temperature", po::value(&so.temperature)->default_value(0.6f, "0.6"), "0 = greedy")(
      "top-k", po::value(&so.top_k)->default_value(0), "keep the k most likely tokens (0 = off)")(
      "top-p", po::value(&so.top_p)->default_value(0.95f, "0.95"), "nucleus sampling mass (1 = off)")(
      "min-p", po::value(&so.min_p)->default_value(0.0f, "0"), "drop tokens below min-p x top probability")(
      "repetition-penalty", po::value(&so.repetition_penalty)->default_value(1.0f, "1"), "HF-style penalty (1 = off)")(
      "seed", po::value(&so.seed)->default_value(0), "random seed (same seed, same text)")(
      "greedy", po::bool_switch(), "same as --temperature 0")(
      "ignore-eos", po::bool_switch(), "keep generating past end-of-sequence tokens")(
      "no-special", po::bool_switch(), "do not add the tokenizer's BOS to a plain prompt")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)")(
      "json", po::bool_switch(), "print one JSON object (text, token ids, timings) instead of streaming");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  int sources = vm.count("prompt") + !prompt_file.empty() + !chat.empty();
  if (sources != 1) return UsageError(spec.name, "give exactly one of --prompt, --prompt-file, --chat");
  if (max_tokens < 1) return UsageError(spec.name, "--max-tokens must be at least 1");
  if (vm["greedy"].as<bool>()) so.temperature = 0;
  if (auto s = ValidateSamplerOptions(so); !s.ok()) return Fail(spec.name, s);
  if (threads > 0) SetNumThreads(threads);

  auto tokenizer = LoadTokenizer(model);
  if (!tokenizer.ok()) return Fail(spec.name, tokenizer.status());
  TextSource source{prompt, vm.count("prompt") > 0, prompt_file, chat, /*add_generation_prompt=*/true,
                    !vm["no-special"].as<bool>()};
  auto tokenized = TokenizeSource(model, **tokenizer, source, "prompt");
  if (!tokenized.ok()) return Fail(spec.name, tokenized.status());
  std::vector<int32_t> ids = *std::move(tokenized);
  if (ids.empty()) return Fail(spec.name, absl::InvalidArgumentError("the prompt is empty (no tokens)"));

  auto engine = LoadEngine(model);
  if (!engine.ok()) return Fail(spec.name, engine.status());
  const ModelConfig& config = (*engine)->config();
  std::set<int32_t> stop;
  for (int64_t e : config.eos_token_ids) stop.insert(static_cast<int32_t>(e));
  if ((*tokenizer)->eos_id() >= 0) stop.insert((*tokenizer)->eos_id());
  if (vm["ignore-eos"].as<bool>()) stop.clear();

  int64_t budget = std::min<int64_t>(max_tokens, config.max_position_embeddings - static_cast<int64_t>(ids.size()));
  if (budget < 1) {
    return Fail(spec.name, absl::InvalidArgumentError(absl::StrFormat(
                               "the prompt has %d tokens, the model's context is %d", ids.size(),
                               config.max_position_embeddings)));
  }
  KvCache cache = (*engine)->NewCache(static_cast<int64_t>(ids.size()) + budget);
  std::vector<float> logits(config.vocab_size);
  Sampler sampler(so);
  bool json = vm["json"].as<bool>();
  TextStream stream(**tokenizer, std::cout);

  auto t0 = Clock::now();
  if (auto s = (*engine)->Forward(ids.data(), ids.size(), cache, logits.data()); !s.ok()) return Fail(spec.name, s);
  auto t1 = Clock::now();
  std::vector<int32_t> history = ids, generated;
  std::string finish = "length";
  for (int64_t i = 0; i < budget; ++i) {
    int32_t next = sampler.Sample(logits.data(), config.vocab_size, history);
    if (next < 0) return Fail(spec.name, absl::InternalError("no token can be sampled (all logits NaN or -inf)"));
    if (stop.count(next)) {
      finish = "stop";
      break;
    }
    generated.push_back(next);
    history.push_back(next);
    if (!json) stream.Push(next);
    if (i + 1 == budget) break;
    if (auto s = (*engine)->Forward(&next, 1, cache, logits.data()); !s.ok()) return Fail(spec.name, s);
  }
  auto t2 = Clock::now();
  double prefill_s = Seconds(t0, t1), decode_s = Seconds(t1, t2);
  // Decode steps = forward passes after the prefill (the last sampled token is not run).
  int64_t decode_steps = std::max<int64_t>(0, static_cast<int64_t>(generated.size()) - (finish == "stop" ? 0 : 1));
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
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    stream.Finish();
    std::cerr << absl::StrFormat(
        "[prompt %d tokens, prefill %.1f tok/s | generated %d tokens, decode %.1f tok/s | finish: %s]\n",
        ids.size(), prefill_tps, generated.size(), decode_tps, finish);
  }
  return kExitOk;
}

}  // namespace retort::cli
