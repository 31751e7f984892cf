// quantize/awq: scale search and clipping against the PyTorch reference
// (tests/reference/awq/make_fixtures.py), AWQ never worse than RTN on its
// loss, clipping never worse per group, thread-count independence, bad input.
//
// Tolerances: the reference sums the loss in f64 from f64 products, we
// multiply in f32 (BLAS) and sum in f64, so losses agree to ~1e-5 relative;
// the scales come from the same f32 pow/normalisation and agree to 1e-5
// relative (libm vs ATen pow may differ in the last bit). The clipped weights
// are min/max of the same f32 values: equal.
#include "quantize/awq.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/quant_matrix.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "formats/safetensors.h"
#include "gtest/gtest.h"
#include "quantize/scheme.h"

namespace retort::quant {
namespace {

constexpr char kFixture[] = "tests/reference/awq/awq.safetensors";

QuantScheme Scheme(const std::string& name) {
  absl::StatusOr<QuantScheme> s = ParseQuantScheme(name);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

std::vector<float> ToVector(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// sum over linears ||x W^T - x (Q(W s)/s)^T||^2 with f64 loops.
double AwqLoss(const std::vector<float>& x, int64_t tokens, int64_t cols,
               const std::vector<std::vector<float>>& ws, const std::vector<float>& s,
               const QuantScheme& scheme) {
  double total = 0;
  for (const auto& w : ws) {
    const int64_t rows = w.size() / cols;
    std::vector<float> scaled(w.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) scaled[r * cols + c] = w[r * cols + c] * s[c];
    absl::StatusOr<QuantizedMatrix> q = QuantizeRtn(scaled.data(), rows, cols, scheme);
    EXPECT_TRUE(q.ok()) << q.status();
    std::vector<float> deq(w.size());
    DequantizeRows(*q, 0, rows, deq.data());
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double acc = 0;
        for (int64_t c = 0; c < cols; ++c) {
          acc += double(x[t * cols + c]) * (double(w[r * cols + c]) - deq[r * cols + c] / s[c]);
        }
        total += acc * acc;
      }
    }
  }
  return total;
}

struct Fixture {
  std::unique_ptr<SafetensorsReader> reader;
  std::vector<float> x, w1, w2;
  int64_t tokens = 0, cols = 0;
};

Fixture Load() {
  Fixture f;
  auto reader = SafetensorsReader::Open(kFixture);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return f;
  f.reader = std::move(*reader);
  Tensor x = *f.reader->Get("x");
  f.tokens = x.dim(0);
  f.cols = x.dim(1);
  f.x = ToVector(x);
  f.w1 = ToVector(*f.reader->Get("w1"));
  f.w2 = ToVector(*f.reader->Get("w2"));
  return f;
}

TEST(AwqTest, ScalesMatchTorchReference) {
  Fixture f = Load();
  ASSERT_NE(f.reader, nullptr);
  struct Case {
    const char* name;
    const char* scheme;
    bool duo;
  };
  for (const Case& c :
       {Case{"int4_g32_sym", "int4-g32", true}, Case{"int4_g32_asym", "int4-g32-asym", true},
        Case{"int4_g32_sym_noduo", "int4-g32", false},
        Case{"int4_channel_asym", "int4-channel-asym", true}}) {
    SCOPED_TRACE(c.name);
    AwqOptions opts;
    opts.duo_scaling = c.duo;
    std::vector<LinearRef> linears = {{f.w1.data(), 48, "q_proj"}, {f.w2.data(), 32, "k_proj"}};
    double loss = 0;
    absl::StatusOr<std::vector<float>> s =
        AwqSearchScales(f.x.data(), f.tokens, f.cols, linears, Scheme(c.scheme), opts, &loss);
    ASSERT_TRUE(s.ok()) << s.status();
    std::vector<float> want = ToVector(*f.reader->Get(std::string(c.name) + ".scales"));
    ASSERT_EQ(s->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR((*s)[i], want[i], 1e-5 * std::abs(want[i])) << i;
    }
    const double want_loss = (*f.reader->Get(std::string(c.name) + ".loss")).data<double>()[0];
    const double rtn_loss = (*f.reader->Get(std::string(c.name) + ".rtn_loss")).data<double>()[0];
    EXPECT_NEAR(loss, want_loss, 1e-5 * want_loss);
    EXPECT_LT(loss, 0.9 * rtn_loss);  // AWQ helps on these outlier channels
    // Our loss is the loss of the returned scales, by an independent loop.
    const double check = AwqLoss(f.x, f.tokens, f.cols, {f.w1, f.w2}, *s, Scheme(c.scheme));
    EXPECT_NEAR(loss, check, 1e-5 * check);
  }
}

TEST(AwqTest, NeverWorseThanRtn) {
  // Inputs without outlier channels: the grid may not beat RTN, s = 1 must win then.
  const int64_t tokens = 64, cols = 64;
  std::mt19937 rng(4);
  std::normal_distribution<float> dist;
  for (const char* name : {"int4-g32", "int4-g32-asym", "int8-channel", "int4-channel"}) {
    for (int trial = 0; trial < 3; ++trial) {
      std::vector<float> x(tokens * cols), w(16 * cols);
      for (auto& v : x) v = dist(rng);
      for (auto& v : w) v = 0.02f * dist(rng);
      const QuantScheme scheme = Scheme(name);
      double loss = 0;
      absl::StatusOr<std::vector<float>> s =
          AwqSearchScales(x.data(), tokens, cols, {{w.data(), 16, "w"}}, scheme, {}, &loss);
      ASSERT_TRUE(s.ok()) << s.status();
      const double rtn = AwqLoss(x, tokens, cols, {w}, std::vector<float>(cols, 1.0f), scheme);
      EXPECT_LE(loss, rtn * (1 + 1e-5)) << name;
    }
  }
}

TEST(AwqTest, ClipMatchesTorchReference) {
  Fixture f = Load();
  ASSERT_NE(f.reader, nullptr);
  std::vector<float> s = ToVector(*f.reader->Get("int4_g32_asym.scales"));
  std::vector<float> w = f.w1, x = f.x;
  for (int64_t r = 0; r < 48; ++r)
    for (int64_t c = 0; c < f.cols; ++c) w[r * f.cols + c] *= s[c];
  for (int64_t t = 0; t < f.tokens; ++t)
    for (int64_t c = 0; c < f.cols; ++c) x[t * f.cols + c] /= s[c];
  // 100 tokens (128 after the stride) > 32 group columns: the Gram path;
  // 16 tokens: the direct path.
  for (int64_t max_tokens : {100, 16}) {
    SCOPED_TRACE(max_tokens);
    AwqOptions opts;
    opts.max_tokens = max_tokens;
    std::vector<float> got = w;
    ASSERT_TRUE(
        AwqClip(got.data(), 48, f.cols, x.data(), f.tokens, Scheme("int4-g32-asym"), opts, "q_proj")
            .ok());
    std::vector<float> want = ToVector(*f.reader->Get(max_tokens == 100 ? "clip.w" : "clip16.w"));
    int64_t clipped = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_FLOAT_EQ(got[i], want[i]) << i;
      if (got[i] != w[i]) ++clipped;
    }
    EXPECT_GT(clipped, 0);  // the fixture does clip something
  }
}

// Per (row, group), the clipped weights' output error after RTN is never
// above the unclipped one's (shrink 0 is a candidate).
TEST(AwqTest, ClipNeverWorsePerGroup) {
  const int64_t tokens = 200, cols = 128, rows = 70, g = 32;
  std::mt19937 rng(8);
  std::normal_distribution<float> dist;
  std::vector<float> x(tokens * cols), w(rows * cols);
  for (auto& v : x) v = dist(rng);
  for (auto& v : w) v = 0.02f * dist(rng);
  for (int64_t r = 0; r < rows; r += 5) w[r * cols + (r % cols)] = 0.3f;  // outliers to clip
  for (const char* name : {"int4-g32", "int4-g32-asym"}) {
    const QuantScheme scheme = Scheme(name);
    std::vector<float> clipped = w;
    ASSERT_TRUE(AwqClip(clipped.data(), rows, cols, x.data(), tokens, scheme, {}).ok());
    absl::StatusOr<QuantizedMatrix> q0 = QuantizeRtn(w.data(), rows, cols, scheme);
    absl::StatusOr<QuantizedMatrix> q1 = QuantizeRtn(clipped.data(), rows, cols, scheme);
    std::vector<float> d0(rows * cols), d1(rows * cols);
    DequantizeRows(*q0, 0, rows, d0.data());
    DequantizeRows(*q1, 0, rows, d1.data());
    int64_t improved = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < cols / g; ++k) {
        double e0 = 0, e1 = 0;
        for (int64_t t = 0; t < tokens; ++t) {
          double a0 = 0, a1 = 0;
          for (int64_t c = k * g; c < (k + 1) * g; ++c) {
            a0 += double(x[t * cols + c]) * (d0[r * cols + c] - w[r * cols + c]);
            a1 += double(x[t * cols + c]) * (d1[r * cols + c] - w[r * cols + c]);
          }
          e0 += a0 * a0;
          e1 += a1 * a1;
        }
        EXPECT_LE(e1, e0 * (1 + 1e-4) + 1e-12) << name << " row " << r << " group " << k;
        if (e1 < 0.99 * e0) ++improved;
      }
    }
    EXPECT_GT(improved, 0) << name;
  }
}

