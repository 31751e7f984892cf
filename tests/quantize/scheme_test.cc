// Quantization schemes and round-to-nearest against plain f64 loops.
#include "quantize/scheme.h"

#include <cmath>
#include <random>

#include "core/convert.h"
#include "core/thread_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace retort::quant {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomWeights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 0.02f);
  std::vector<float> w(rows * cols);
  for (float& v : w) v = d(rng);
  w[3] = 0.2f;  // an outlier, as real weights have
  return w;
}

TEST(Scheme, ParsesAndNamesRoundTrip) {
  for (const char* name :
       {"int4-g128", "int4-g32-asym", "int8-channel", "int8-tensor", "fp8-channel", "fp8-tensor",
        "fp8-block128", "fp8-e5m2-channel", "int4-channel-asym", "int8-g64"}) {
    auto s = ParseQuantScheme(name);
    ASSERT_TRUE(s.ok()) << name << ": " << s.status();
    EXPECT_EQ(s->Name(), name);
  }
  auto s = ParseQuantScheme("fp8-e4m3-block128");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->value_type, DType::kF8E4M3);
  EXPECT_EQ(s->granularity, QuantGranularity::kBlock);
  EXPECT_EQ(s->group_size, 128);
  for (const char* bad : {"int3-g128", "int4", "int4-g0", "int4-g33", "int4-block128",
                          "fp8-channel-asym", "int8-tensor-asym", "int4-g128-x", ""}) {
    EXPECT_FALSE(ParseQuantScheme(bad).ok()) << bad;
  }
  EXPECT_THAT(ParseQuantScheme("int5-g32").status().message(), HasSubstr("expected"));
}

