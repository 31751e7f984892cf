// Sampler tests: every filter against a plain reference written the way
// transformers' logits warpers are (full arrays, sort, softmax, cumsum),
// exact masks on hand-made distributions, empirical frequencies of seeded
// draws, reproducibility, and non-finite logits.
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace retort {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

using Dist = std::vector<std::pair<int32_t, double>>;

std::vector<double> Softmax(const std::vector<double>& s) {
  double m = -INFINITY;
  for (double v : s) m = std::max(m, v);
  std::vector<double> p(s.size());
  double z = 0;
  for (size_t i = 0; i < s.size(); ++i)
    z += (p[i] = std::isinf(s[i]) && s[i] < 0 ? 0.0 : std::exp(s[i] - m));
  for (double& v : p) v /= z;
  return p;
}

// The reference: transformers' RepetitionPenaltyLogitsProcessor, then the
// Temperature, TopK, TopP and MinP warpers, each on a full vector with removed
// tokens set to -inf. Finite logits only. Ties are ordered by id (the
// sampler's documented choice; torch.sort leaves it unspecified).
Dist Reference(std::vector<float> logits, const SamplerOptions& o,
               const std::vector<int32_t>& history) {
  const int64_t n = logits.size();
  std::vector<float> orig = logits;
  if (o.repetition_penalty != 1) {
    for (int32_t id : history) {
      if (id < 0 || id >= n) continue;
      float v = orig[id];
      logits[id] = v < 0 ? v * o.repetition_penalty : v / o.repetition_penalty;
    }
  }
  if (o.temperature == 0) {
    int32_t best = std::max_element(logits.begin(), logits.end()) - logits.begin();  // first max
    return {{best, 1.0}};
  }
  std::vector<double> s(n);
  double lmax = *std::max_element(logits.begin(), logits.end());
  // (l - max) / T: the same numbers as l / T up to rounding, without overflow.
  for (int64_t i = 0; i < n; ++i) s[i] = (logits[i] - lmax) / static_cast<double>(o.temperature);
  if (o.top_k > 0) {
    std::vector<double> sorted = s;
    std::sort(sorted.begin(), sorted.end(), std::greater<double>());
    double kth = sorted[std::min<int64_t>(o.top_k, n) - 1];
    for (double& v : s)
      if (v < kth) v = -INFINITY;
  }
  if (o.top_p < 1) {
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    // Ascending; among equal logits the higher id first (so the lower id is
    // "larger", matching the sampler's descending order by id).
    std::sort(idx.begin(), idx.end(),
              [&](int64_t a, int64_t b) { return s[a] != s[b] ? s[a] < s[b] : a > b; });
    std::vector<double> p = Softmax(s);
    double cum = 0;
    std::vector<bool> remove(n, false);
    for (int64_t j = 0; j < n; ++j) {
      cum += p[idx[j]];
      remove[idx[j]] = cum <= 1 - static_cast<double>(o.top_p);
    }
    remove[idx[n - 1]] = false;  // min_tokens_to_keep = 1
    for (int64_t i = 0; i < n; ++i)
      if (remove[i]) s[i] = -INFINITY;
  }
  if (o.min_p > 0) {
    std::vector<double> p = Softmax(s);
    double top = *std::max_element(p.begin(), p.end());
    for (int64_t i = 0; i < n; ++i)
      if (p[i] < o.min_p * top) s[i] = -INFINITY;
  }
  std::vector<double> p = Softmax(s);
  Dist out;
  for (int64_t i = 0; i < n; ++i)
    if (p[i] > 0 || !std::isinf(s[i])) out.emplace_back(static_cast<int32_t>(i), p[i]);
  return out;
}

std::vector<int32_t> Ids(const Dist& d) {
  std::vector<int32_t> ids;
  for (const auto& [id, p] : d) ids.push_back(id);
  return ids;
}

void ExpectSameDistribution(const Dist& got, const Dist& want, const std::string& what,
                            double tol = 1e-9) {
  ASSERT_EQ(Ids(got), Ids(want)) << what;
  double sum = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i].second, want[i].second, tol) << what << " token " << got[i].first;
    sum += got[i].second;
  }
  EXPECT_NEAR(sum, 1.0, 1e-12) << what;
}

