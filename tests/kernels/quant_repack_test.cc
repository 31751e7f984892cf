// Q4_0 and Q8_0 weights repacked 8 rows at a time (kernels/cpu/
// quant_repack.h), each test run for both (kQ4_0_R8, kQ8_0_R8):
//  * the repacked blocks dequantize to exactly the stored values;
//  * the decode GEMV matches the scalar reference of the same quantized math
//    (QuantDotReference on the stored row against the input quantized to Q8_0)
//    to f32 rounding, under every integer-dot path the CPU has, with bias,
//    any m up to kQuantGemvMaxRows and any sub-range of rows;
//  * results are bit-identical between 1 and 2 threads and between paths;
//  * the prefill path (m > kQuantGemvMaxRows) gives the bits of the stored
//    type's;
//  * PrepareWeightForCpu repacks only what it can, the R8 types are not parsed.
#include "kernels/cpu/quant_repack.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/ggml_blocks.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/kernels/quant_test_util.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_matmul.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using testing::RandomVector;

// [n, k] random Q4_0 blocks: random nibbles, f16 scales of either sign over
// a few binades.
Tensor RandomQ4_0(int64_t n, int64_t k, uint32_t seed) {
  Tensor w = Tensor::Zeros(DType::kQ4_0, {n, k});
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mag(-3.f, 0.f), sign(0.f, 1.f);
  auto* b = static_cast<ggml::BlockQ4_0*>(w.mutable_raw());
  for (int64_t i = 0; i < n * k / 32; ++i) {
    for (auto& q : b[i].qs) q = static_cast<uint8_t>(rng());
    b[i].d = F32ToF16(0.05f * std::pow(10.f, mag(rng)) * (sign(rng) < 0.5f ? -1.f : 1.f));
  }
  return w;
}

// [n, k] random Q8_0 blocks: random bytes (-128 included), scales as above.
Tensor RandomQ8_0(int64_t n, int64_t k, uint32_t seed) {
  Tensor w = Tensor::Zeros(DType::kQ8_0, {n, k});
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mag(-3.f, 0.f), sign(0.f, 1.f);
  auto* b = static_cast<ggml::BlockQ8_0*>(w.mutable_raw());
  for (int64_t i = 0; i < n * k / 32; ++i) {
    for (auto& q : b[i].qs) q = static_cast<int8_t>(rng());
    b[i].d = F32ToF16(0.005f * std::pow(10.f, mag(rng)) * (sign(rng) < 0.5f ? -1.f : 1.f));
  }
  return w;
}

using testing::ForEachPath;
using testing::SupportedPaths;

std::vector<float> MatMulY(const float* x, int64_t m, const Tensor& w, const float* bias) {
  std::vector<float> y(m * w.dim(0), -1.f);
  EXPECT_TRUE(MatMul(x, m, w, bias, y.data()).ok());
  return y;
}

// Each test runs for the stored type (param) and its repacked type.
class QuantRepackTest : public ::testing::TestWithParam<DType> {
 protected:
  DType stored() const { return GetParam(); }
  DType repacked() const {
    return GetParam() == DType::kQ8_0 ? DType::kQ8_0_R8 : DType::kQ4_0_R8;
  }
  Tensor Random(int64_t n, int64_t k, uint32_t seed) const {
    return GetParam() == DType::kQ8_0 ? RandomQ8_0(n, k, seed) : RandomQ4_0(n, k, seed);
  }
};

