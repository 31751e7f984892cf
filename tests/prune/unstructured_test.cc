// prune/unstructured: masks of magnitude and Wanda against plain f64 loops,
// SparseGPT against a PyTorch f64 reference (tests/reference/prune/
// make_fixtures.py), the reconstruction-error order SparseGPT < Wanda <
// magnitude on correlated inputs, N:M patterns, CountSparsity, bad input.
#include "prune/unstructured.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/convert.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace retort::prune {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomMatrix(int64_t rows, int64_t cols, uint32_t seed, bool ties = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(rows * cols);
  for (float& v : w) {
    v = normal(rng);
    if (ties) v = std::round(v * 2.0f) / 2.0f;  // many equal magnitudes
  }
  return w;
}

// Reference: the k entries of smallest score, ties to the lower index.
std::vector<bool> SmallestMask(const std::vector<double>& score, int64_t k) {
  std::vector<int64_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return score[a] < score[b]; });
  std::vector<bool> mask(score.size(), false);
  for (int64_t i = 0; i < k; ++i) mask[idx[i]] = true;
  return mask;
}

// Reference pruning: per group of the given columns in each row (or all), f64 scores.
std::vector<float> ReferencePrune(const std::vector<float>& w, int64_t rows, int64_t cols,
                                  const std::vector<double>& col_scale, const SparsityPattern& p,
                                  bool whole_matrix) {
  std::vector<float> out = w;
  auto score = [&](int64_t r, int64_t c) {
    return std::fabs(static_cast<double>(w[r * cols + c])) * col_scale[c];
  };
  if (p.is_nm()) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < cols; g += p.m) {
        std::vector<double> s;
        for (int j = 0; j < p.m; ++j) s.push_back(score(r, g + j));
        std::vector<bool> m = SmallestMask(s, p.m - p.n);
        for (int j = 0; j < p.m; ++j) {
          if (m[j]) out[r * cols + g + j] = 0.0f;
        }
      }
    }
  } else if (whole_matrix) {
    std::vector<double> s;
    for (int64_t i = 0; i < rows * cols; ++i) s.push_back(score(i / cols, i % cols));
    std::vector<bool> m =
        SmallestMask(s, static_cast<int64_t>(std::floor(p.sparsity * rows * cols + 1e-9)));
    for (int64_t i = 0; i < rows * cols; ++i) {
      if (m[i]) out[i] = 0.0f;
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double> s;
      for (int64_t c = 0; c < cols; ++c) s.push_back(score(r, c));
      std::vector<bool> m =
          SmallestMask(s, static_cast<int64_t>(std::floor(p.sparsity * cols + 1e-9)));
      for (int64_t c = 0; c < cols; ++c) {
        if (m[c]) out[r * cols + c] = 0.0f;
      }
    }
  }
  return out;
}

SparsityPattern Pattern(const std::string& text) {
  auto p = ParseSparsityPattern(text);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : SparsityPattern{};
}

int64_t Zeros(const std::vector<float>& w) { return std::count(w.begin(), w.end(), 0.0f); }

TEST(SparsityPatternTest, Parses) {
  EXPECT_DOUBLE_EQ(Pattern("0.5").sparsity, 0.5);
  EXPECT_FALSE(Pattern("0.5").is_nm());
  EXPECT_DOUBLE_EQ(Pattern("50%").sparsity, 0.5);
  EXPECT_DOUBLE_EQ(Pattern("12.5%").sparsity, 0.125);
  const SparsityPattern p24 = Pattern("2:4");
  EXPECT_EQ(p24.n, 2);
  EXPECT_EQ(p24.m, 4);
  EXPECT_DOUBLE_EQ(p24.sparsity, 0.5);
  const SparsityPattern p48 = Pattern("4:8");
  EXPECT_EQ(p48.n, 4);
  EXPECT_EQ(p48.m, 8);
  EXPECT_DOUBLE_EQ(Pattern("1:4").sparsity, 0.75);
  EXPECT_EQ(p24.ToString(), "2:4");
  EXPECT_EQ(Pattern("0.25").ToString(), "0.25");
}

