// retort eval MODEL --perplexity FILE
// retort eval MODEL --perplexity FILE --reference REF [--windows strided|llama.cpp]
// retort eval MODEL (--token-ids 1,2,3 | --text FILE) --dump-logits OUT.safetensors
#include <unistd.h>

#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "eval/kl_divergence.h"
#include "eval/perplexity.h"
#include "formats/safetensors.h"
#include "model/model_files.h"
#include "model/transformer.h"

namespace retort::cli {
namespace {

absl::Status DumpLogits(const Transformer& engine, const std::vector<int32_t>& ids,
                        const std::string& out) {
  const int64_t vocab = engine.config().vocab_size;
  if (static_cast<int64_t>(ids.size()) > engine.config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat("%d tokens exceed the model's context of %d",
                                                      ids.size(),
                                                      engine.config().max_position_embeddings));
  }
  Tensor logits = Tensor::Zeros(DType::kF32, {static_cast<int64_t>(ids.size()), vocab});
  KvCache cache = engine.NewCache(static_cast<int64_t>(ids.size()));
  RETURN_IF_ERROR(engine.Forward(ids.data(), ids.size(), cache, logits.mutable_data<float>(),
                                 LogitsMode::kAll));
  Tensor token_ids = Tensor::Zeros(DType::kI32, {static_cast<int64_t>(ids.size())});
  std::copy(ids.begin(), ids.end(), token_ids.mutable_data<int32_t>());
  return WriteSafetensors(out, {{"logits", logits}, {"token_ids", token_ids}});
}

// A fresh window through `engine`, `ubatch` tokens per Forward call (0: all
// at once). Small calls take the engine's GEMV path, which rounds activations
// to 8-bit blocks for quantized weights as llama.cpp does at every batch size;
// a whole-window call dequantizes weight blocks and runs an f32 GEMM.
WindowLogitsFn EngineWindow(const Transformer& engine, int64_t ubatch) {
  return [&engine, ubatch](const int32_t* t, int64_t n, float* logits) -> absl::Status {
    KvCache cache = engine.NewCache(n);
    const int64_t step = ubatch > 0 ? ubatch : n;
    const int64_t vocab = engine.config().vocab_size;
    for (int64_t i = 0; i < n; i += step) {
      RETURN_IF_ERROR(engine.Forward(t + i, std::min(step, n - i), cache, logits + i * vocab,
                                     LogitsMode::kAll));
    }
    return absl::OkStatus();
  };
}

nlohmann::json EstimateJson(const Estimate& e) {
  return {{"value", e.value}, {"uncertainty", e.uncertainty}};
}

nlohmann::json QuantilesJson(const Quantiles& q) {
  return {{"min", q.min}, {"p0.1", q.p0_1},     {"p1", q.p1},   {"p5", q.p5},   {"p10", q.p10},
          {"p25", q.p25}, {"median", q.median}, {"p75", q.p75}, {"p90", q.p90}, {"p95", q.p95},
          {"p99", q.p99}, {"p99.9", q.p99_9},   {"max", q.max}};
}

// llama-perplexity --kl-divergence's summary, same labels and units.
void PrintKlDivergenceTable(const KlDivergenceStats& s) {
  auto line = [](const char* label, const Estimate& e) {
    std::cout << absl::StrFormat("%-30s: %10.6f ± %10.6f\n", label, e.value, e.uncertainty);
  };
  std::cout << "====== Perplexity statistics ======\n";
  line("Mean PPL(Q)", s.ppl);
  line("Mean PPL(base)", s.ppl_ref);
  std::cout << absl::StrFormat("%-30s: %6.2f%%\n", "Cor(ln(PPL(Q)), ln(PPL(base)))",
                               100 * s.ln_ppl_correlation);
  line("Mean ln(PPL(Q)/PPL(base))", s.ln_ppl_ratio);
  line("Mean PPL(Q)/PPL(base)", s.ppl_ratio);
  line("Mean PPL(Q)-PPL(base)", s.ppl_diff);
  std::cout << "\n====== KL divergence statistics ======\n";
  const Quantiles& k = s.kld_quantiles;
  std::cout << absl::StrFormat("Mean    KLD: %10.6f ± %10.6f\n", s.kld.value, s.kld.uncertainty);
  const std::pair<const char*, double> kld_rows[] = {
      {"Maximum", k.max}, {"99.9%  ", k.p99_9},  {"99.0%  ", k.p99}, {"95.0%  ", k.p95},
      {"90.0%  ", k.p90}, {"Median ", k.median}, {"10.0%  ", k.p10}, {" 5.0%  ", k.p5},
      {" 1.0%  ", k.p1},  {" 0.1%  ", k.p0_1},   {"Minimum", k.min}};
  for (const auto& [label, v] : kld_rows)
    std::cout << absl::StrFormat("%s KLD: %10.6f\n", label, v);
  std::cout << "\n====== Token probability statistics ======\n";
  const Quantiles& d = s.p_diff_quantiles;
  std::cout << absl::StrFormat("Mean    Δp: %6.3f ± %5.3f %%\n", 100 * s.p_diff.value,
                               100 * s.p_diff.uncertainty);
  const std::pair<const char*, double> dp_rows[] = {
      {"Maximum", d.max}, {"99.9%  ", d.p99_9}, {"99.0%  ", d.p99},    {"95.0%  ", d.p95},
      {"90.0%  ", d.p90}, {"75.0%  ", d.p75},   {"Median ", d.median}, {"25.0%  ", d.p25},
      {"10.0%  ", d.p10}, {" 5.0%  ", d.p5},    {" 1.0%  ", d.p1},     {" 0.1%  ", d.p0_1},
      {"Minimum", d.min}};
  for (const auto& [label, v] : dp_rows)
    std::cout << absl::StrFormat("%s Δp: %6.3f%%\n", label, 100 * v);
  std::cout << absl::StrFormat("RMS Δp    : %6.3f ± %5.3f %%\n", 100 * s.rms_p_diff.value,
                               100 * s.rms_p_diff.uncertainty);
  std::cout << absl::StrFormat("Same top p: %6.3f ± %5.3f %%\n", 100 * s.same_top.value,
                               100 * s.same_top.uncertainty);
}

nlohmann::json KlDivergenceJson(const KlDivergenceStats& s) {
  return {{"tokens_scored", s.count},
          {"ppl", EstimateJson(s.ppl)},
          {"ppl_base", EstimateJson(s.ppl_ref)},
          {"ln_ppl_correlation", s.ln_ppl_correlation},
          {"ln_ppl_ratio", EstimateJson(s.ln_ppl_ratio)},
          {"ppl_ratio", EstimateJson(s.ppl_ratio)},
          {"ppl_diff", EstimateJson(s.ppl_diff)},
          {"kld", EstimateJson(s.kld)},
          {"kld_quantiles", QuantilesJson(s.kld_quantiles)},
          {"p_diff", EstimateJson(s.p_diff)},
          {"p_diff_quantiles", QuantilesJson(s.p_diff_quantiles)},
          {"rms_p_diff", EstimateJson(s.rms_p_diff)},
          {"same_top", EstimateJson(s.same_top)}};
}

}  // namespace