TEST(Scheme, ChecksShapes) {
  auto s = ParseQuantScheme("int4-g128");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(CheckSchemeFits(*s, 8, 256, "w").ok());
  absl::Status st = CheckSchemeFits(*s, 576, 576, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_THAT(st.message(),
              HasSubstr("576 input columns are not a multiple of the group size 128"));
  EXPECT_THAT(st.message(), HasSubstr("q_proj"));
  auto ch = ParseQuantScheme("int4-channel");
  EXPECT_THAT(CheckSchemeFits(*ch, 4, 7, "w").message(), HasSubstr("odd"));
  EXPECT_FALSE(CheckSchemeFits(*ch, 0, 8, "w").ok());
}

// compressed-tensors' scale rules, computed in f64.
TEST(Scheme, ParamsFollowTheCompressedTensorsRules) {
  auto sym = ParseQuantScheme("int4-g32");
  QuantParams p = ComputeQuantParams(*sym, -0.3f, 0.6f);
  EXPECT_FLOAT_EQ(p.scale, static_cast<float>(0.6 / 7.5));
  EXPECT_EQ(p.zero, 0);
  auto asym = ParseQuantScheme("int4-g32-asym");
  p = ComputeQuantParams(*asym, -0.3f, 0.6f);
  EXPECT_FLOAT_EQ(p.scale, static_cast<float>(0.9 / 15));
  EXPECT_EQ(p.zero, std::nearbyint(-8 + 0.3 / (0.9 / 15)));
  // The range always holds zero.
  p = ComputeQuantParams(*asym, 0.2f, 0.5f);
  EXPECT_FLOAT_EQ(p.scale, static_cast<float>(0.5 / 15));
  EXPECT_EQ(p.zero, -8);
  auto fp8 = ParseQuantScheme("fp8-channel");
  p = ComputeQuantParams(*fp8, -0.9f, 0.3f);
  EXPECT_FLOAT_EQ(p.scale, static_cast<float>(0.9 / 448));
  // All zeros: scale 1.
  EXPECT_EQ(ComputeQuantParams(*sym, 0, 0).scale, 1.0f);
  EXPECT_EQ(ComputeQuantParams(*asym, 0, 0).scale, 1.0f);
}

TEST(Scheme, ScalesRoundToTheirStoredWidth) {
  auto s = ParseQuantScheme("int4-g32-asym");
  s->scale_dtype = DType::kBF16;
  const QuantParams p = ComputeQuantParams(*s, -0.3f, 0.61f);
  EXPECT_EQ(p.scale, BF16ToF32(F32ToBF16(p.scale)));
  EXPECT_EQ(p.zero, std::nearbyint(-8 + 0.3f / p.scale));
  s->scale_dtype = DType::kF16;
  const QuantParams h = ComputeQuantParams(*s, -0.3f, 0.61f);
  EXPECT_EQ(h.scale, F16ToF32(F32ToF16(h.scale)));
}

struct RtnCase {
  const char* scheme;
  int64_t rows, cols;
};

class Rtn : public ::testing::TestWithParam<RtnCase> {};

// Every element decodes to the nearest grid point of its group's scale, as
// an f64 loop computes it; the matrix validates; threads do not matter.
TEST_P(Rtn, MatchesAnF64Loop) {
  const RtnCase c = GetParam();
  auto s = ParseQuantScheme(c.scheme);
  ASSERT_TRUE(s.ok());
  const std::vector<float> w = RandomWeights(c.rows, c.cols, 3);
  auto q = QuantizeRtn(w.data(), c.rows, c.cols, *s);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(ValidateQuantizedMatrix(*q, c.scheme).ok());
  Tensor d = Dequantize(*q);
  const float* got = d.data<float>();
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t col = 0; col < c.cols; ++col) {
      // The group of (r, col) and its range.
      int64_t r0 = r, r1 = r + 1, c0 = 0, c1 = c.cols;
      if (s->granularity == QuantGranularity::kTensor) r0 = 0, r1 = c.rows;
      if (s->granularity == QuantGranularity::kGroup) {
        c0 = col / s->group_size * s->group_size, c1 = c0 + s->group_size;
      }
      if (s->granularity == QuantGranularity::kBlock) {
        const int64_t b = s->group_size;
        r0 = r / b * b, r1 = std::min(c.rows, r0 + b), c0 = col / b * b,
        c1 = std::min(c.cols, c0 + b);
      }
      double lo = 0, hi = 0;
      for (int64_t i = r0; i < r1; ++i) {
        for (int64_t j = c0; j < c1; ++j) {
          lo = std::min<double>(lo, w[i * c.cols + j]);
          hi = std::max<double>(hi, w[i * c.cols + j]);
        }
      }
      const double x = w[r * c.cols + col];
      double want;
      if (s->is_fp8()) {
        const double scale = std::max(-lo, hi) / 448.0;
        want = F8E4M3ToF32(F32ToF8E4M3(static_cast<float>(x / scale))) * scale;
        EXPECT_NEAR(got[r * c.cols + col], want, 1e-6 * std::abs(want) + 1e-9);
        continue;
      }
      const double qmin = s->qmin(), qmax = s->qmax();
      double scale, zero = 0;
      if (s->symmetric) {
        scale = std::max(-lo, hi) / ((qmax - qmin) / 2);
      } else {
        scale = (hi - lo) / (qmax - qmin);
        zero = std::clamp(std::nearbyint(qmin - lo / scale), qmin, qmax);
      }
      const double qv = std::clamp(std::nearbyint(x / scale) + zero, qmin, qmax);
      want = scale * (qv - zero);
      // f32 scale vs f64: a value exactly between grid points may round the
      // other way; allow one step there, else f32 rounding.
      const double diff = std::abs(got[r * c.cols + col] - want);
      EXPECT_TRUE(diff < 1e-6 || std::abs(diff - scale) < 1e-6)
          << c.scheme << " (" << r << ", " << col << "): " << got[r * c.cols + col] << " vs "
          << want;
    }
  }
  SetNumThreads(1);
  auto q1 = QuantizeRtn(w.data(), c.rows, c.cols, *s);
  SetNumThreads(3);
  auto q3 = QuantizeRtn(w.data(), c.rows, c.cols, *s);
  ASSERT_TRUE(q1.ok() && q3.ok());
  EXPECT_EQ(0, std::memcmp(q1->values.raw(), q3->values.raw(), q1->values.nbytes()));
}

INSTANTIATE_TEST_SUITE_P(
    Schemes, Rtn,
    ::testing::Values(RtnCase{"int4-g32", 7, 64}, RtnCase{"int4-g32-asym", 7, 64},
                      RtnCase{"int4-channel-asym", 5, 40}, RtnCase{"int8-channel", 6, 48},
                      RtnCase{"int8-tensor", 6, 48}, RtnCase{"int8-g16-asym", 3, 48},
                      RtnCase{"fp8-channel", 5, 40}, RtnCase{"fp8-tensor", 5, 40},
                      RtnCase{"fp8-block16", 37, 40}));

TEST(Rtn, RefusesNonFiniteWeightsAndShapes) {
  auto s = ParseQuantScheme("int4-g32");
  std::vector<float> w = RandomWeights(4, 64, 1);
  w[2 * 64 + 9] = std::nanf("");
  auto q = QuantizeRtn(w.data(), 4, 64, *s, "blk");
  EXPECT_THAT(q.status().message(), HasSubstr("blk: non-finite weight at row 2, column 9"));
  w[2 * 64 + 9] = 0;
  EXPECT_THAT(QuantizeRtn(w.data(), 4, 48, *s, "blk").status().message(),
              HasSubstr("not a multiple of the group size"));
}

}  // namespace
}  // namespace retort::quant