TEST(SparsityPatternTest, RejectsBadText) {
  for (const char* bad :
       {"0",   "1",   "1.5", "-0.1", "0%",  "100%", "150%", "abc",   "",     "0.5x",
        "nan", "inf", "4:4", "5:4",  "0:4", "2:",   ":4",   "2:4:8", "-2:4", "2:0"}) {
    auto p = ParseSparsityPattern(bad);
    EXPECT_FALSE(p.ok()) << bad;
    if (!p.ok()) {
      EXPECT_THAT(std::string(p.status().message()), HasSubstr(bad));
    }
  }
  EXPECT_THAT(std::string(ParseSparsityPattern("1.5").status().message()),
              HasSubstr("outside (0, 1)"));
  EXPECT_THAT(std::string(ParseSparsityPattern("4:4").status().message()), HasSubstr("N < M"));
}

TEST(SparsityPatternTest, ValidateNamesTheTensor) {
  absl::Status s = ValidateSparsityPattern(Pattern("2:4"), 30, "layers.0.mlp.up_proj");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("layers.0.mlp.up_proj"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not divide the 30 input columns"));
  EXPECT_TRUE(ValidateSparsityPattern(Pattern("2:4"), 32, "x").ok());
  SparsityPattern bad;
  bad.sparsity = 1.0;
  EXPECT_THAT(std::string(ValidateSparsityPattern(bad, 8, "t.weight").message()),
              HasSubstr("t.weight: sparsity 1 is outside (0, 1)"));
  bad = SparsityPattern{0.5, 4, 4};
  EXPECT_THAT(std::string(ValidateSparsityPattern(bad, 8, "t.weight").message()),
              HasSubstr("t.weight: N:M pattern 4:4"));
}

TEST(MagnitudeTest, WholeMatrixMatchesReference) {
  for (bool ties : {false, true}) {
    const int64_t rows = 37, cols = 50;
    const std::vector<float> w0 = RandomMatrix(rows, cols, 1, ties);
    for (const char* text : {"0.5", "0.37", "0.9", "10%"}) {
      const SparsityPattern p = Pattern(text);
      std::vector<float> w = w0;
      ASSERT_TRUE(PruneMagnitude(w.data(), rows, cols, p, "w").ok());
      const std::vector<float> ref =
          ReferencePrune(w0, rows, cols, std::vector<double>(cols, 1.0), p, /*whole_matrix=*/true);
      EXPECT_EQ(w, ref) << text << " ties " << ties;
      EXPECT_EQ(
          Zeros(w),
          std::max(Zeros(w0), static_cast<int64_t>(std::floor(p.sparsity * rows * cols + 1e-9))))
          << text;
    }
  }
}

TEST(MagnitudeTest, NmMatchesReference) {
  const int64_t rows = 9, cols = 48;
  for (bool ties : {false, true}) {
    const std::vector<float> w0 = RandomMatrix(rows, cols, 2, ties);
    for (const char* text : {"2:4", "4:8", "1:4", "3:8"}) {
      const SparsityPattern p = Pattern(text);
      std::vector<float> w = w0;
      ASSERT_TRUE(PruneMagnitude(w.data(), rows, cols, p, "w").ok());
      EXPECT_EQ(w, ReferencePrune(w0, rows, cols, std::vector<double>(cols, 1.0), p, false))
          << text;
    }
  }
}

TEST(WandaTest, PerRowAndNmMatchReference) {
  const int64_t rows = 23, cols = 64;
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0.0, 5.0);
  std::vector<double> sq(cols), scale(cols);
  for (int64_t j = 0; j < cols; ++j) {
    sq[j] = std::exp(u(rng)) - 1.0;  // uneven input norms, some near 0
    scale[j] = std::sqrt(sq[j]);
  }
  sq[7] = 0.0;
  scale[7] = 0.0;
  for (bool ties : {false, true}) {
    const std::vector<float> w0 = RandomMatrix(rows, cols, 4, ties);
    for (const char* text : {"0.5", "0.3", "0.75", "2:4", "4:8"}) {
      const SparsityPattern p = Pattern(text);
      std::vector<float> w = w0;
      ASSERT_TRUE(PruneWanda(w.data(), rows, cols, sq.data(), p, "w").ok());
      EXPECT_EQ(w, ReferencePrune(w0, rows, cols, scale, p, false)) << text << " ties " << ties;
      if (!p.is_nm()) {
        // Exactly floor(s * cols) zeros in each row (a per-output comparison group).
        for (int64_t r = 0; r < rows; ++r) {
          int64_t z = 0;
          for (int64_t c = 0; c < cols; ++c) z += w[r * cols + c] == 0.0f;
          const int64_t k = static_cast<int64_t>(std::floor(p.sparsity * cols + 1e-9));
          if (ties) {
            EXPECT_GE(z, k);  // rounded weights: some were zero already
          } else {
            EXPECT_EQ(z, k);
          }
        }
      }
    }
  }
}