INSTANTIATE_TEST_SUITE_P(Types, QuantRepackTest, ::testing::Values(DType::kQ4_0, DType::kQ8_0),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

TEST_P(QuantRepackTest, DequantizesToTheStoredValues) {
  const int64_t n = 24, k = 96;
  const Tensor w = Random(n, k, 1);
  const Tensor r = PrepareWeightForCpu(w);
  ASSERT_EQ(r.dtype(), repacked());
  EXPECT_EQ(r.nbytes(), w.nbytes());
  std::vector<float> want(n * k), got(n * k);
  DequantizeRows(stored(), w.raw(), k, 0, n, want.data());
  DequantizeRows(repacked(), r.raw(), k, 0, n, got.data());
  EXPECT_EQ(want, got);
  // A sub-range starting inside a group.
  std::vector<float> part(5 * k);
  DequantizeRows(repacked(), r.raw(), k, 11, 5, part.data());
  EXPECT_EQ(std::vector<float>(want.begin() + 11 * k, want.begin() + 16 * k), part);
}

TEST_P(QuantRepackTest, GemvMatchesScalarReference) {
  for (int64_t k : {32, 96, 576}) {
    for (int64_t n : {8, 40}) {
      for (int64_t m : {int64_t{1}, int64_t{3}, kQuantGemvMaxRows}) {
        SCOPED_TRACE("k " + std::to_string(k) + " n " + std::to_string(n) + " m " +
                     std::to_string(m));
        const Tensor w = Random(n, k, static_cast<uint32_t>(k + n));
        const Tensor r = PrepareWeightForCpu(w);
        const std::vector<float> x = RandomVector(m * k, static_cast<uint32_t>(m), 2.f);
        const std::vector<float> bias = RandomVector(n, 7);
        // Reference: per output, the scalar quantized dot and a bound on its
        // f32 rounding (1e-6 of the sum of the per-block magnitudes).
        std::vector<float> want(m * n);
        std::vector<double> bound(m * n);
        const size_t rb = DTypeBytes(stored(), k);
        std::vector<char> act(ActivationRowBytes(DType::kQ8_0, k));
        std::vector<float> deq(k);
        for (int64_t i = 0; i < m; ++i) {
          QuantizeActivationRowReference(DType::kQ8_0, x.data() + i * k, act.data(), k);
          const auto* a = reinterpret_cast<const ggml::BlockQ8_0*>(act.data());
          for (int64_t o = 0; o < n; ++o) {
            const char* row = static_cast<const char*>(w.raw()) + o * rb;
            want[i * n + o] = QuantDotReference(stored(), row, act.data(), k) + bias[o];
            DequantizeRows(stored(), w.raw(), k, o, 1, deq.data());
            double mag = std::fabs(bias[o]);
            for (int64_t j = 0; j < k; ++j)
              mag += std::fabs(deq[j] * F16ToF32(a[j / 32].d) * a[j / 32].qs[j % 32]);
            bound[i * n + o] = 1e-6 * mag + 1e-30;
          }
        }
        ForEachPath([&] {
          const std::vector<float> got = MatMulY(x.data(), m, r, bias.data());
          for (int64_t t = 0; t < m * n; ++t)
            ASSERT_NEAR(got[t], want[t], bound[t]) << "output " << t;
          // The stored type's path computes the same math.
          const std::vector<float> q4 = MatMulY(x.data(), m, w, bias.data());
          for (int64_t t = 0; t < m * n; ++t) ASSERT_NEAR(got[t], q4[t], 2 * bound[t]);
        });
      }
    }
  }
}

TEST_P(QuantRepackTest, AnyRowRangeGivesTheSameBits) {
  const int64_t n = 40, k = 128, m = 2;
  const Tensor r = PrepareWeightForCpu(Random(n, k, 3));
  const std::vector<float> x = RandomVector(m * k, 4);
  std::vector<char> act(m * ActivationRowBytes(DType::kQ8_0, k));
  const size_t arb = ActivationRowBytes(DType::kQ8_0, k);
  for (int64_t i = 0; i < m; ++i)
    QuantizeActivationRow(DType::kQ8_0, x.data() + i * k, act.data() + i * arb, k);
  ForEachPath([&] {
    std::vector<float> full(m * n), parts(m * n, -1.f);
    QuantGemvRows(repacked(), r.raw(), k, act.data(), arb, m, nullptr, full.data(), n, 0, n);
    for (int64_t lo : {0, 3, 13, 21, 37}) {
      const int64_t hi = lo == 37 ? n : (lo == 0 ? 3 : lo == 3 ? 13 : lo == 13 ? 21 : 37);
      QuantGemvRows(repacked(), r.raw(), k, act.data(), arb, m, nullptr, parts.data(), n, lo, hi);
    }
    EXPECT_EQ(full, parts);
  });
}

TEST_P(QuantRepackTest, SameBitsOnOneAndTwoThreadsAndOnEveryPath) {
  const int64_t n = 576, k = 1536;
  const Tensor r = PrepareWeightForCpu(Random(n, k, 5));
  ASSERT_EQ(r.dtype(), repacked());
  const std::vector<float> x = RandomVector(3 * k, 6);
  std::vector<std::vector<float>> results;
  for (int64_t m : {1, 3}) {
    ForEachPath([&] {
      SetNumThreads(1);
      const std::vector<float> one = MatMulY(x.data(), m, r, nullptr);
      SetNumThreads(2);
      const std::vector<float> two = MatMulY(x.data(), m, r, nullptr);
      EXPECT_EQ(one, two);
      results.push_back(one);
    });
    for (const auto& res : results) EXPECT_EQ(res, results.front());
    results.clear();
  }
}

TEST_P(QuantRepackTest, PrefillGivesTheBitsOfTheStoredType) {
  const int64_t n = 64, k = 256, m = kQuantGemvMaxRows + 9;
  const Tensor w = Random(n, k, 8);
  const Tensor r = PrepareWeightForCpu(w);
  ASSERT_EQ(r.dtype(), repacked());
  const std::vector<float> x = RandomVector(m * k, 9);
  const std::vector<float> bias = RandomVector(n, 10);
  EXPECT_EQ(MatMulY(x.data(), m, w, bias.data()), MatMulY(x.data(), m, r, bias.data()));
}

TEST_P(QuantRepackTest, OnlyRepacksWhatItCan) {
  EXPECT_TRUE(CanRepackForCpu(Random(16, 64, 1)));
  const Tensor odd = Random(12, 64, 1);  // rows not a multiple of 8
  EXPECT_FALSE(CanRepackForCpu(odd));
  EXPECT_EQ(PrepareWeightForCpu(odd).dtype(), stored());
  EXPECT_EQ(PrepareWeightForCpu(odd).raw(), odd.raw());
  const Tensor q4_1 = Tensor::Zeros(DType::kQ4_1, {16, 64});
  EXPECT_EQ(PrepareWeightForCpu(q4_1).dtype(), DType::kQ4_1);
  const Tensor f = Tensor::Zeros(DType::kF32, {16, 64});
  EXPECT_EQ(PrepareWeightForCpu(f).raw(), f.raw());
}

TEST_P(QuantRepackTest, DTypeIsNamedButNotParsed) {
  const std::string name = std::string(DTypeName(stored())) + "_R8";
  EXPECT_EQ(std::string(DTypeName(repacked())), name);
  EXPECT_EQ(DTypeBytes(repacked(), 64), DTypeBytes(stored(), 64));
  EXPECT_FALSE(ParseDType(name).ok());
  EXPECT_FALSE(ParseAnyDType(name).ok());
  EXPECT_TRUE(IsSupportedWeightDType(repacked()));
}

}  // namespace
}  // namespace retort::cpu