Dist DistributionOf(const std::vector<float>& logits, SamplerOptions o,
                    const std::vector<int32_t>& history = {}) {
  Sampler s(o);
  return s.Distribution(logits.data(), logits.size(), history);
}

std::vector<float> LogProbs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double v : p) l.push_back(static_cast<float>(std::log(v)));
  return l;
}

// Standard normal numbers from our own generator (Box-Muller).
std::vector<float> RandomLogits(Xoshiro256& rng, int64_t n, double scale) {
  std::vector<float> l(n);
  for (int64_t i = 0; i < n; ++i) {
    double u1 = 1.0 - rng.Uniform(), u2 = rng.Uniform();
    l[i] = static_cast<float>(scale * std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2));
  }
  return l;
}

TEST(SamplerRngTest, SplitMix64AndUniform) {
  // splitmix64's published output for state 0 (Vigna's splitmix64.c).
  uint64_t state = 0;
  EXPECT_EQ(SplitMix64(state), 0xe220a8397b1dcdafull);
  EXPECT_EQ(state, 0x9e3779b97f4a7c15ull);
  Xoshiro256 a(7), b(7), c(8);
  double sum = 0;
  bool differs = false;
  for (int i = 0; i < 100000; ++i) {
    double u = a.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    EXPECT_EQ(b.Uniform(), u);
    differs |= c.Uniform() != u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
  EXPECT_TRUE(differs);
}

TEST(SamplerTest, GreedyPicksArgmaxLowestIdOnTies) {
  SamplerOptions o;
  o.temperature = 0;
  o.top_k = 1;  // ignored by greedy
  Sampler s(o);
  std::vector<float> l = {0.5f, 3.f, -1.f, 3.f, 2.f};
  EXPECT_EQ(s.Sample(l.data(), l.size(), {}), 1);
  std::vector<float> with_nan = {kNaN, 1.f, kNaN, 1.f};
  EXPECT_EQ(s.Sample(with_nan.data(), with_nan.size(), {}), 1);
  std::vector<float> neg = {-kInf, -5.f, -5.f};
  EXPECT_EQ(s.Sample(neg.data(), neg.size(), {}), 1);
  Dist d = s.Distribution(l.data(), l.size(), {});
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], (std::pair<int32_t, double>{1, 1.0}));
  // A negative temperature is clamped to greedy too.
  SamplerOptions neg_t;
  neg_t.temperature = -1;
  EXPECT_EQ(Sampler(neg_t).Sample(l.data(), l.size(), {}), 1);
}

TEST(SamplerTest, RepetitionPenaltyLikeTransformers) {
  SamplerOptions o;
  o.repetition_penalty = 2;
  std::vector<float> l = {2.f, -2.f, 1.f, 0.5f};
  // Repeats count once; ids outside the vocabulary are ignored.
  std::vector<int32_t> history = {0, 1, 1, 7, -1};
  Dist got = DistributionOf(l, o, history);
  std::vector<double> p = Softmax({1.0, -4.0, 1.0, 0.5});
  ExpectSameDistribution(got, {{0, p[0]}, {1, p[1]}, {2, p[2]}, {3, p[3]}}, "penalty");
  ExpectSameDistribution(got, Reference(l, o, history), "penalty vs reference");
  // Greedy sees the penalised logits: 2 -> 1 ties with token 2, lowest id wins.
  o.temperature = 0;
  Sampler g(o);
  EXPECT_EQ(g.Sample(l.data(), l.size(), {}), 0);
  std::vector<float> l2 = {2.f, -2.f, 1.5f, 0.5f};
  EXPECT_EQ(g.Sample(l2.data(), l2.size(), {0}), 2);
  // A penalty below 1 encourages repeats.
  o.repetition_penalty = 0.5f;
  Sampler enc(o);
  EXPECT_EQ(enc.Sample(l2.data(), l2.size(), {3}), 0);
  EXPECT_EQ(enc.Sample(std::vector<float>{1.f, 0.6f}.data(), 2, {1}), 1);
}