TEST(UnstructuredTest, BadInput) {
  std::vector<float> w = RandomMatrix(4, 6, 5);
  std::vector<double> sq(6, 1.0);
  absl::Status s = PruneMagnitude(w.data(), 4, 6, Pattern("2:4"), "model.layers.1.mlp.down_proj");
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.layers.1.mlp.down_proj"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("M (4) does not divide the 6 input columns"));
  s = PruneWanda(w.data(), 4, 6, sq.data(), Pattern("4:8"), "q_proj");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("q_proj: N:M pattern 4:8: M (8) does not divide"));
  SparsityPattern zero;
  zero.sparsity = 0.0;
  EXPECT_FALSE(PruneMagnitude(w.data(), 4, 6, zero, "w").ok());
  zero.sparsity = -1;
  EXPECT_FALSE(PruneWanda(w.data(), 4, 6, sq.data(), zero, "w").ok());

  std::vector<float> nan = w;
  nan[9] = std::nanf("");
  s = PruneMagnitude(nan.data(), 4, 6, Pattern("0.5"), "k_proj");
  EXPECT_THAT(std::string(s.message()), HasSubstr("k_proj: weight [1, 3] is not finite"));
  sq[2] = -1.0;
  s = PruneWanda(w.data(), 4, 6, sq.data(), Pattern("0.5"), "v_proj");
  EXPECT_THAT(std::string(s.message()), HasSubstr("v_proj: input squared norm of column 2"));
  EXPECT_THAT(std::string(PruneMagnitude(w.data(), 0, 6, Pattern("0.5"), "e").message()),
              HasSubstr("empty"));
  // Nothing was changed by the failed calls.
  EXPECT_EQ(w, RandomMatrix(4, 6, 5));
}

// ---------------------------------------------------------------------------
// SparseGPT.

struct SparseGptFixture {
  int64_t rows = 0, cols = 0, n = 0;
  std::vector<float> w, x;
  std::vector<double> h;
  std::unique_ptr<SafetensorsReader> reader;
};

SparseGptFixture LoadFixture() {
  SparseGptFixture f;
  auto r = SafetensorsReader::Open("tests/reference/prune/sparsegpt.safetensors");
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return f;
  f.reader = std::move(*r);
  Tensor w = *f.reader->Get("W"), x = *f.reader->Get("X"), h = *f.reader->Get("H");
  f.rows = w.dim(0);
  f.cols = w.dim(1);
  f.n = x.dim(0);
  f.w.assign(w.data<float>(), w.data<float>() + w.numel());
  f.x.assign(x.data<float>(), x.data<float>() + x.numel());
  f.h.assign(h.data<double>(), h.data<double>() + h.numel());
  return f;
}

TEST(SparseGptTest, MatchesTorchReference) {
  SparseGptFixture f = LoadFixture();
  ASSERT_GT(f.rows, 0);
  struct Case {
    const char* name;
    const char* pattern;
    int64_t block;
    double damp;
  };
  for (const Case& c : {Case{"u50_b8", "0.5", 8, 0.01}, Case{"u30_b12", "0.3", 12, 0.01},
                        Case{"u60_b128", "0.6", 128, 0.05}, Case{"nm24_b8", "2:4", 8, 0.01},
                        Case{"nm48_b128", "4:8", 128, 0.01}, Case{"nm24_b6", "2:4", 6, 0.01}}) {
    Tensor expected = *f.reader->Get(std::string("out_") + c.name);
    std::vector<float> w = f.w;
    SparseGptOptions opt;
    opt.block_size = c.block;
    opt.dampening = c.damp;
    absl::Status s =
        PruneSparseGpt(w.data(), f.rows, f.cols, f.h.data(), Pattern(c.pattern), opt, c.name);
    ASSERT_TRUE(s.ok()) << s;
    const float* e = expected.data<float>();
    int64_t zeros = 0;
    double max_diff = 0;
    for (int64_t i = 0; i < f.rows * f.cols; ++i) {
      EXPECT_EQ(w[i] == 0.0f, e[i] == 0.0f) << c.name << " mask differs at " << i;
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(w[i] - e[i])));
      zeros += w[i] == 0.0f;
      // The dead input (column 5 of X is all zero) loses its weights.
      if (i % f.cols == 5) {
        EXPECT_EQ(w[i], 0.0f);
      }
    }
    EXPECT_LT(max_diff, 1e-4) << c.name;
    const SparsityPattern p = Pattern(c.pattern);
    if (p.is_nm()) {
      for (int64_t r = 0; r < f.rows; ++r) {
        for (int64_t g = 0; g < f.cols; g += p.m) {
          int nz = 0;
          for (int j = 0; j < p.m; ++j) nz += w[r * f.cols + g + j] != 0.0f;
          EXPECT_LE(nz, p.n) << c.name;
        }
      }
    } else {
      EXPECT_GE(zeros, static_cast<int64_t>(std::floor(p.sparsity * f.rows * f.cols) - f.cols / 8))
          << c.name;
    }
  }
}

