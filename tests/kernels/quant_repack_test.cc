// Q4_0 and Q8_0 weights repacked 8 rows at a time (kernels/cpu/
// quant_repack.h: same dtype, WeightLayout::kR8), each test run for both:
//  * the repacked blocks dequantize to exactly the stored values;
//  * the decode GEMV matches the scalar reference of the same quantized math
//    (QuantDotReference on the stored row against the input quantized to Q8_0)
//    to f32 rounding, under every integer-dot path the CPU has, with bias,
//    any m up to kQuantGemvMaxRows and any sub-range of rows;
//  * results are bit-identical between 1 and 2 threads and between paths;
//  * the prefill path (m > kQuantGemvMaxRows) gives the bits of the stored
//    type's;
//  * PrepareWeightForCpu repacks only what it can, RETORT_NO_REPACK turns it
//    off, the repacked tensor keeps the stored dtype (there is no R8 dtype),
//    and MatMul refuses the kR8 layout where it cannot hold;
//  * the CPU backend runs a repacked linear with the layout (the bits of
//    cpu::MatMul on the repacked weight) and keeps embedding tables as stored.
#include "kernels/cpu/quant_repack.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/ggml_blocks.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_matmul.h"
#include "tests/kernels/quant_test_util.h"
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

// y = x · w^T (+ bias), `w` as stored.
std::vector<float> MatMulY(const float* x, int64_t m, const Tensor& w, const float* bias) {
  std::vector<float> y(m * w.dim(0), -1.f);
  EXPECT_TRUE(MatMul(x, m, w, bias, y.data()).ok());
  return y;
}
// The same with a prepared (possibly repacked) weight, in its layout.
std::vector<float> MatMulY(const float* x, int64_t m, const PreparedWeight& w, const float* bias) {
  std::vector<float> y(m * w.tensor.dim(0), -1.f);
  EXPECT_TRUE(MatMul(x, m, w.tensor, w.layout, bias, y.data()).ok());
  return y;
}

// Sets an environment variable for one scope (restores it after).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// Each test runs for the stored type (param), plain and repacked.
class QuantRepackTest : public ::testing::TestWithParam<DType> {
 protected:
  DType stored() const { return GetParam(); }
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
  const PreparedWeight r = PrepareWeightForCpu(w);
  ASSERT_EQ(r.layout, WeightLayout::kR8);
  ASSERT_EQ(r.tensor.dtype(), stored());
  EXPECT_EQ(r.tensor.nbytes(), w.nbytes());
  EXPECT_NE(std::memcmp(r.tensor.raw(), w.raw(), w.nbytes()), 0);  // really rearranged
  std::vector<float> want(n * k), got(n * k);
  DequantizeRows(stored(), WeightLayout::kRowMajor, w.raw(), k, 0, n, want.data());
  DequantizeRows(stored(), WeightLayout::kR8, r.tensor.raw(), k, 0, n, got.data());
  EXPECT_EQ(want, got);
  // A sub-range starting inside a group.
  std::vector<float> part(5 * k);
  DequantizeRows(stored(), WeightLayout::kR8, r.tensor.raw(), k, 11, 5, part.data());
  EXPECT_EQ(std::vector<float>(want.begin() + 11 * k, want.begin() + 16 * k), part);
}

