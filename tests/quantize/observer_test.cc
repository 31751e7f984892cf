// Scale observers (scheme.h's ObserveQuantParams, QuantizeRtn and
// QuantizeGptq with --observer) against plain f64 loops: the search finds
// the optimum of an exhaustive loop over the same grid (bf16 scales and the
// importance weighting included), mse never does worse than minmax on any
// group, and GPTQ picks its group scales with the same search.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/convert.h"
#include "core/quant_matrix.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "quantize/gptq.h"
#include "quantize/scheme.h"

namespace retort::quant {
namespace {

using ::testing::HasSubstr;

// Normal weights with a few outliers (what makes clipping pay).
std::vector<float> RandomWeights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 0.02f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> w(n);
  for (float& v : w) v = d(rng) + (u(rng) < 0.02f ? 0.1f : 0.f);
  return w;
}

std::vector<float> RandomImportance(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<float> d(0.f, 1.5f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

QuantScheme Scheme(const char* name, DType scale_dtype = DType::kBF16) {
  QuantScheme s = *ParseQuantScheme(name);
  s.scale_dtype = scale_dtype;
  return s;
}

// The f64 reference: scale/zero of the clipped range [lo, hi] rounded to
// the stored width, the error of every value in f64 against its f32
// reconstruction (what the file decodes to).
struct Ref {
  double scale = 1, zero = 0;
};

double Stored(DType t, float s) {
  if (t == DType::kBF16) return BF16ToF32(F32ToBF16(s));
  if (t == DType::kF16) return F16ToF32(F32ToF16(s));
  return s;
}

// The candidate grid is defined in f32 (the clipped range lo * f and the
// scale's division, as a file's writer computes them), so these are the
// same candidates the search sees; everything after is f64.
Ref RefParams(const QuantScheme& s, float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  const float qmin = s.qmin(), qmax = s.qmax();
  Ref r;
  if (s.is_fp8() || s.symmetric) {
    const float range = s.is_fp8() ? qmax : (qmax - qmin) / 2;
    const float absmax = std::max(-lo, hi);
    if (absmax > 0) r.scale = Stored(s.scale_dtype, absmax / range);
    return r;
  }
  if (hi == lo) return r;
  r.scale = Stored(s.scale_dtype, (hi - lo) / (qmax - qmin));
  r.zero = std::clamp(std::nearbyint(qmin - lo / static_cast<float>(r.scale)), qmin, qmax);
  return r;
}

double RefError(const QuantScheme& s, const Ref& p, const float* v, int64_t n, const float* imp) {
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double x = v[k] / p.scale;
    double dq;
    if (s.is_fp8()) {
      dq = static_cast<float>(p.scale *
                              static_cast<double>(F8E4M3ToF32(F32ToF8E4M3(static_cast<float>(x)))));
    } else {
      const double q = std::clamp(std::nearbyint(x) + p.zero, double(s.qmin()), double(s.qmax()));
      // The file decodes to f32 (exact for bf16 scales; rounded for f32 ones).
      dq = static_cast<float>(p.scale * (q - p.zero));
    }
    const double d = v[k] - dq;
    sum += (imp != nullptr ? imp[k] : 1.0) * d * d;
  }
  return sum;
}

// The least error over the grid, every (i, j) tried (symmetric: i == j).
double BruteForceMin(const QuantScheme& s, const ObserverOptions& o, const float* v, int64_t n,
                     const float* imp) {
  float lo = 0, hi = 0;
  for (int64_t k = 0; k < n; ++k) {
    lo = std::min(lo, v[k]);
    hi = std::max(hi, v[k]);
  }
  const int steps = static_cast<int>(std::lround(o.max_shrink * o.grid));
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i <= steps; ++i) {
    for (int j = 0; j <= steps; ++j) {
      if ((s.symmetric || s.is_fp8()) && i != j) continue;
      const float fi = static_cast<float>(1.0 - double(i) / o.grid);
      const float fj = static_cast<float>(1.0 - double(j) / o.grid);
      best = std::min(best, RefError(s, RefParams(s, lo * fi, hi * fj), v, n, imp));
    }
  }
  return best;
}

struct Case {
  const char* scheme;
  int64_t group;  // values per searched group
};

TEST(Observer, SearchFindsTheExhaustiveGridOptimum) {
  const Case cases[] = {{"int4-g32", 32},     {"int4-g32-asym", 32},     {"int4-g128", 128},
                        {"int8-channel", 96}, {"int8-channel-asym", 96}, {"int4-channel-asym", 200},
                        {"fp8-channel", 64}};
  for (ScaleObserver kind : {ScaleObserver::kMse, ScaleObserver::kImatrixMse}) {
    for (DType dt : {DType::kBF16, DType::kF32}) {
      for (const Case& c : cases) {
        const QuantScheme s = Scheme(c.scheme, dt);
        ObserverOptions o;
        o.kind = kind;
        if (!s.symmetric) o.grid = 40;  // 9 x 9 shrinks: keeps the 2-D loop short
        const int groups = 40;
        const std::vector<float> w = RandomWeights(groups * c.group, 7);
        const std::vector<float> imp = RandomImportance(groups * c.group, 8);
        int improved = 0;
        for (int g = 0; g < groups; ++g) {
          const float* v = w.data() + g * c.group;
          const float* gi = kind == ScaleObserver::kImatrixMse ? imp.data() + g * c.group : nullptr;
          const QuantParams p = ObserveQuantParams(
              s, o, v, c.group,
              gi ? std::span<const float>(gi, c.group) : std::span<const float>());
          const double got = RefError(s, Ref{p.scale, p.zero}, v, c.group, gi);
          const double want = BruteForceMin(s, o, v, c.group, gi);
          EXPECT_NEAR(got, want, 1e-9 * want) << c.scheme << " " << ScaleObserverName(kind) << " "
                                              << DTypeName(dt) << " group " << g;
          // The f64 error of what the search returns equals its own measure.
          EXPECT_NEAR(
              QuantError(s, p, v, c.group,
                         gi ? std::span<const float>(gi, c.group) : std::span<const float>()),
              got, 1e-9 * got);
          float lo = 0, hi = 0;
          for (int64_t k = 0; k < c.group; ++k) lo = std::min(lo, v[k]), hi = std::max(hi, v[k]);
          const QuantParams mm = ComputeQuantParams(s, lo, hi);
          if (p.scale != mm.scale || p.zero != mm.zero) ++improved;
        }
        // The search does move off minmax on outlier-heavy int4 groups.
        if (s.value_type == DType::kI4) {
          EXPECT_GT(improved, 0) << c.scheme << " " << ScaleObserverName(kind);
        }
      }
    }
  }
}

TEST(Observer, MinMaxIsTheRangeRule) {
  const std::vector<float> w = RandomWeights(64, 3);
  for (const char* name : {"int4-g64", "int4-g64-asym", "fp8-channel"}) {
    const QuantScheme s = Scheme(name);
    float lo = 0, hi = 0;
    for (float v : w) lo = std::min(lo, v), hi = std::max(hi, v);
    const QuantParams want = ComputeQuantParams(s, lo, hi);
    const QuantParams got = ObserveQuantParams(s, ObserverOptions{}, w.data(), 64);
    EXPECT_EQ(got.scale, want.scale) << name;
    EXPECT_EQ(got.zero, want.zero) << name;
  }
}

// Per (row, group): sum over its values of importance * (w - dq)^2.
std::vector<double> GroupErrors(const QuantizedMatrix& q, const std::vector<float>& w, int64_t rows,
                                int64_t cols, int64_t g, const std::vector<float>* imp) {
  const Tensor dq = Dequantize(q);
  std::vector<double> e(rows * (cols / g), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double d = double(w[r * cols + c]) - dq.data<float>()[r * cols + c];
      e[r * (cols / g) + c / g] += (imp ? (*imp)[c] : 1.0) * d * d;
    }
  }
  return e;
}