TEST(AwqTest, SameResultForAnyThreadCount) {
  Fixture f = Load();
  ASSERT_NE(f.reader, nullptr);
  std::vector<float> scales[2], clipped[2];
  for (int i = 0; i < 2; ++i) {
    SetNumThreads(i == 0 ? 1 : 4);
    absl::StatusOr<std::vector<float>> s = AwqSearchScales(
        f.x.data(), f.tokens, f.cols, {{f.w1.data(), 48, "a"}, {f.w2.data(), 32, "b"}},
        Scheme("int4-g32-asym"), {});
    ASSERT_TRUE(s.ok()) << s.status();
    scales[i] = *s;
    clipped[i] = f.w1;
    ASSERT_TRUE(
        AwqClip(clipped[i].data(), 48, f.cols, f.x.data(), f.tokens, Scheme("int4-channel"), {})
            .ok());
  }
  SetNumThreads(2);
  EXPECT_EQ(scales[0], scales[1]);
  EXPECT_EQ(clipped[0], clipped[1]);
}

TEST(AwqTest, RejectsBadInput) {
  const int64_t tokens = 8, cols = 64;
  std::vector<float> x(tokens * cols, 1.0f), w(4 * cols, 0.1f);
  const QuantScheme scheme = Scheme("int4-g32");
  EXPECT_FALSE(AwqSearchScales(x.data(), tokens, cols, {}, scheme, {}).ok());
  EXPECT_FALSE(AwqSearchScales(x.data(), 0, cols, {{w.data(), 4, "w"}}, scheme, {}).ok());
  AwqOptions no_grid;
  no_grid.grid = 0;
  EXPECT_FALSE(AwqSearchScales(x.data(), tokens, cols, {{w.data(), 4, "w"}}, scheme, no_grid).ok());
  absl::StatusOr<std::vector<float>> s =
      AwqSearchScales(x.data(), tokens, cols, {{w.data(), 4, "mlp.up"}}, Scheme("int4-g48"), {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("mlp.up"), std::string::npos) << s.status();
  std::vector<float> bad = w;
  bad[cols + 3] = NAN;
  s = AwqSearchScales(x.data(), tokens, cols, {{bad.data(), 4, "mlp.up"}}, scheme, {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("row 1, column 3"), std::string::npos) << s.status();
  std::vector<float> badx = x;
  badx[5] = INFINITY;
  EXPECT_FALSE(AwqSearchScales(badx.data(), tokens, cols, {{w.data(), 4, "w"}}, scheme, {}).ok());

  absl::Status c = AwqClip(w.data(), 4, cols, x.data(), tokens, Scheme("fp8-tensor"), {}, "o");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.message().find("per-channel or per-group"), std::string::npos) << c;
  EXPECT_FALSE(AwqClip(bad.data(), 4, cols, x.data(), tokens, scheme, {}, "o").ok());
  EXPECT_FALSE(AwqClip(w.data(), 4, cols, badx.data(), tokens, scheme, {}, "o").ok());
  AwqOptions bad_clip;
  bad_clip.max_shrink = 1.5f;
  EXPECT_FALSE(AwqClip(w.data(), 4, cols, x.data(), tokens, scheme, bad_clip, "o").ok());
}

}  // namespace
}  // namespace retort::quant

