#include <cmath>
#include <tuple>

#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using testing::MakeTensor;
using testing::RandomVector;
using testing::TensorValues;

// Plain f64 reference of y = x · w^T + bias.
std::vector<double> Reference(const std::vector<float>& x, int64_t m, const Tensor& w,
                              const std::vector<float>* bias) {
  const int64_t n = w.dim(0), k = w.dim(1);
  std::vector<double> wv = TensorValues(w), y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double s = bias ? (*bias)[r] : 0.0;
      for (int64_t j = 0; j < k; ++j) s += static_cast<double>(x[i * k + j]) * wv[r * k + j];
      y[i * n + r] = s;
    }
  }
  return y;
}

class MatMulTest
    : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t, int64_t, bool>> {};

TEST_P(MatMulTest, MatchesF64Loop) {
  auto [dtype, m, n, k, with_bias] = GetParam();
  auto x = RandomVector(m * k, 1);
  Tensor w = MakeTensor(dtype, {n, k}, RandomVector(n * k, 2));
  auto bias = RandomVector(n, 3);
  std::vector<float> y(m * n, 123.f);
  ASSERT_TRUE(MatMul(x.data(), m, w, with_bias ? bias.data() : nullptr, y.data()).ok());
  auto ref = Reference(x, m, w, with_bias ? &bias : nullptr);
  for (int64_t i = 0; i < m * n; ++i) {
    ASSERT_NEAR(y[i], ref[i], 1e-5 * std::sqrt(static_cast<double>(k)) + 1e-5 * std::abs(ref[i]))
        << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatMulTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values<int64_t>(1, 3, 4, 5, 37),   // GEMV and GEMM paths
                       ::testing::Values<int64_t>(1, 7, 70, 301),    // row tails, several blocks
                       ::testing::Values<int64_t>(8, 29, 96, 1030),  // vector tails, big k
                       ::testing::Bool()));

TEST(MatMulGroupTest, SharesInputAcrossOutputs) {
  const int64_t m = 2, k = 40;
  auto x = RandomVector(m * k, 4);
  Tensor a = MakeTensor(DType::kBF16, {24, k}, RandomVector(24 * k, 5));
  Tensor b = MakeTensor(DType::kF32, {9, k}, RandomVector(9 * k, 6));
  auto bias = RandomVector(9, 7);
  std::vector<float> ya(m * 24), yb(m * 9);
  for (int64_t rows : {m, int64_t{20}}) {
    auto xx = RandomVector(rows * k, 8);
    ya.assign(rows * 24, 0.f);
    yb.assign(rows * 9, 0.f);
    ASSERT_TRUE(
        MatMulGroup(xx.data(), rows, k, {{&a, nullptr, ya.data()}, {&b, bias.data(), yb.data()}})
            .ok());
    auto ra = Reference(xx, rows, a, nullptr);
    auto rb = Reference(xx, rows, b, &bias);
    for (size_t i = 0; i < ra.size(); ++i) ASSERT_NEAR(ya[i], ra[i], 1e-4);
    for (size_t i = 0; i < rb.size(); ++i) ASSERT_NEAR(yb[i], rb[i], 1e-4);
  }
}

TEST(MatMulTest, SameResultOnOneAndTwoThreads) {
  const int64_t m = 17, n = 300, k = 64;
  auto x = RandomVector(m * k, 9);
  Tensor w = MakeTensor(DType::kBF16, {n, k}, RandomVector(n * k, 10));
  std::vector<float> y1(m * n), y2(m * n);
  SetNumThreads(1);
  ASSERT_TRUE(MatMul(x.data(), m, w, nullptr, y1.data()).ok());
  SetNumThreads(2);
  ASSERT_TRUE(MatMul(x.data(), m, w, nullptr, y2.data()).ok());
  EXPECT_EQ(y1, y2);
}

TEST(MatMulTest, RejectsBadWeights) {
  std::vector<float> x(8), y(8);
  Tensor i8 = Tensor::Zeros(DType::kI8, {2, 4});
  auto st = MatMul(x.data(), 1, i8, nullptr, y.data());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("I8"), std::string::npos) << st.message();
  Tensor r3 = Tensor::Zeros(DType::kF32, {2, 2, 2});
  EXPECT_FALSE(MatMul(x.data(), 1, r3, nullptr, y.data()).ok());
  Tensor a = Tensor::Zeros(DType::kF32, {2, 4}), b = Tensor::Zeros(DType::kF32, {2, 5});
  EXPECT_FALSE(
      MatMulGroup(x.data(), 1, 4, {{&a, nullptr, y.data()}, {&b, nullptr, y.data()}}).ok());
}

TEST(RowToF32Test, WidensEachDType) {
  auto v = RandomVector(21, 11);
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    Tensor w = MakeTensor(t, {21}, v);
    std::vector<float> out(21);
    RowToF32(t, w.raw(), out.data(), 21);
    auto ref = TensorValues(w);
    for (int i = 0; i < 21; ++i) EXPECT_EQ(out[i], static_cast<float>(ref[i]));
  }
}

}  // namespace
}  // namespace retort::cpu