TEST_P(QuantRepackTest, GemvMatchesScalarReference) {
  for (int64_t k : {32, 96, 576}) {
    for (int64_t n : {8, 40}) {
      for (int64_t m : {int64_t{1}, int64_t{3}, kQuantGemvMaxRows}) {
        SCOPED_TRACE("k " + std::to_string(k) + " n " + std::to_string(n) + " m " +
                     std::to_string(m));
        const Tensor w = Random(n, k, static_cast<uint32_t>(k + n));
        const PreparedWeight r = PrepareWeightForCpu(w);
        ASSERT_EQ(r.layout, WeightLayout::kR8);
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
            DequantizeRows(stored(), WeightLayout::kRowMajor, w.raw(), k, o, 1, deq.data());
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
  const PreparedWeight r = PrepareWeightForCpu(Random(n, k, 3));
  ASSERT_EQ(r.layout, WeightLayout::kR8);
  const std::vector<float> x = RandomVector(m * k, 4);
  std::vector<char> act(m * ActivationRowBytes(DType::kQ8_0, k));
  const size_t arb = ActivationRowBytes(DType::kQ8_0, k);
  for (int64_t i = 0; i < m; ++i)
    QuantizeActivationRow(DType::kQ8_0, x.data() + i * k, act.data() + i * arb, k);
  ForEachPath([&] {
    std::vector<float> full(m * n), parts(m * n, -1.f);
    QuantGemvRows(stored(), WeightLayout::kR8, r.tensor.raw(), k, act.data(), arb, m, nullptr,
                  full.data(), n, 0, n);
    for (int64_t lo : {0, 3, 13, 21, 37}) {
      const int64_t hi = lo == 37 ? n : (lo == 0 ? 3 : lo == 3 ? 13 : lo == 13 ? 21 : 37);
      QuantGemvRows(stored(), WeightLayout::kR8, r.tensor.raw(), k, act.data(), arb, m, nullptr,
                    parts.data(), n, lo, hi);
    }
    EXPECT_EQ(full, parts);
  });
}

TEST_P(QuantRepackTest, SameBitsOnOneAndTwoThreadsAndOnEveryPath) {
  const int64_t n = 576, k = 1536;
  const PreparedWeight r = PrepareWeightForCpu(Random(n, k, 5));
  ASSERT_EQ(r.layout, WeightLayout::kR8);
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
  const PreparedWeight r = PrepareWeightForCpu(w);
  ASSERT_EQ(r.layout, WeightLayout::kR8);
  const std::vector<float> x = RandomVector(m * k, 9);
  const std::vector<float> bias = RandomVector(n, 10);
  EXPECT_EQ(MatMulY(x.data(), m, w, bias.data()), MatMulY(x.data(), m, r, bias.data()));
}

TEST_P(QuantRepackTest, OnlyRepacksWhatItCan) {
  EXPECT_TRUE(CanRepackForCpu(Random(16, 64, 1)));
  const Tensor odd = Random(12, 64, 1);  // rows not a multiple of 8
  EXPECT_FALSE(CanRepackForCpu(odd));
  const PreparedWeight p = PrepareWeightForCpu(odd);
  EXPECT_EQ(p.layout, WeightLayout::kRowMajor);
  EXPECT_EQ(p.tensor.dtype(), stored());
  EXPECT_EQ(p.tensor.raw(), odd.raw());
  const Tensor q4_1 = Tensor::Zeros(DType::kQ4_1, {16, 64});
  EXPECT_EQ(PrepareWeightForCpu(q4_1).layout, WeightLayout::kRowMajor);
  EXPECT_EQ(PrepareWeightForCpu(q4_1).tensor.dtype(), DType::kQ4_1);
  const Tensor f = Tensor::Zeros(DType::kF32, {16, 64});
  EXPECT_EQ(PrepareWeightForCpu(f).layout, WeightLayout::kRowMajor);
  EXPECT_EQ(PrepareWeightForCpu(f).tensor.raw(), f.raw());
}

TEST_P(QuantRepackTest, NoRepackEnvironmentVariableTurnsItOff) {
  const Tensor w = Random(16, 64, 2);
  {
    ScopedEnv env("RETORT_NO_REPACK", "1");
    const PreparedWeight p = PrepareWeightForCpu(w);
    EXPECT_EQ(p.layout, WeightLayout::kRowMajor);
    EXPECT_EQ(p.tensor.raw(), w.raw());
  }
  {
    ScopedEnv env("RETORT_NO_REPACK", "0");  // "0" (and empty) leave it on
    EXPECT_EQ(PrepareWeightForCpu(w).layout, WeightLayout::kR8);
  }
  {
    ScopedEnv env("RETORT_NO_REPACK", "");
    EXPECT_EQ(PrepareWeightForCpu(w).layout, WeightLayout::kR8);
  }
}

// The repacked layout is the CPU kernels' own: no dtype names it, the tensor
// keeps its stored dtype and bytes count, and MatMul refuses the layout for
// weights that cannot have it (instead of reading them wrongly).
TEST_P(QuantRepackTest, RepackedWeightKeepsTheStoredDType) {
  const std::string name = std::string(DTypeName(stored())) + "_R8";
  EXPECT_FALSE(ParseDType(name).ok());
  EXPECT_FALSE(ParseAnyDType(name).ok());
  const Tensor w = Random(16, 64, 1);
  const PreparedWeight r = PrepareWeightForCpu(w);
  EXPECT_EQ(r.layout, WeightLayout::kR8);
  EXPECT_EQ(r.tensor.dtype(), stored());
  EXPECT_EQ(r.tensor.shape(), w.shape());
  EXPECT_EQ(r.tensor.nbytes(), w.nbytes());
  EXPECT_TRUE(IsValidWeightLayout(stored(), WeightLayout::kR8, 16, 64));
  EXPECT_FALSE(IsValidWeightLayout(stored(), WeightLayout::kR8, 12, 64));
  EXPECT_FALSE(IsValidWeightLayout(DType::kQ4_1, WeightLayout::kR8, 16, 64));
  EXPECT_TRUE(IsValidWeightLayout(DType::kQ4_1, WeightLayout::kRowMajor, 16, 64));

  const std::vector<float> x = RandomVector(64, 3);
  std::vector<float> y(16);
  const Tensor odd = Random(12, 64, 1);
  EXPECT_FALSE(MatMul(x.data(), 1, odd, WeightLayout::kR8, nullptr, y.data()).ok());
  const Tensor q4_1 = Tensor::Zeros(DType::kQ4_1, {16, 64});
  EXPECT_FALSE(MatMul(x.data(), 1, q4_1, WeightLayout::kR8, nullptr, y.data()).ok());
  const Tensor f = Tensor::Zeros(DType::kF32, {16, 64});
  EXPECT_FALSE(MatMul(x.data(), 1, f, WeightLayout::kR8, nullptr, y.data()).ok());
  EXPECT_TRUE(MatMul(x.data(), 1, r.tensor, r.layout, nullptr, y.data()).ok());
}

// Through kernels/backend.h: a linear is repacked and run in its layout (the
// bits of cpu::MatMul on the repacked weight, decode and prefill, alone and in
// a group), an embedding table stays as stored, and a repacked linear is
// refused as an embedding table.
TEST_P(QuantRepackTest, CpuBackendRunsLinearsRepacked) {
  const int64_t n = 40, k = 96;
  const Tensor w = Random(n, k, 11);
  const PreparedWeight r = PrepareWeightForCpu(w);
  ASSERT_EQ(r.layout, WeightLayout::kR8);
  Backend& be = ::retort::CpuBackend();
  absl::StatusOr<std::shared_ptr<const DeviceWeight>> lin = be.PrepareWeight(w, WeightUse::kLinear);
  ASSERT_TRUE(lin.ok()) << lin.status();
  EXPECT_EQ((*lin)->bytes(), w.nbytes());
  const std::vector<float> bias = RandomVector(n, 12);
  for (int64_t m : {int64_t{1}, int64_t{3}, kQuantGemvMaxRows + 5}) {
    SCOPED_TRACE("m " + std::to_string(m));
    const std::vector<float> x = RandomVector(m * k, static_cast<uint32_t>(13 + m));
    const std::vector<float> want = MatMulY(x.data(), m, r, bias.data());
    std::vector<float> got(m * n, -1.f), got2(m * n, -1.f);
    ASSERT_TRUE(be.MatMul(x.data(), m, **lin, bias.data(), got.data()).ok());
    EXPECT_EQ(got, want);
    ASSERT_TRUE(be.MatMulGroup(x.data(), m, k,
                               {::retort::MatMulOutput{lin->get(), bias.data(), got2.data()}})
                    .ok());
    EXPECT_EQ(got2, want);
  }

  absl::StatusOr<std::shared_ptr<const DeviceWeight>> table =
      be.PrepareWeight(w, WeightUse::kEmbedding);
  ASSERT_TRUE(table.ok()) << table.status();
  const int32_t ids[] = {0, 9, 39};
  std::vector<float> rows(3 * k), want(k);
  ASSERT_TRUE(be.Embedding(**table, ids, 3, rows.data()).ok());
  for (int i = 0; i < 3; ++i) {
    DequantizeRows(stored(), WeightLayout::kRowMajor, w.raw(), k, ids[i], 1, want.data());
    EXPECT_EQ(std::vector<float>(rows.begin() + i * k, rows.begin() + (i + 1) * k), want);
  }
  EXPECT_FALSE(be.Embedding(**lin, ids, 3, rows.data()).ok());
}

}  // namespace
}  // namespace retort::cpu