TEST(Observer, MseNeverWorseThanMinMaxOnAnyGroup) {
  const int64_t rows = 48, cols = 256;
  const std::vector<float> w = RandomWeights(rows * cols, 21);
  const std::vector<float> imp = RandomImportance(cols, 22);
  for (const char* name : {"int4-g32", "int4-g64-asym", "int4-g128", "int8-g64", "int8-channel",
                           "int4-channel-asym", "fp8-channel"}) {
    const QuantScheme s = Scheme(name);
    const int64_t g = s.granularity == QuantGranularity::kGroup ? s.group_size : cols;
    auto minmax = QuantizeRtn(w.data(), rows, cols, s, "w");
    ASSERT_TRUE(minmax.ok()) << minmax.status();
    for (ScaleObserver kind : {ScaleObserver::kMse, ScaleObserver::kImatrixMse}) {
      ObserverOptions o;
      o.kind = kind;
      const bool weighted = kind == ScaleObserver::kImatrixMse;
      auto searched =
          QuantizeRtn(w.data(), rows, cols, s, "w", o,
                      weighted ? std::span<const float>(imp) : std::span<const float>());
      ASSERT_TRUE(searched.ok()) << searched.status();
      const std::vector<float>* wi = weighted ? &imp : nullptr;
      const std::vector<double> a = GroupErrors(*minmax, w, rows, cols, g, wi);
      const std::vector<double> b = GroupErrors(*searched, w, rows, cols, g, wi);
      double ta = 0, tb = 0;
      for (size_t k = 0; k < a.size(); ++k) {
        EXPECT_LE(b[k], a[k] * (1 + 1e-12))
            << name << " " << ScaleObserverName(kind) << " group " << k;
        ta += a[k];
        tb += b[k];
      }
      EXPECT_LT(tb, (s.value_type == DType::kI4 ? 0.97 : 1.0) * ta)
          << name << " " << ScaleObserverName(kind);
    }
  }
}