int RunEval(const Args& args) {
  CommandSpec spec{
      "eval",
      "MODEL (--perplexity FILE [--reference REF] | (--token-ids IDS | --text FILE) --dump-logits "
      "OUT) "
      "[options]",
      "Perplexity over a text with strided windows; with --reference, also the KL divergence "
      "from REF to MODEL and the statistics llama.cpp's perplexity tool prints (PPL ratio, KLD "
      "percentiles, Δp, same top p). Or the raw f32 logits of every position (safetensors: "
      "\"logits\" [n, vocab], \"token_ids\" [n])."};
  spec.default_model = true;
  spec.device = true;
  po::options_description opts("options");
  std::string model, ppl_file, text_file, token_ids, dump, reference, windows;
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
      "text", po::value(&text_file), "text file for --dump-logits")(
      "dump-logits", po::value(&dump),
      "write the logits of every position to this .safetensors file")(
      "no-special", po::bool_switch(), "do not add the tokenizer's BOS")(
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
  if (threads > 0) SetNumThreads(threads);

  std::vector<int32_t> ids;
  int32_t bos = -1;  // what the tokenizer puts first, if anything (llama.cpp windows start with it)
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
    if (enc.add_special_tokens && !(*tokenizer)->prefix_ids().empty())
      bos = (*tokenizer)->prefix_ids().front();
    if (!reference.empty()) {
      // The same text must become the same tokens for both, or the
      // distributions compared are over different things.
      auto ref_tokenizer = LoadTokenizer(reference);
      if (!ref_tokenizer.ok()) return Fail(spec.name, ref_tokenizer.status());
      std::vector<int32_t> ref_ids = (*ref_tokenizer)->Encode(*text, enc);
      size_t i = 0;
      while (i < ids.size() && i < ref_ids.size() && ids[i] == ref_ids[i]) ++i;
      if (i < ids.size() || i < ref_ids.size()) {
        return Fail(spec.name,
                    absl::InvalidArgumentError(absl::StrFormat(
                        "the tokenizers of %s and %s disagree on %s at token %d (%d vs %d tokens); "
                        "KL divergence needs the same vocabulary",
                        model, reference, file, i, ids.size(), ref_ids.size())));
      }
    }
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
  bool tty = ::isatty(2);
  if (!reference.empty()) {
    auto ref_engine = LoadEngine(reference);
    if (!ref_engine.ok()) return Fail(spec.name, ref_engine.status());
    const ModelConfig& ref_config = (*ref_engine)->config();
    KlDivergenceOptions kl_opts;
    kl_opts.context = context > 0 ? context
                                  : std::min<int64_t>({config.max_position_embeddings,
                                                       ref_config.max_position_embeddings, 1024});
    kl_opts.stride = stride > 0 ? stride : std::max<int64_t>(1, kl_opts.context / 2);
    kl_opts.scheme = windows == "llama.cpp" ? WindowScheme::kLlamaCpp : WindowScheme::kStrided;
    kl_opts.bos_id = bos;
    kl_opts.progress = [&](int64_t done, int64_t total, int64_t scored) {
      if (tty)
        std::cerr << absl::StrFormat("\r[eval] window %d/%d, %d tokens compared", done, total,
                                     scored)
                  << std::flush;
    };
    auto result =
        ComputeKlDivergence(ids, config.vocab_size, EngineWindow(**engine, ubatch),
                            ref_config.vocab_size, EngineWindow(**ref_engine, ubatch), kl_opts);
    if (tty) std::cerr << "\n";
    if (!result.ok()) {
      return Fail(spec.name, absl::Status(result.status().code(),
                                          absl::StrCat(model, " vs reference ", reference, ": ",
                                                       std::string(result.status().message()))));
    }
    const double tps = 2 * result->tokens_evaluated / std::max(result->seconds, 1e-9);
    if (vm["json"].as<bool>()) {
      nlohmann::json out = KlDivergenceJson(result->stats);
      out["model"] = model;
      out["reference"] = reference;
      out["windows"] = result->windows;
      out["window_scheme"] = windows;
      out["context"] = kl_opts.context;
      if (kl_opts.scheme == WindowScheme::kStrided) out["stride"] = kl_opts.stride;
      out["tokens_evaluated"] = result->tokens_evaluated;
      out["seconds"] = result->seconds;
      out["tokens_per_second"] = tps;
      std::cout << out.dump() << "\n";
    } else {
      std::cout << absl::StrFormat(
          "%s (Q) vs reference %s (base): %d tokens compared; context %d, %s, %d windows; "
          "%.1f tok/s over both models\n\n",
          model, reference, result->stats.count, kl_opts.context,
          kl_opts.scheme == WindowScheme::kStrided ? absl::StrCat("stride ", kl_opts.stride)
                                                   : std::string("llama.cpp chunks"),
          result->windows, tps);
      PrintKlDivergenceTable(result->stats);
    }
    return kExitOk;
  }
  PerplexityOptions po_opts;
  po_opts.context = context > 0 ? context : std::min<int64_t>(config.max_position_embeddings, 1024);
  po_opts.stride = stride > 0 ? stride : std::max<int64_t>(1, po_opts.context / 2);
  po_opts.progress = [&](int64_t done, int64_t total, int64_t scored) {
    if (tty)
      std::cerr << absl::StrFormat("\r[eval] window %d/%d, %d tokens scored", done, total, scored)
                << std::flush;
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
    nlohmann::json out = {{"perplexity", result->perplexity},
                          {"mean_nll", result->mean_nll},
                          {"tokens_scored", result->tokens_scored},
                          {"tokens_evaluated", result->tokens_evaluated},
                          {"windows", result->windows},
                          {"context", po_opts.context},
                          {"stride", po_opts.stride},
                          {"seconds", result->seconds},
                          {"tokens_per_second", tps}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "perplexity %.4f  (mean NLL %.4f nats over %d tokens; context %d, stride %d, "
        "%d windows; %.1f tok/s)\n",
        result->perplexity, result->mean_nll, result->tokens_scored, po_opts.context,
        po_opts.stride, result->windows, tps);
  }
  return kExitOk;
}

}  // namespace retort::cli