TEST(SamplerTest, TopKKeepsTiesAtTheKthValue) {
  std::vector<float> l = {1.f, 4.f, 3.f, 3.f, 0.f, 2.f};
  SamplerOptions o;
  o.top_k = 1;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1}));
  o.top_k = 2;  // the 2nd largest is 3, shared by tokens 2 and 3: both kept
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 2, 3}));
  o.top_k = 4;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 2, 3, 5}));
  o.top_k = 100;
  EXPECT_EQ(DistributionOf(l, o).size(), 6u);
  o.top_k = 4;
  Dist d = DistributionOf(l, o);
  std::vector<double> p = Softmax({4, 3, 3, 2});
  ExpectSameDistribution(d, {{1, p[0]}, {2, p[1]}, {3, p[2]}, {5, p[3]}}, "top-k renormalised");
}

TEST(SamplerTest, TopPKeepsSmallestNucleus) {
  // p = 0.05, 0.5, 0.15, 0.3 (tokens 0..3).
  std::vector<float> l = LogProbs({0.05, 0.5, 0.15, 0.3});
  SamplerOptions o;
  o.top_p = 0.4f;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1}));
  o.top_p = 0.7f;  // 0.5 < 0.7 so 0.3 is kept; 0.8 >= 0.7 so 0.15 is not
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 3}));
  o.top_p = 0.85f;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 2, 3}));
  o.top_p = 0.96f;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{0, 1, 2, 3}));
  o.top_p = 0.7f;
  Dist d = DistributionOf(l, o);
  // (1e-6: the logits are float logs of these probabilities.)
  ExpectSameDistribution(d, {{1, 0.5 / 0.8}, {3, 0.3 / 0.8}}, "top-p renormalised", 1e-6);
  ExpectSameDistribution(d, Reference(l, o, {}), "top-p vs reference");
}

TEST(SamplerTest, MinPRelativeToTopProbability) {
  std::vector<float> l = LogProbs({0.05, 0.5, 0.15, 0.3});
  SamplerOptions o;
  o.min_p = 0.2f;  // threshold 0.1
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 2, 3}));
  o.min_p = 0.35f;  // threshold 0.175
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 3}));
  o.min_p = 0.05f;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{0, 1, 2, 3}));
  o.min_p = 1.f;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1}));
}

TEST(SamplerTest, FiltersApplyInTransformersOrder) {
  std::vector<float> l = LogProbs({0.05, 0.5, 0.15, 0.3});
  SamplerOptions o;
  // Temperature before top-p: a hotter distribution needs a bigger nucleus.
  o.top_p = 0.7f;
  o.temperature = 3;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 2, 3}));
  o.temperature = 0.5f;  // p^2 renormalised: 0.685 < 0.7 keeps token 3 too
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 3}));
  o.temperature = 0.25f;  // p^4: 0.879 >= 0.7
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1}));
  // Top-p sees probabilities renormalised over the top-k survivors:
  // {0.5, 0.3} -> {0.625, 0.375}; 0.625 >= 0.6 keeps only token 1 (without
  // top-k first, 0.5 < 0.6 would keep token 3 as well).
  o.temperature = 1;
  o.top_p = 0.6f;
  o.top_k = 2;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1}));
  o.top_k = 0;
  EXPECT_EQ(Ids(DistributionOf(l, o)), (std::vector<int32_t>{1, 3}));
  // Repetition penalty before everything: penalising token 1 (log 0.5 < 0 is
  // multiplied: -1.39 < log 0.3) makes token 3 the top token for top-k = 1.
  SamplerOptions pen;
  pen.repetition_penalty = 2.f;
  pen.top_k = 1;
  EXPECT_EQ(Ids(DistributionOf(l, pen, {1})), (std::vector<int32_t>{3}));
}