// ||(W - W') X^T||_F^2: the layer-output error the methods minimise.
double OutputError(const std::vector<float>& w0, const std::vector<float>& w,
                   const std::vector<float>& x, int64_t rows, int64_t cols, int64_t n) {
  double err = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double d = 0;
      for (int64_t c = 0; c < cols; ++c)
        d += (static_cast<double>(w0[r * cols + c]) - w[r * cols + c]) * x[t * cols + c];
      err += d * d;
    }
  }
  return err;
}

struct Calibration {
  std::vector<float> x;
  std::vector<double> h, sq;
};

Calibration MakeCalibration(const std::vector<float>& x, int64_t n, int64_t cols) {
  Calibration c;
  c.x = x;
  c.h.assign(cols * cols, 0.0);
  c.sq.assign(cols, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < cols; ++i) {
      c.sq[i] += static_cast<double>(x[t * cols + i]) * x[t * cols + i];
      for (int64_t j = 0; j < cols; ++j)
        c.h[i * cols + j] += 2.0 / n * x[t * cols + i] * x[t * cols + j];
    }
  }
  return c;
}

// Correlated inputs with uneven column scales (as LLM activations have).
std::vector<float> CorrelatedInputs(int64_t n, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t k = cols / 4;
  std::vector<float> z(n * k), a(k * cols), scale(cols), x(n * cols);
  for (float& v : z) v = normal(rng);
  for (float& v : a) v = normal(rng);
  for (float& v : scale) v = std::exp(normal(rng));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      double s = 0;
      for (int64_t j = 0; j < k; ++j) s += z[t * k + j] * a[j * cols + c];
      x[t * cols + c] = static_cast<float>((s + 0.3 * normal(rng)) * scale[c]);
    }
  }
  return x;
}

TEST(SparseGptTest, ErrorOrderSparseGptWandaMagnitude) {
  const int64_t rows = 48, cols = 96, n = 384;
  const std::vector<float> w0 = RandomMatrix(rows, cols, 9);
  const Calibration cal = MakeCalibration(CorrelatedInputs(n, cols, 10), n, cols);
  for (const char* text : {"0.5", "2:4", "4:8", "0.7"}) {
    const SparsityPattern p = Pattern(text);
    std::vector<float> mag = w0, wanda = w0, sgpt = w0;
    ASSERT_TRUE(PruneMagnitude(mag.data(), rows, cols, p, "m").ok());
    ASSERT_TRUE(PruneWanda(wanda.data(), rows, cols, cal.sq.data(), p, "w").ok());
    SparseGptOptions opt;
    opt.block_size = 32;
    ASSERT_TRUE(PruneSparseGpt(sgpt.data(), rows, cols, cal.h.data(), p, opt, "s").ok());
    const double e_mag = OutputError(w0, mag, cal.x, rows, cols, n);
    const double e_wanda = OutputError(w0, wanda, cal.x, rows, cols, n);
    const double e_sgpt = OutputError(w0, sgpt, cal.x, rows, cols, n);
    EXPECT_LT(e_sgpt, e_wanda) << text;
    EXPECT_LT(e_wanda, e_mag) << text;
    for (const auto* w : {&mag, &wanda, &sgpt}) {
      Tensor t = Tensor::View(DType::kF32, {rows, cols}, w->data(), nullptr);
      auto st = CountSparsity(t);
      ASSERT_TRUE(st.ok());
      if (p.is_nm()) {
        EXPECT_EQ(p.m == 4 ? st->nm_2_4 : st->nm_4_8, true) << text;
      }
      EXPECT_NEAR(st->fraction, p.sparsity, 0.02) << text;
    }
  }
}

