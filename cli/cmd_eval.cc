// retort eval MODEL --perplexity FILE
// retort eval MODEL --perplexity FILE --reference REF [--windows strided|llama.cpp]
// retort eval MODEL (--token-ids 1,2,3 | --text FILE) --dump-logits OUT.safetensors
#include <unistd.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "eval/eval_job.h"

namespace retort::cli {

int RunEval(const Args& args) {
  CommandSpec spec{
      .name = "eval",
      .usage =
          "MODEL (--perplexity FILE [--reference REF] | (--token-ids IDS | --text FILE) "
          "--dump-logits OUT) [options]",
      .summary =
          "Perplexity over a text with strided windows; with --reference, also the KL divergence "
          "from REF to MODEL and the statistics llama.cpp's perplexity tool prints (PPL ratio, KLD "
          "percentiles, Δp, same top p). Or the raw f32 logits of every position (safetensors: "
          "\"logits\" [n, vocab], \"token_ids\" [n]).",
      .default_model = true,
      .device = true};
  po::options_description opts("options");
  std::string model, ppl_file, text_file, token_ids, reference, windows;
  pipeline::OutputOption dump_out(pipeline::OutputOption::Kind::kFile);
  const std::string& dump = dump_out.path();
  int64_t context = 0, stride = 0, max_tokens = 0, ubatch = 0;
  int threads = 0;
  opts.add_options()("model", po::value(&model)->required(), "model directory or .gguf file")(
      "perplexity", po::value(&ppl_file), "text file to compute perplexity on")(
      "reference", po::value(&reference),
      "reference model (HF directory or .gguf, same vocabulary): KL divergence of MODEL from it")(
      "windows", po::value(&windows)->default_value("strided"),
      "with --reference: 'strided' (the windows of --perplexity) or 'llama.cpp' "
      "(llama-perplexity's "
      "chunks: non-overlapping --context windows, BOS first, second half scored)")(
      "context", po::value(&context),
      "window length in tokens (default: min(model context, 1024))")(
      "stride", po::value(&stride), "tokens between window starts (default: context / 2)")(
      "max-tokens", po::value(&max_tokens), "use only the first N tokens of the text")(
      "ubatch", po::value(&ubatch)->default_value(0),
      "with --reference: tokens per forward call (0 = whole window); <= 16 rounds activations of "
      "quantized weights to 8 bits as llama.cpp does")(
      "token-ids", po::value(&token_ids), "comma-separated token ids for --dump-logits")(
      "text", po::value(&text_file), "text file for --dump-logits");
  dump_out.AddOptions(opts, /*required=*/false,
                      "write the logits of every position to this .safetensors file",
                      "dump-logits");
  opts.add_options()("no-special", po::bool_switch(), "do not add the tokenizer's BOS")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)")(
      "json", po::bool_switch(), "print the result as JSON");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  bool want_ppl = !ppl_file.empty(), want_dump = !dump.empty();
  if (want_ppl == want_dump)
    return UsageError(spec.name, "give either --perplexity FILE or --dump-logits OUT");
  if (want_dump && (token_ids.empty() == text_file.empty())) {
    return UsageError(spec.name, "--dump-logits needs exactly one of --token-ids or --text");
  }
  if (!reference.empty() && !want_ppl)
    return UsageError(spec.name, "--reference needs --perplexity FILE");
  if (windows != "strided" && windows != "llama.cpp") {
    return UsageError(spec.name, "--windows must be strided or llama.cpp");
  }
  if (auto s = dump_out.Check(); !s.ok()) return Fail(spec.name, s);
  if (threads > 0) SetNumThreads(threads);

  EvalJobOptions job;
  job.model = model;
  job.perplexity_file = ppl_file;
  job.reference = reference;
  job.dump_logits = dump;
  job.text_file = text_file;
  job.add_special_tokens = !vm["no-special"].as<bool>();
  job.scheme = windows == "llama.cpp" ? WindowScheme::kLlamaCpp : WindowScheme::kStrided;
  job.context = context;
  job.stride = stride;
  job.max_tokens = max_tokens;
  job.ubatch = ubatch;
  if (!token_ids.empty()) {
    if (auto s = ParseIntList(token_ids, &job.token_ids); !s.ok()) return Fail(spec.name, s);
  }
  // Window progress only on a terminal: a log gets the result alone.
  auto r = EvaluateModel(job, ::isatty(2) ? StderrProgress() : NullProgress());
  if (!r.ok()) return Fail(spec.name, r.status());
  const bool json = vm["json"].as<bool>();
  if (r->kind == EvalJobResult::Kind::kLogits) {
    std::cout << absl::StrFormat("wrote %s: logits [%d, %d] (%.1f tok/s)\n", dump, r->tokens,
                                 r->vocab, r->tokens / std::max(r->seconds, 1e-9));
    return kExitOk;
  }
  if (r->kind == EvalJobResult::Kind::kKlDivergence) {
    const KlDivergenceResult& kl = r->kl;
    const double tps = 2 * kl.tokens_evaluated / std::max(kl.seconds, 1e-9);
    if (json) {
      nlohmann::json out = KlDivergenceJson(kl.stats);
      out["model"] = model;
      out["reference"] = reference;
      out["windows"] = kl.windows;
      out["window_scheme"] = windows;
      out["context"] = r->context;
      if (job.scheme == WindowScheme::kStrided) out["stride"] = r->stride;
      out["tokens_evaluated"] = kl.tokens_evaluated;
      out["seconds"] = kl.seconds;
      out["tokens_per_second"] = tps;
      std::cout << out.dump() << "\n";
    } else {
      std::cout << absl::StrFormat(
                       "%s (Q) vs reference %s (base): %d tokens compared; context %d, %s, %d "
                       "windows; %.1f tok/s over both models\n\n",
                       model, reference, kl.stats.count, r->context,
                       job.scheme == WindowScheme::kStrided ? absl::StrCat("stride ", r->stride)
                                                            : std::string("llama.cpp chunks"),
                       kl.windows, tps)
                << KlDivergenceTable(kl.stats);
    }
    return kExitOk;
  }
  const PerplexityResult& p = r->perplexity;
  const double tps = p.tokens_evaluated / std::max(p.seconds, 1e-9);
  if (json) {
    nlohmann::json out = {{"perplexity", p.perplexity},
                          {"mean_nll", p.mean_nll},
                          {"tokens_scored", p.tokens_scored},
                          {"tokens_evaluated", p.tokens_evaluated},
                          {"windows", p.windows},
                          {"context", r->context},
                          {"stride", r->stride},
                          {"seconds", p.seconds},
                          {"tokens_per_second", tps}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "perplexity %.4f  (mean NLL %.4f nats over %d tokens; context %d, stride %d, "
        "%d windows; %.1f tok/s)\n",
        p.perplexity, p.mean_nll, p.tokens_scored, r->context, r->stride, p.windows, tps);
  }
  return kExitOk;
}

}  // namespace retort::cli