TEST(Observer, TensorAndBlockScalesAreSearchedToo) {
  const int64_t rows = 160, cols = 256;
  const std::vector<float> w = RandomWeights(rows * cols, 5);
  for (const char* name : {"fp8-tensor", "fp8-block128", "int8-tensor"}) {
    const QuantScheme s = Scheme(name);
    ObserverOptions o;
    o.kind = ScaleObserver::kMse;
    auto a = QuantizeRtn(w.data(), rows, cols, s, "w");
    auto b = QuantizeRtn(w.data(), rows, cols, s, "w", o);
    ASSERT_TRUE(a.ok() && b.ok());
    const std::vector<double> ea = GroupErrors(*a, w, rows, cols, cols, nullptr);
    const std::vector<double> eb = GroupErrors(*b, w, rows, cols, cols, nullptr);
    double ta = 0, tb = 0;
    for (double v : ea) ta += v;
    for (double v : eb) tb += v;
    EXPECT_LE(tb, ta) << name;
    // The tensor scale is exactly the search over all the weights.
    if (s.granularity == QuantGranularity::kTensor) {
      const QuantParams p = ObserveQuantParams(s, o, w.data(), rows * cols);
      EXPECT_EQ(b->scales.data<float>()[0], p.scale) << name;
    }
  }
}

// With a diagonal Hessian GPTQ has no error to spread: it is RTN, so with
// the same observer it must write the same matrix (scales found when GPTQ
// reaches each group).
TEST(Observer, GptqWithDiagonalHessianEqualsRtnWithTheSameObserver) {
  const int64_t rows = 40, cols = 128;
  const std::vector<float> w = RandomWeights(rows * cols, 9);
  const std::vector<float> imp = RandomImportance(cols, 10);
  std::vector<float> x(cols * cols, 0.0f);
  for (int64_t j = 0; j < cols; ++j) x[j * cols + j] = 1.0f;
  HessianAccumulator h(cols);
  h.Add(x.data(), cols);
  for (const char* name : {"int4-g32", "int4-g64-asym", "int8-channel", "int4-channel-asym"}) {
    const QuantScheme s = Scheme(name);
    for (ScaleObserver kind :
         {ScaleObserver::kMinMax, ScaleObserver::kMse, ScaleObserver::kImatrixMse}) {
      for (bool static_groups : {false, true}) {
        ObserverOptions o;
        o.kind = kind;
        GptqOptions g;
        g.observer = o;
        g.block_size = 48;  // groups that straddle lazy blocks
        g.static_groups = static_groups;
        const std::span<const float> given = kind == ScaleObserver::kImatrixMse
                                                 ? std::span<const float>(imp)
                                                 : std::span<const float>();
        auto gq = QuantizeGptq(w.data(), rows, cols, h, s, g, "w", nullptr, given);
        ASSERT_TRUE(gq.ok()) << gq.status();
        auto rq = QuantizeRtn(w.data(), rows, cols, s, "w", o, given);
        ASSERT_TRUE(rq.ok()) << rq.status();
        const Tensor a = Dequantize(*gq), b = Dequantize(*rq);
        for (int64_t k = 0; k < rows * cols; ++k) {
          ASSERT_EQ(a.data<float>()[k], b.data<float>()[k])
              << name << " " << ScaleObserverName(kind) << " static " << static_groups << " at "
              << k;
        }
      }
    }
  }
}

