// Perplexity over a token stream with HF-style strided windows.
//
// Windows of `context` tokens start every `stride` tokens; each window scores
// only the targets no earlier window scored, so every token after the first is
// predicted exactly once, with up to context-stride tokens of extra left
// context (the method of the transformers perplexity guide). The model is
// seen only through a function that computes logits for a fresh window, so the
// same code serves every engine and device.
#ifndef RETORT_EVAL_PERPLEXITY_H_
#define RETORT_EVAL_PERPLEXITY_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"

namespace retort {

// Computes logits [n, vocab] (row-major, f32) for tokens[0..n) as one fresh
// sequence starting at position 0.
using WindowLogitsFn = std::function<absl::Status(const int32_t* tokens, int64_t n, float* logits)>;

struct PerplexityOptions {
  int64_t context = 1024;  // window length in tokens
  int64_t stride = 512;    // step between window starts; 0 < stride < context
  // Called after each window with (windows done, windows in all, tokens scored so far).
  std::function<void(int64_t, int64_t, int64_t)> progress;
};

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;           // nats per scored token
  int64_t tokens_scored = 0;     // n - 1 for n tokens
  int64_t tokens_evaluated = 0;  // tokens passed through the model (windows overlap)
  int64_t windows = 0;
  double seconds = 0;
};

// REQUIRES: tokens.size() >= 2.
absl::StatusOr<PerplexityResult> ComputePerplexity(const std::vector<int32_t>& tokens,
                                                   int64_t vocab, const WindowLogitsFn& logits_fn,
                                                   const PerplexityOptions& options);

// One window of a plan: tokens [begin, begin+length) run as a fresh sequence,
// targets at stream positions [first_target, begin+length) scored, each from
// the logits of the position before it.
struct ScoredWindow {
  int64_t begin = 0;
  int64_t length = 0;
  int64_t first_target = 0;
};

// The strided windows above for a stream of n tokens: a window of `context`
// tokens every `stride` tokens, the last one ending at the stream's end; each
// scores the targets from the first one no earlier window scored (and never
// the stream's first token). InvalidArgument for n < 2 ("<what> needs at
// least 2 tokens, ..."), context < 2 or a stride outside [1, context-1].
absl::StatusOr<std::vector<ScoredWindow>> PlanStridedWindows(int64_t n, int64_t context,
                                                             int64_t stride, const char* what);

// -log softmax(logits)[target], accumulated in f64.
double NegativeLogLikelihood(const float* logits, int64_t vocab, int32_t target);

}  // namespace retort

#endif  // RETORT_EVAL_PERPLEXITY_H_