TEST(SamplerTest, MatchesReferenceOnRandomCases) {
  Xoshiro256 rng(1234);
  const float temps[] = {0.3f, 0.7f, 1.f, 1.6f};
  const int top_ks[] = {0, 1, 3, 40, 100000};
  const float top_ps[] = {1.f, 0.95f, 0.6f, 0.1f};
  const float min_ps[] = {0.f, 0.02f, 0.3f};
  const float penalties[] = {1.f, 1.3f, 0.8f};
  for (int c = 0; c < 600; ++c) {
    const int64_t vocab = 1 + static_cast<int64_t>(rng.Uniform() * 1500);
    std::vector<float> l = RandomLogits(rng, vocab, 0.5 + 4 * rng.Uniform());
    // Ties: copy some logits onto other tokens.
    for (int t = 0; t < vocab / 10; ++t) l[rng.Next() % vocab] = l[rng.Next() % vocab];
    SamplerOptions o;
    o.temperature = temps[rng.Next() % 4];
    o.top_k = top_ks[rng.Next() % 5];
    o.top_p = top_ps[rng.Next() % 4];
    o.min_p = min_ps[rng.Next() % 3];
    o.repetition_penalty = penalties[rng.Next() % 3];
    std::vector<int32_t> history;
    for (int h = 0; h < 20; ++h) history.push_back(static_cast<int32_t>(rng.Next() % (vocab + 5)));
    std::string what = "case " + std::to_string(c) + " vocab " + std::to_string(vocab) + " T " +
                       std::to_string(o.temperature) + " k " + std::to_string(o.top_k) + " p " +
                       std::to_string(o.top_p) + " min_p " + std::to_string(o.min_p) + " pen " +
                       std::to_string(o.repetition_penalty);
    ExpectSameDistribution(DistributionOf(l, o, history), Reference(l, o, history), what);
    if (HasFailure()) return;
  }
}

TEST(SamplerTest, LargeVocabularyMatchesReference) {
  // Qwen2-sized rows. A peaked row (small nucleus) and a flat one, where the
  // nucleus spans most of the vocabulary and the partial sort has to grow.
  Xoshiro256 rng(99);
  for (double scale : {6.0, 0.05}) {
    std::vector<float> l = RandomLogits(rng, 151936, scale);
    for (SamplerOptions o :
         {SamplerOptions{0.6f, 20, 0.95f, 0.f, 1.f, 1}, SamplerOptions{0.6f, 0, 0.95f, 0.f, 1.f, 1},
          SamplerOptions{1.f, 0, 1.f, 0.05f, 1.1f, 1}, SamplerOptions{1.f, 0, 0.5f, 0.f, 1.f, 1}}) {
      std::vector<int32_t> history = {5, 17, 151935, 42};
      ExpectSameDistribution(DistributionOf(l, o, history), Reference(l, o, history),
                             "scale " + std::to_string(scale) + " k " + std::to_string(o.top_k) +
                                 " p " + std::to_string(o.top_p));
    }
  }
}

// Draw many tokens and compare the frequencies with the reference
// probabilities (5 standard deviations plus a little slack).
void ExpectFrequencies(const std::vector<float>& l, const SamplerOptions& o,
                       const std::vector<int32_t>& history) {
  const int kDraws = 200000;
  Sampler s(o);
  std::map<int32_t, int> counts;
  for (int i = 0; i < kDraws; ++i) counts[s.Sample(l.data(), l.size(), history)]++;
  Dist want = Reference(l, o, history);
  const std::vector<int32_t> want_ids = Ids(want);
  const std::set<int32_t> allowed(want_ids.begin(), want_ids.end());
  for (const auto& [id, n] : counts)
    EXPECT_TRUE(allowed.count(id)) << "drew filtered-out token " << id;
  for (const auto& [id, p] : want) {
    double f = static_cast<double>(counts[id]) / kDraws;
    EXPECT_NEAR(f, p, 5 * std::sqrt(p * (1 - p) / kDraws) + 1e-4) << "token " << id;
  }
}

TEST(SamplerTest, EmpiricalFrequenciesFollowTheFilteredDistribution) {
  std::vector<float> l = {1.f, 2.5f, 0.f, 2.f, -1.f, 1.5f, 0.5f};
  SamplerOptions o;
  o.seed = 11;
  ExpectFrequencies(l, o, {});
  o.temperature = 0.5f;
  ExpectFrequencies(l, o, {});
  o.temperature = 2.f;
  o.top_k = 4;
  ExpectFrequencies(l, o, {});
  o.top_k = 0;
  o.top_p = 0.8f;
  ExpectFrequencies(l, o, {});
  o.top_p = 1;
  o.min_p = 0.3f;
  o.repetition_penalty = 1.4f;
  ExpectFrequencies(l, o, {1, 4});
}

