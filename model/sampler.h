// Sampler: picks the next token from a row of logits.
//
// Greedy decoding (temperature 0) or seeded sampling with the filters of
// Hugging Face transformers' generate(), applied in its order:
//   1. repetition penalty over the tokens in `history` (a logit l becomes
//      l / penalty if l > 0, else l * penalty; repeats count once),
//   2. temperature (p ∝ exp(l / T)),
//   3. top-k (keep every token whose logit is >= the k-th largest: ties kept),
//   4. top-p (nucleus: in descending order keep a token while the mass of the
//      tokens before it is < top_p; the top token is always kept),
//   5. min-p (keep tokens whose probability is >= min_p * the top probability).
// Each filter works on the probabilities renormalised over what the previous
// ones kept, as transformers does. Ties in logits are ordered by token id.
//
// Non-finite logits (decided here, transformers would produce NaN or raise):
// NaN logits are ignored (never chosen), -inf tokens are never chosen, and if
// any logit is +inf the choice is made uniformly among the +inf tokens (greedy:
// the lowest such id). Sample() returns -1 when no token can be chosen
// (vocab <= 0, or every logit is NaN or -inf).
//
// Reproducibility: the random stream is xoshiro256** seeded through
// splitmix64, one 53-bit uniform per sampled token, so the same options, seed
// and logits give the same tokens on every platform and standard library
// (up to a one-ulp difference of the platform's exp() at a draw boundary).
// Cost: a few O(vocab) passes per call (one exp per token unless top-k is set)
// plus O(k log k) for the kept tokens; top-p without top-k sorts the best 256
// tokens, and more (x8 at a time) only when the nucleus is larger.
// Thread-safety: a Sampler is not thread-safe (it owns its random state and
// scratch buffers); use one per sequence.
#ifndef RETORT_MODEL_SAMPLER_H_
#define RETORT_MODEL_SAMPLER_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace retort {

struct SamplerOptions {
  float temperature = 1;         // 0 (or below): greedy
  int top_k = 0;                 // 0: off
  float top_p = 1;               // 1: off; in (0, 1]
  float min_p = 0;               // 0: off; in [0, 1]
  float repetition_penalty = 1;  // 1: off; > 0
  uint64_t seed = 0;
};

// OK when every option is in its documented range (what a command line should
// check before building a Sampler). The Sampler itself clamps bad values:
// NaN/negative temperature -> greedy, top_k < 0 -> off, top_p and min_p into
// [0, 1] (top_p 0 keeps only the top token), a penalty <= 0 or NaN -> off.
absl::Status ValidateSamplerOptions(const SamplerOptions& options);

// xoshiro256** (Blackman & Vigna) with its state filled by splitmix64 from a
// 64-bit seed. Integer-only, so the stream is the same everywhere.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n) without modulo bias (rejection sampling). REQUIRES: n > 0.
  uint64_t Below(uint64_t n);

 private:
  uint64_t s_[4];
};

// splitmix64: returns the next output and advances `state`.
uint64_t SplitMix64(uint64_t& state);

class Sampler {
 public:
  explicit Sampler(SamplerOptions options);

  // Picks a token id in [0, vocab), or -1 if none can be chosen (see above).
  // `history` holds the ids the repetition penalty applies to (the prompt and
  // the tokens generated so far, as transformers does); ids outside [0, vocab)
  // are ignored.
  int32_t Sample(const float* logits, int64_t vocab, const std::vector<int32_t>& history);

  // The distribution Sample() draws from: (token id, probability) for every
  // token the filters keep, probabilities summing to 1, in ascending id order.
  // Greedy gives the single chosen token with probability 1. Does not touch
  // the random state.
  std::vector<std::pair<int32_t, double>> Distribution(const float* logits, int64_t vocab,
                                                       const std::vector<int32_t>& history);

  const SamplerOptions& options() const { return options_; }
  // Restarts the random stream as if constructed with `seed`.
  void Reseed(uint64_t seed);

 private:
  struct Candidate {
    float logit;  // after the repetition penalty
    int32_t id;
    double weight;  // probability up to a common factor (the top token's is 1)
  };
  // Fills candidates_ with the tokens the filters keep; false if none.
  bool Filter(const float* logits, int64_t vocab, const std::vector<int32_t>& history);
  // Applies the repetition penalty; returns the logits to use (the input, or
  // penalized_ holding a modified copy).
  const float* Penalize(const float* logits, int64_t vocab, const std::vector<int32_t>& history);
  // Sets candidates_ to the tokens whose logit is >= the m-th largest usable
  // logit of `l` (ties kept, so possibly more than m), sorted by descending
  // logit, then ascending id. Weights are left 0.
  void SelectTop(const float* l, int64_t vocab, int64_t m);

  SamplerOptions options_;
  bool greedy_;
  Xoshiro256 rng_;
  std::vector<float> penalized_;
  std::vector<Candidate> candidates_;
};

}  // namespace retort

#endif  // RETORT_MODEL_SAMPLER_H_