namespace retort::quant {
namespace {

// Timing on a SmolLM2-135M-like MLP input (576 wide, gate+up 2 x 1536 rows).
TEST(AwqTest, Speed576Wide) {
  const int64_t tokens = 512, cols = 576, rows = 1536;
  std::mt19937 rng(12);
  std::normal_distribution<float> dist;
  std::vector<float> x(tokens * cols), gate(rows * cols), up(rows * cols);
  for (auto& v : x) v = dist(rng);
  for (int64_t t = 0; t < tokens; ++t) x[t * cols + 17] *= 30;
  for (auto& v : gate) v = 0.02f * dist(rng);
  for (auto& v : up) v = 0.02f * dist(rng);
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<float>> s = AwqSearchScales(
      x.data(), tokens, cols, {{gate.data(), rows, "gate"}, {up.data(), rows, "up"}},
      Scheme("int4-g64"), {});
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(AwqClip(gate.data(), rows, cols, x.data(), tokens, Scheme("int4-g64"), {}).ok());
  auto t2 = std::chrono::steady_clock::now();
  std::printf(
      "AWQ 2 x [1536, 576] int4-g64, 512 tokens, %d threads: scale search %.3f s, "
      "clip (one linear) %.3f s\n",
      NumThreads(), std::chrono::duration<double>(t1 - t0).count(),
      std::chrono::duration<double>(t2 - t1).count());
  EXPECT_LT(std::chrono::duration<double>(t2 - t0).count(), 20.0);  // loose: shared machines
}

}  // namespace
}  // namespace retort::quant
