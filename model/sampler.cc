#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>
#include <string>

#include "absl/strings/str_cat.h"

namespace retort {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

SamplerOptions Clamped(SamplerOptions o) {
  if (!(o.temperature >= 0)) o.temperature = 0;  // NaN or negative: greedy
  if (o.top_k < 0) o.top_k = 0;
  o.top_p = std::isnan(o.top_p) ? 1.f : std::clamp(o.top_p, 0.f, 1.f);
  o.min_p = std::isnan(o.min_p) ? 0.f : std::clamp(o.min_p, 0.f, 1.f);
  if (!(o.repetition_penalty > 0) || std::isinf(o.repetition_penalty)) o.repetition_penalty = 1;
  return o;
}

}  // namespace

absl::Status ValidateSamplerOptions(const SamplerOptions& o) {
  if (!(o.temperature >= 0) || std::isinf(o.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler temperature must be finite and >= 0 (0 = greedy), got ", o.temperature));
  }
  if (o.top_k < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("sampler top_k must be >= 0 (0 = off), got ", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler top_p must be in (0, 1] (1 = off), got ", o.top_p));
  }
  if (!(o.min_p >= 0 && o.min_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler min_p must be in [0, 1] (0 = off), got ", o.min_p));
  }
  if (!(o.repetition_penalty > 0) || std::isinf(o.repetition_penalty)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler repetition_penalty must be finite and > 0 (1 = off), got ", o.repetition_penalty));
  }
  return absl::OkStatus();
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Xoshiro256::Xoshiro256(uint64_t seed) {
  uint64_t sm = seed;
  for (uint64_t& s : s_) s = SplitMix64(sm);
}

uint64_t Xoshiro256::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

uint64_t Xoshiro256::Below(uint64_t n) {
  // Reject the top partial block of 2^64 so every residue is equally likely.
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t limit = max - max % n;
  uint64_t x;
  do {
    x = Next();
  } while (x >= limit);
  return x % n;
}

Sampler::Sampler(SamplerOptions options)
    : options_(Clamped(options)), greedy_(options_.temperature == 0), rng_(options_.seed) {}

void Sampler::Reseed(uint64_t seed) {
  options_.seed = seed;
  rng_ = Xoshiro256(seed);
}

const float* Sampler::Penalize(const float* logits, int64_t vocab,
                               const std::vector<int32_t>& history) {
  const float penalty = options_.repetition_penalty;
  if (penalty == 1 || history.empty()) return logits;
  penalized_.assign(logits, logits + vocab);
  // Reading the original logit each time makes repeated ids count once.
  for (int32_t id : history) {
    if (id < 0 || id >= vocab) continue;
    const float v = logits[id];
    penalized_[id] = v > 0 ? v / penalty : v * penalty;
  }
  return penalized_.data();
}

void Sampler::SelectTop(const float* l, int64_t vocab, int64_t m) {
  candidates_.clear();
  // The m-th largest usable logit, by a size-m min-heap over one pass (most
  // logits are rejected by one comparison with the heap's top).
  std::priority_queue<float, std::vector<float>, std::greater<float>> heap;
  for (int64_t i = 0; i < vocab; ++i) {
    const float v = l[i];
    if (!(v > -kInf)) continue;  // NaN or -inf
    if (static_cast<int64_t>(heap.size()) < m) {
      heap.push(v);
    } else if (v > heap.top()) {
      heap.pop();
      heap.push(v);
    }
  }
  if (heap.empty()) return;
  const float kth = heap.top();
  for (int64_t i = 0; i < vocab; ++i)
    if (l[i] >= kth) candidates_.push_back({l[i], static_cast<int32_t>(i), 0.0});
  // A strict total order (ids are unique): the same result with every
  // standard library.
  std::sort(candidates_.begin(), candidates_.end(), [](const Candidate& a, const Candidate& b) {
    return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
  });
}

bool Sampler::Filter(const float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  candidates_.clear();
  if (vocab <= 0 || logits == nullptr) return false;
  const float* l = Penalize(logits, vocab, history);

  // One pass: the best token (lowest id on ties), the number of usable logits
  // and whether any is +inf. NaN and -inf are never candidates.
  int64_t n_valid = 0, n_pos_inf = 0, best = -1;
  float lmax = -kInf;
  for (int64_t i = 0; i < vocab; ++i) {
    const float v = l[i];
    if (!(v > -kInf)) continue;
    ++n_valid;
    if (v == kInf) ++n_pos_inf;
    if (v > lmax) {
      lmax = v;
      best = i;
    }
  }
  if (n_valid == 0) return false;
  if (greedy_) {
    candidates_.push_back({lmax, static_cast<int32_t>(best), 1.0});
    return true;
  }
  if (n_pos_inf > 0) {  // the limit of softmax: uniform over the +inf tokens
    for (int64_t i = 0; i < vocab; ++i)
      if (l[i] == kInf) candidates_.push_back({kInf, static_cast<int32_t>(i), 1.0});
    return true;
  }

  // Unnormalised probability after temperature, relative to the top token
  // (weight 1). Working from the logits keeps tiny temperatures finite.
  const double inv_t = 1.0 / options_.temperature;
  auto weight = [&](float v) { return std::exp((static_cast<double>(v) - lmax) * inv_t); };
  auto set_weights = [&] {
    double total = 0;
    for (Candidate& c : candidates_) total += (c.weight = weight(c.logit));
    return total;
  };

  const bool top_k = options_.top_k > 0 && options_.top_k < n_valid;
  if (options_.top_p < 1) {
    // Keep a token while the mass strictly before it (descending order) is
    // below top_p: transformers' "remove where the ascending cumulative
    // probability <= 1 - top_p". Without top-k the nucleus is found among the
    // best m tokens, m growing until it fits, so the whole vocabulary is
    // sorted only when the row is very flat.
    double total;
    int64_t m;
    if (top_k) {
      SelectTop(l, vocab, options_.top_k);
      total = set_weights();
      m = options_.top_k;
    } else {
      total = 0;
      for (int64_t i = 0; i < vocab; ++i)
        if (l[i] > -kInf) total += weight(l[i]);
      m = std::min<int64_t>(n_valid, 256);
    }
    const double target = static_cast<double>(options_.top_p) * total;
    for (;;) {
      if (!top_k) {
        SelectTop(l, vocab, m);
        set_weights();
      }
      double before = 0;
      size_t keep = 0;
      while (keep < candidates_.size() && (keep == 0 || before < target))
        before += candidates_[keep++].weight;
      // Done when the nucleus ends inside the candidates, or they are all
      // there is (top-k's survivors, or every usable token).
      if (keep < candidates_.size() || top_k ||
          static_cast<int64_t>(candidates_.size()) >= n_valid) {
        candidates_.resize(keep);
        break;
      }
      m = std::min(n_valid, m * 8);  // the nucleus reaches past the best m
    }
  } else if (top_k) {
    SelectTop(l, vocab, options_.top_k);
    set_weights();
  } else {
    // Every usable token (in id order); min-p can drop tokens right here.
    const double min_p = options_.min_p;
    candidates_.reserve(n_valid);
    for (int64_t i = 0; i < vocab; ++i) {
      if (!(l[i] > -kInf)) continue;
      const double w = weight(l[i]);
      if (w >= min_p) candidates_.push_back({l[i], static_cast<int32_t>(i), w});
    }
  }

  if (options_.min_p > 0) {
    const double min_p = options_.min_p;  // the top token's weight is 1
    std::erase_if(candidates_, [&](const Candidate& c) { return c.weight < min_p; });
  }
  return true;
}

int32_t Sampler::Sample(const float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  if (!Filter(logits, vocab, history)) return -1;
  if (greedy_) return candidates_[0].id;
  double total = 0;
  for (const Candidate& c : candidates_) total += c.weight;
  const double u = rng_.Uniform() * total;
  double cum = 0;
  for (const Candidate& c : candidates_) {
    cum += c.weight;
    if (u < cum) return c.id;
  }
  return candidates_.back().id;  // rounding left u at the very top
}

std::vector<std::pair<int32_t, double>> Sampler::Distribution(const float* logits, int64_t vocab,
                                                              const std::vector<int32_t>& history) {
  std::vector<std::pair<int32_t, double>> out;
  if (!Filter(logits, vocab, history)) return out;
  double total = 0;
  for (const Candidate& c : candidates_) total += c.weight;
  out.reserve(candidates_.size());
  for (const Candidate& c : candidates_) out.emplace_back(c.id, c.weight / total);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace retort