TEST(SamplerTest, SameSeedSameTokens) {
  Xoshiro256 rng(5);
  std::vector<float> l = RandomLogits(rng, 5000, 2.0);
  SamplerOptions o{0.8f, 50, 0.9f, 0.01f, 1.1f, 42};
  auto run = [&](Sampler& s) {
    std::vector<int32_t> out;
    for (int i = 0; i < 500; ++i) out.push_back(s.Sample(l.data(), l.size(), out));
    return out;
  };
  Sampler a(o), b(o);
  std::vector<int32_t> first = run(a);
  EXPECT_EQ(first, run(b));
  o.seed = 43;
  Sampler c(o);
  EXPECT_NE(first, run(c));
  a.Reseed(42);
  EXPECT_EQ(first, run(a));
  // Distribution() does not consume randomness.
  Sampler d(SamplerOptions{0.8f, 50, 0.9f, 0.01f, 1.1f, 42});
  d.Distribution(l.data(), l.size(), {});
  EXPECT_EQ(first, run(d));
}

TEST(SamplerTest, NonFiniteLogits) {
  SamplerOptions o;
  o.seed = 3;
  Sampler s(o);
  // NaN and -inf are never drawn.
  std::vector<float> l = {kNaN, 1.f, -kInf, 0.f, kNaN};
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.Sample(l.data(), l.size(), {}));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
  // Any +inf: uniform over the +inf tokens.
  std::vector<float> inf = {1.f, kInf, 3.f, kInf, kNaN};
  std::map<int32_t, int> counts;
  for (int i = 0; i < 20000; ++i) counts[s.Sample(inf.data(), inf.size(), {})]++;
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts[1] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts[3] / 20000.0, 0.5, 0.02);
  ExpectSameDistribution(s.Distribution(inf.data(), inf.size(), {}), {{1, 0.5}, {3, 0.5}}, "+inf");
  SamplerOptions g;
  g.temperature = 0;
  EXPECT_EQ(Sampler(g).Sample(inf.data(), inf.size(), {}), 1);
  // Nothing usable: -1 and an empty distribution.
  std::vector<float> none = {kNaN, -kInf, kNaN};
  EXPECT_EQ(s.Sample(none.data(), none.size(), {}), -1);
  EXPECT_EQ(Sampler(g).Sample(none.data(), none.size(), {}), -1);
  EXPECT_TRUE(s.Distribution(none.data(), none.size(), {}).empty());
  EXPECT_EQ(s.Sample(l.data(), 0, {}), -1);
  // A tiny temperature is greedy-like, not an overflow.
  SamplerOptions cold;
  cold.temperature = 1e-30f;
  std::vector<float> two = {1.f, 1.0001f};
  EXPECT_EQ(Sampler(cold).Sample(two.data(), two.size(), {}), 1);
}

TEST(SamplerTest, ValidateOptions) {
  EXPECT_TRUE(ValidateSamplerOptions({}).ok());
  EXPECT_TRUE(ValidateSamplerOptions({0.f, 0, 1.f, 0.f, 1.f, 0}).ok());
  auto bad = [](SamplerOptions o, const char* field) {
    absl::Status st = ValidateSamplerOptions(o);
    EXPECT_FALSE(st.ok()) << field;
    EXPECT_NE(std::string(st.message()).find(field), std::string::npos) << st.message();
  };
  bad({-0.5f, 0, 1.f, 0.f, 1.f, 0}, "temperature");
  bad({kNaN, 0, 1.f, 0.f, 1.f, 0}, "temperature");
  bad({1.f, -2, 1.f, 0.f, 1.f, 0}, "top_k");
  bad({1.f, 0, 0.f, 0.f, 1.f, 0}, "top_p");
  bad({1.f, 0, 1.5f, 0.f, 1.f, 0}, "top_p");
  bad({1.f, 0, 1.f, -0.1f, 1.f, 0}, "min_p");
  bad({1.f, 0, 1.f, 0.f, 0.f, 0}, "repetition_penalty");
}

}  // namespace
}  // namespace retort
