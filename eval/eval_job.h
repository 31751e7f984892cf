// The job behind `retort eval`: perplexity of MODEL over a text (strided
// windows), the KL divergence from a reference model with llama.cpp's
// statistics, or the raw logits of every position written to safetensors.
// Progress ("[eval] window i/n") goes to a ProgressSink.
#ifndef RETORT_EVAL_EVAL_JOB_H_
#define RETORT_EVAL_EVAL_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/progress.h"
#include "eval/kl_divergence.h"
#include "eval/perplexity.h"
#include "nlohmann/json.hpp"

namespace retort {

struct EvalJobOptions {
  std::string model;
  // What to do: exactly one of perplexity_file (with reference: the KL
  // divergence too) and dump_logits (of token_ids, or of text_file).
  std::string perplexity_file;
  std::string reference;
  std::string dump_logits;
  std::vector<int32_t> token_ids;
  std::string text_file;
  bool add_special_tokens = true;  // the tokenizer's BOS
  WindowScheme scheme = WindowScheme::kStrided;
  int64_t context = 0;     // 0: min(model context(s), 1024)
  int64_t stride = 0;      // 0: context / 2
  int64_t max_tokens = 0;  // 0: the whole text
  int64_t ubatch = 0;      // KL: tokens per forward call (0: the whole window)
};

struct EvalJobResult {
  enum class Kind { kPerplexity, kKlDivergence, kLogits } kind = Kind::kPerplexity;
  PerplexityResult perplexity;
  KlDivergenceResult kl;
  int64_t context = 0, stride = 0;
  int64_t tokens = 0, vocab = 0;  // kLogits: the dumped [tokens, vocab]
  double seconds = 0;
};

absl::StatusOr<EvalJobResult> EvaluateModel(const EvalJobOptions& options, ProgressSink& progress);

// llama-perplexity --kl-divergence's summary, same labels and units.
std::string KlDivergenceTable(const KlDivergenceStats& s);
nlohmann::json KlDivergenceJson(const KlDivergenceStats& s);

}  // namespace retort

#endif  // RETORT_EVAL_EVAL_JOB_H_
