#include "eval/eval_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "formats/safetensors.h"
#include "model/model_files.h"
#include "model/transformer.h"

namespace retort {
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

}  // namespace

// llama-perplexity --kl-divergence's summary, same labels and units.
std::string KlDivergenceTable(const KlDivergenceStats& s) {
  std::string out;
  auto line = [&out](const char* label, const Estimate& e) {
    out += absl::StrFormat("%-30s: %10.6f ± %10.6f\n", label, e.value, e.uncertainty);
  };
  out += "====== Perplexity statistics ======\n";
  line("Mean PPL(Q)", s.ppl);
  line("Mean PPL(base)", s.ppl_ref);
  out += absl::StrFormat("%-30s: %6.2f%%\n", "Cor(ln(PPL(Q)), ln(PPL(base)))",
                         100 * s.ln_ppl_correlation);
  line("Mean ln(PPL(Q)/PPL(base))", s.ln_ppl_ratio);
  line("Mean PPL(Q)/PPL(base)", s.ppl_ratio);
  line("Mean PPL(Q)-PPL(base)", s.ppl_diff);
  out += "\n====== KL divergence statistics ======\n";
  const Quantiles& k = s.kld_quantiles;
  out += absl::StrFormat("Mean    KLD: %10.6f ± %10.6f\n", s.kld.value, s.kld.uncertainty);
  const std::pair<const char*, double> kld_rows[] = {
      {"Maximum", k.max}, {"99.9%  ", k.p99_9},  {"99.0%  ", k.p99}, {"95.0%  ", k.p95},
      {"90.0%  ", k.p90}, {"Median ", k.median}, {"10.0%  ", k.p10}, {" 5.0%  ", k.p5},
      {" 1.0%  ", k.p1},  {" 0.1%  ", k.p0_1},   {"Minimum", k.min}};
  for (const auto& [label, v] : kld_rows) out += absl::StrFormat("%s KLD: %10.6f\n", label, v);
  out += "\n====== Token probability statistics ======\n";
  const Quantiles& d = s.p_diff_quantiles;
  out += absl::StrFormat("Mean    Δp: %6.3f ± %5.3f %%\n", 100 * s.p_diff.value,
                         100 * s.p_diff.uncertainty);
  const std::pair<const char*, double> dp_rows[] = {
      {"Maximum", d.max}, {"99.9%  ", d.p99_9}, {"99.0%  ", d.p99},    {"95.0%  ", d.p95},
      {"90.0%  ", d.p90}, {"75.0%  ", d.p75},   {"Median ", d.median}, {"25.0%  ", d.p25},
      {"10.0%  ", d.p10}, {" 5.0%  ", d.p5},    {" 1.0%  ", d.p1},     {" 0.1%  ", d.p0_1},
      {"Minimum", d.min}};
  for (const auto& [label, v] : dp_rows) out += absl::StrFormat("%s Δp: %6.3f%%\n", label, 100 * v);
  out += absl::StrFormat("RMS Δp    : %6.3f ± %5.3f %%\n", 100 * s.rms_p_diff.value,
                         100 * s.rms_p_diff.uncertainty);
  out += absl::StrFormat("Same top p: %6.3f ± %5.3f %%\n", 100 * s.same_top.value,
                         100 * s.same_top.uncertainty);
  return out;
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

absl::StatusOr<EvalJobResult> EvaluateModel(const EvalJobOptions& o, ProgressSink& progress) {
  const bool want_ppl = !o.perplexity_file.empty();
  std::vector<int32_t> ids = o.token_ids;
  int32_t bos = -1;  // what the tokenizer puts first, if anything (llama.cpp windows start with it)
  if (ids.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(o.model));
    const std::string& file = want_ppl ? o.perplexity_file : o.text_file;
    ASSIGN_OR_RETURN(std::string text, ReadTextFile(file, "text"));
    EncodeOptions enc;
    enc.add_special_tokens = o.add_special_tokens;
    ids = tokenizer->Encode(text, enc);
    if (enc.add_special_tokens && !tokenizer->prefix_ids().empty()) {
      bos = tokenizer->prefix_ids().front();
    }
    if (!o.reference.empty()) {
      // The same text must become the same tokens for both, or the
      // distributions compared are over different things.
      ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> ref_tokenizer, LoadTokenizer(o.reference));
      std::vector<int32_t> ref_ids = ref_tokenizer->Encode(text, enc);
      size_t i = 0;
      while (i < ids.size() && i < ref_ids.size() && ids[i] == ref_ids[i]) ++i;
      if (i < ids.size() || i < ref_ids.size()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "the tokenizers of %s and %s disagree on %s at token %d (%d vs %d tokens); KL "
            "divergence needs the same vocabulary",
            o.model, o.reference, file, i, ids.size(), ref_ids.size()));
      }
    }
  }
  if (o.max_tokens > 0 && static_cast<int64_t>(ids.size()) > o.max_tokens) {
    ids.resize(o.max_tokens);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> engine, LoadEngine(o.model));
  const ModelConfig& config = engine->config();
  EvalJobResult r;
  if (!want_ppl) {
    const auto t0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(DumpLogits(*engine, ids, o.dump_logits));
    r.kind = EvalJobResult::Kind::kLogits;
    r.tokens = static_cast<int64_t>(ids.size());
    r.vocab = config.vocab_size;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  if (!o.reference.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<Transformer> ref_engine, LoadEngine(o.reference));
    const ModelConfig& ref_config = ref_engine->config();
    KlDivergenceOptions kl;
    kl.context = o.context > 0 ? o.context
                               : std::min<int64_t>({config.max_position_embeddings,
                                                    ref_config.max_position_embeddings, 1024});
    kl.stride = o.stride > 0 ? o.stride : std::max<int64_t>(1, kl.context / 2);
    kl.scheme = o.scheme;
    kl.bos_id = bos;
    kl.progress = [&](int64_t done, int64_t total, int64_t scored) {
      progress.Status(
          absl::StrFormat("[eval] window %d/%d, %d tokens compared", done, total, scored));
    };
    auto result =
        ComputeKlDivergence(ids, config.vocab_size, EngineWindow(*engine, o.ubatch),
                            ref_config.vocab_size, EngineWindow(*ref_engine, o.ubatch), kl);
    progress.EndStatus();
    if (!result.ok()) {
      return absl::Status(
          result.status().code(),
          absl::StrCat(o.model, " vs reference ", o.reference, ": ", result.status().message()));
    }
    r.kind = EvalJobResult::Kind::kKlDivergence;
    r.kl = *std::move(result);
    r.context = kl.context;
    r.stride = kl.stride;
    return r;
  }
  PerplexityOptions p;
  p.context = o.context > 0 ? o.context : std::min<int64_t>(config.max_position_embeddings, 1024);
  p.stride = o.stride > 0 ? o.stride : std::max<int64_t>(1, p.context / 2);
  p.progress = [&](int64_t done, int64_t total, int64_t scored) {
    progress.Status(absl::StrFormat("[eval] window %d/%d, %d tokens scored", done, total, scored));
  };
  auto window = [&](const int32_t* t, int64_t n, float* logits) -> absl::Status {
    KvCache cache = engine->NewCache(n);
    return engine->Forward(t, n, cache, logits, LogitsMode::kAll);
  };
  auto result = ComputePerplexity(ids, config.vocab_size, window, p);
  progress.EndStatus();
  if (!result.ok()) return result.status();
  if (!std::isfinite(result->mean_nll) || !std::isfinite(result->perplexity)) {
    return absl::DataLossError(absl::StrFormat(
        "%s: perplexity on %s is %g, not a finite number (the model's weights or logits hold "
        "NaN or Inf; `retort inspect %s --check-values` lists the tensors)",
        o.model, o.perplexity_file, result->perplexity, o.model));
  }
  r.perplexity = *std::move(result);
  r.context = p.context;
  r.stride = p.stride;
  return r;
}

}  // namespace retort