TEST(SparseGptTest, BadInput) {
  const int64_t rows = 4, cols = 8;
  std::vector<float> w = RandomMatrix(rows, cols, 12);
  const std::vector<float> w0 = w;
  std::vector<double> h(cols * cols, 0.0);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0;
  SparseGptOptions opt;
  EXPECT_THAT(std::string(PruneSparseGpt(w.data(), rows, cols, h.data(), Pattern("2:4"),
                                         SparseGptOptions{0.01, 0}, "o_proj")
                              .message()),
              HasSubstr("o_proj: SparseGPT block size must be >= 1"));
  EXPECT_THAT(std::string(PruneSparseGpt(w.data(), rows, cols, h.data(), Pattern("2:4"),
                                         SparseGptOptions{-0.1, 128}, "o_proj")
                              .message()),
              HasSubstr("dampening"));
  EXPECT_THAT(
      std::string(PruneSparseGpt(w.data(), rows, cols, h.data(), Pattern("2:3"), opt, "gate_proj")
                      .message()),
      HasSubstr("gate_proj: N:M pattern 2:3: M (3) does not divide the 8 input columns"));
  std::vector<double> bad = h;
  bad[3] = std::nan("");
  EXPECT_THAT(
      std::string(PruneSparseGpt(w.data(), rows, cols, bad.data(), Pattern("0.5"), opt, "up_proj")
                      .message()),
      HasSubstr("up_proj: Hessian entry [0, 3] is not finite"));
  // Indefinite: a negative diagonal that dampening cannot fix.
  bad = h;
  bad[0] = -50.0;
  absl::Status s =
      PruneSparseGpt(w.data(), rows, cols, bad.data(), Pattern("0.5"), opt, "down_proj");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("down_proj: Hessian (8x8) is not positive definite"));
  EXPECT_EQ(w, w0);
}

TEST(CountSparsityTest, CountsAndPatterns) {
  // 2 rows x 8: row 0 is 2:4 and 4:8; row 1 is 4:8 but not 2:4.
  const std::vector<float> v = {1, 0, 2, 0, 0, 3, -0.0f, 4,  //
                                1, 2, 3, 0, 0, 0, 0,     5};
  Tensor t = Tensor::View(DType::kF32, {2, 8}, v.data(), nullptr);
  auto st = CountSparsity(t);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->elements, 16);
  EXPECT_EQ(st->zeros, 8);
  EXPECT_DOUBLE_EQ(st->fraction, 0.5);
  EXPECT_FALSE(st->nm_2_4);
  EXPECT_TRUE(st->nm_4_8);
  // Same values in bf16, first row only.
  Tensor b = t.Rows(0, 1).To(DType::kBF16);
  st = CountSparsity(b);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->zeros, 4);
  EXPECT_TRUE(st->nm_2_4);
  EXPECT_TRUE(st->nm_4_8);
  // Columns not a multiple of 4: neither pattern can hold.
  Tensor odd = Tensor::View(DType::kF32, {1, 6}, v.data(), nullptr);
  st = CountSparsity(odd);
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->nm_2_4);
  EXPECT_FALSE(st->nm_4_8);
  EXPECT_EQ(st->zeros, 3);
  // Many rows (crosses the internal chunking).
  std::vector<float> big(3000 * 40, 1.0f);
  for (size_t i = 0; i < big.size(); i += 4) big[i] = big[i + 1] = 0.0f;
  st = CountSparsity(Tensor::View(DType::kF32, {3000, 40}, big.data(), nullptr));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->zeros, 3000 * 20);
  EXPECT_TRUE(st->nm_2_4);
  EXPECT_TRUE(st->nm_4_8);
  // Empty and rank-0 tensors.
  st = CountSparsity(Tensor());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->elements, 0);
}

TEST(CountSparsityTest, CountsWholeBlocksAndRejectsPartialOnes) {
  Tensor q = Tensor::Zeros(DType::kQ8_0, {2, 64});
  auto st = CountSparsity(q);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->zeros, 128);
  // Rows of 48 elements: 1.5 blocks each (3 whole blocks in all).
  EXPECT_FALSE(CountSparsity(Tensor::Zeros(DType::kQ8_0, {2, 48})).ok());
}

}  // namespace
}  // namespace retort::prune