// imatrix-mse without importance in GPTQ weighs by diag(H): a Hessian that
// makes some columns far more important than others changes the scales.
TEST(Observer, GptqImatrixMseWeighsByTheHessianDiagonal) {
  const int64_t rows = 32, cols = 64;
  const std::vector<float> w = RandomWeights(rows * cols, 13);
  std::vector<float> x(cols * cols, 0.0f);
  std::vector<float> imp(cols);
  for (int64_t j = 0; j < cols; ++j) {
    const float a = (j % 7 == 0) ? 8.0f : 0.125f;  // powers of two: diag(H) exactly 2/n imp
    x[j * cols + j] = a;
    imp[j] = a * a;
  }
  HessianAccumulator h(cols);
  h.Add(x.data(), cols);
  const QuantScheme s = Scheme("int4-g32");
  GptqOptions g;
  g.observer.kind = ScaleObserver::kImatrixMse;
  auto from_h = QuantizeGptq(w.data(), rows, cols, h, s, g, "w");
  auto given = QuantizeGptq(w.data(), rows, cols, h, s, g, "w", nullptr, imp);
  g.observer.kind = ScaleObserver::kMse;
  auto plain = QuantizeGptq(w.data(), rows, cols, h, s, g, "w");
  ASSERT_TRUE(from_h.ok() && given.ok() && plain.ok());
  int differ = 0;
  for (int64_t k = 0; k < from_h->scales.numel(); ++k) {
    // diag(H) = 2/n a^2: proportional to imp, so the same argmin.
    EXPECT_EQ(from_h->scales.data<float>()[k], given->scales.data<float>()[k]) << k;
    differ += from_h->scales.data<float>()[k] != plain->scales.data<float>()[k];
  }
  EXPECT_GT(differ, 0);
}

TEST(Observer, BadInputIsAOneLineError) {
  const std::vector<float> w = RandomWeights(4 * 64, 1);
  const QuantScheme s = Scheme("int4-g32");
  ObserverOptions o;
  o.kind = ScaleObserver::kImatrixMse;
  auto r = QuantizeRtn(w.data(), 4, 64, s, "layer.w", o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("layer.w: the imatrix-mse observer needs the importance of each of its 64 "
                        "input columns, got 0"));
  std::vector<float> imp(64, 1.0f);
  imp[5] = -1;
  r = QuantizeRtn(w.data(), 4, 64, s, "layer.w", o, imp);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("importance of input column 5 is -1"));
  o.kind = ScaleObserver::kMse;
  o.max_shrink = 1.0;
  r = QuantizeRtn(w.data(), 4, 64, s, "layer.w", o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("max shrink must be in [0, 1)"));
  auto bad = ParseScaleObserver("maxmin");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("unknown scale observer 'maxmin' (expected minmax, mse or imatrix-mse)"));
  EXPECT_EQ(*ParseScaleObserver("imatrix_mse"), ScaleObserver::kImatrixMse);
  for (ScaleObserver k :
       {ScaleObserver::kMinMax, ScaleObserver::kMse, ScaleObserver::kImatrixMse}) {
    EXPECT_EQ(*ParseScaleObserver(ScaleObserverName(k)), k);
  }
}

}  // namespace
}  // namespace retort::quant
