// retort eval MODEL --perplexity FILE
// retort eval MODEL (--token-ids 1,2,3 | --text FILE) --dump-logits OUT.safetensors
#include <unistd.h>

#include <chrono>
#include <iostream>

#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "eval/perplexity.h"
#include "formats/safetensors.h"
#include "model/transformer.h"

namespace retort::cli {
namespace {

absl::Status DumpLogits(const Transformer& engine, const std::vector<int32_t>& ids, const std::string& out) {
  const int64_t vocab = engine.config().vocab_size;
  if (static_cast<int64_t>(ids.size()) > engine.config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat("%d tokens exceed the model's context of %d", ids.size(),
                                                      engine.config().max_position_embeddings));
  }
  Tensor logits = Tensor::Zeros(DType::kF32, {static_cast<int64_t>(ids.size()), vocab});
  KvCache cache = engine.NewCache(static_cast<int64_t>(ids.size()));
  RETURN_IF_ERROR(engine.Forward(ids.data(), ids.size(), cache, logits.mutable_data<float>(), LogitsMode::kAll));
  Tensor token_ids = Tensor::Zeros(DType::kI32, {static_cast<int64_t>(ids.size())});
  std::copy(ids.begin(), ids.end(), token_ids.mutable_data<int32_t>());
  return WriteSafetensors(out, {{"logits", logits}, {"token_ids", token_ids}});
}

}  // namespace

int RunEval(const Args& args) {
  CommandSpec spec{"eval", "MODEL (--perplexity FILE | (--token-ids IDS | --text FILE) --dump-logits OUT) [options]",
                   "Perplexity over a text with strided windows, or the raw f32 logits of every "
                   "position (safetensors: \"logits\" [n, vocab], \"token_ids\" [n])."};
  po::options_description opts("options");
  std::string model, ppl_file, text_file, token_ids, dump;
  int64_t context = 0, stride = 0, max_tokens = 0;
  int threads = 0;
  opts.add_options()("model", po::value(&model)->required(), "model directory or .gguf file")(
      "perplexity", po::value(&ppl_file), "text file to compute perplexity on")(
      "context", po::value(&context), "window length in tokens (default: min(model context, 1024))")(
      "stride", po::value(&stride), "tokens between window starts (default: context / 2)")(
      "max-tokens", po::value(&max_tokens), "use only the first N tokens of the text")(
      "token-ids", po::value(&token_ids), "comma-separated token ids for --dump-logits")(
      "text", po::value(&text_file), "text file for --dump-logits")(
      "dump-logits", po::value(&dump), "write the logits of every position to this .safetensors file")(
      "no-special", po::bool_switch(), "do not add the tokenizer's BOS")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)")(
      "json", po::bool_switch(), "print the result as JSON");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  bool want_ppl = !ppl_file.empty(), want_dump = !dump.empty();
  if (want_ppl == want_dump) return UsageError(spec.name, "give either --perplexity FILE or --dump-logits OUT");
  if (want_dump && (token_ids.empty() == text_file.empty())) {
    return UsageError(spec.name, "--dump-logits needs exactly one of --token-ids or --text");
  }
  if (threads > 0) SetNumThreads(threads);

  std::vector<int32_t> ids;
  if (!token_ids.empty()) {
    if (auto s = ParseIntList(token_ids, &ids); !s.ok()) return Fail(spec.name, s);
  } else {
    auto tokenizer = LoadTokenizer(model);
    if (!tokenizer.ok()) return Fail(spec.name, tokenizer.status());
    const std::string& file = want_ppl ? ppl_file : text_file;
    auto text = ReadTextFile(file, "text");
    if (!text.ok()) return Fail(spec.name, text.status());
    EncodeOptions enc;
    enc.add_special_tokens = !vm["no-special"].as<bool>();
    ids = (*tokenizer)->Encode(*text, enc);
  }
  if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens);

  auto engine = LoadEngine(model);
  if (!engine.ok()) return Fail(spec.name, engine.status());
  if (want_dump) {
    auto t0 = std::chrono::steady_clock::now();
    if (auto s = DumpLogits(**engine, ids, dump); !s.ok()) return Fail(spec.name, s);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << absl::StrFormat("wrote %s: logits [%d, %d] (%.1f tok/s)\n", dump, ids.size(),
                                 (*engine)->config().vocab_size, ids.size() / std::max(secs, 1e-9));
    return kExitOk;
  }

  const ModelConfig& config = (*engine)->config();
  PerplexityOptions po_opts;
  po_opts.context = context > 0 ? context : std::min<int64_t>(config.max_position_embeddings, 1024);
  po_opts.stride = stride > 0 ? stride : std::max<int64_t>(1, po_opts.context / 2);
  bool tty = ::isatty(2);
  po_opts.progress = [&](int64_t done, int64_t total, int64_t scored) {
    if (tty) std::cerr << absl::StrFormat("\r[eval] window %d/%d, %d tokens scored", done, total, scored) << std::flush;
  };
  auto window = [&](const int32_t* t, int64_t n, float* logits) -> absl::Status {
    KvCache cache = (*engine)->NewCache(n);
    return (*engine)->Forward(t, n, cache, logits, LogitsMode::kAll);
  };
  auto result = ComputePerplexity(ids, config.vocab_size, window, po_opts);
  if (tty) std::cerr << "\n";
  if (!result.ok()) return Fail(spec.name, result.status());
  double tps = result->tokens_evaluated / std::max(result->seconds, 1e-9);
  if (vm["json"].as<bool>()) {
    nlohmann::json out = {{"perplexity", result->perplexity}, {"mean_nll", result->mean_nll},
                          {"tokens_scored", result->tokens_scored}, {"tokens_evaluated", result->tokens_evaluated},
                          {"windows", result->windows}, {"context", po_opts.context},
                          {"stride", po_opts.stride}, {"seconds", result->seconds},
                          {"tokens_per_second", tps}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << absl::StrFormat("perplexity %.4f  (mean NLL %.4f nats over %d tokens; context %d, stride %d, "
                                 "%d windows; %.1f tok/s)\n",
                                 result->perplexity, result->mean_nll, result->tokens_scored, po_opts.context,
                                 po_opts.stride, result->windows, tps);
  }
  return kExitOk;
}

}  // namespace retort::cli
