#include "kernels/cpu/ops.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using testing::MakeTensor;
using testing::RandomVector;
using testing::TensorValues;

TEST(RmsNormTest, MatchesF64Loop) {
  for (int64_t rows : {1, 3, 400}) {  // 400 x 200 takes the parallel path
    const int64_t dim = 200;
    auto x = RandomVector(rows * dim, 1, 3.f);
    auto w = RandomVector(dim, 2);
    std::vector<float> y(rows * dim);
    RmsNorm(x.data(), rows, dim, w.data(), 1e-6f, y.data());
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
      double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
      for (int64_t i = 0; i < dim; ++i) {
        ASSERT_NEAR(y[r * dim + i], w[i] * x[r * dim + i] * inv, 1e-5);
      }
    }
    // In place gives the same result.
    RmsNorm(x.data(), rows, dim, w.data(), 1e-6f, x.data());
    EXPECT_EQ(x, y);
  }
}

TEST(SiluMulTest, MatchesF64Loop) {
  for (int64_t n : {5, 37, 100000}) {
    auto g = RandomVector(n, 3, 30.f);  // includes saturated exp arguments
    auto u = RandomVector(n, 4);
    std::vector<float> out(n);
    SiluMul(g.data(), u.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      double gd = g[i];
      double ref = gd / (1.0 + std::exp(-gd)) * u[i];
      ASSERT_NEAR(out[i], ref, 2e-6 * (1 + std::abs(ref))) << "g=" << g[i];
    }
  }
}

TEST(AddTest, Adds) {
  auto a = RandomVector(70000, 5), b = RandomVector(70000, 6);
  std::vector<float> out(70000);
  Add(a.data(), b.data(), 70000, out.data());
  for (int i = 0; i < 70000; ++i) ASSERT_EQ(out[i], a[i] + b[i]);
}

TEST(SoftmaxTest, MatchesF64Loop) {
  const int64_t rows = 3, cols = 50;
  auto x = RandomVector(rows * cols, 7, 20.f);
  auto y = x;
  Softmax(y.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t i = 0; i < cols; ++i) mx = std::max(mx, static_cast<double>(x[r * cols + i]));
    for (int64_t i = 0; i < cols; ++i) sum += std::exp(x[r * cols + i] - mx);
    for (int64_t i = 0; i < cols; ++i) {
      ASSERT_NEAR(y[r * cols + i], std::exp(x[r * cols + i] - mx) / sum, 1e-6);
    }
  }
  std::vector<float> masked(4, -INFINITY);
  Softmax(masked.data(), 1, 4);
  EXPECT_EQ(masked, std::vector<float>(4, 0.f));
}

TEST(EmbeddingTest, LooksUpRowsOfEachDType) {
  const int64_t vocab = 11, dim = 13;
  auto values = RandomVector(vocab * dim, 8);
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    Tensor table = MakeTensor(t, {vocab, dim}, values);
    auto ref = TensorValues(table);
    std::vector<int32_t> ids = {3, 0, 10, 3};
    std::vector<float> out(ids.size() * dim);
    ASSERT_TRUE(Embedding(table, ids.data(), ids.size(), out.data()).ok());
    for (size_t i = 0; i < ids.size(); ++i) {
      for (int64_t c = 0; c < dim; ++c)
        ASSERT_EQ(out[i * dim + c], static_cast<float>(ref[ids[i] * dim + c]));
    }
  }
}

TEST(EmbeddingTest, RejectsOutOfRangeIds) {
  Tensor table = Tensor::Zeros(DType::kF32, {5, 2});
  std::vector<float> out(4);
  for (int32_t bad : {-1, 5}) {
    int32_t ids[2] = {1, bad};
    auto st = Embedding(table, ids, 2, out.data());
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find(std::to_string(bad)), std::string::npos) << st.message();
  }
}

TEST(RopeTest, HalfRotatedLayoutMatchesF64) {
  const int64_t n = 5, heads = 3, head_dim = 8, half = 4, stride = heads * head_dim + 2;
  std::vector<float> inv_freq = {1.f, 0.1f, 0.01f, 0.001f};
  std::vector<int64_t> pos = {0, 1, 7, 100, 5000};
  std::vector<float> cos(n * half), sin(n * half);
  RopeCosSin(inv_freq.data(), half, pos.data(), n, cos.data(), sin.data());
  auto x = RandomVector(n * stride, 9);
  auto y = x;
  ApplyRope(y.data(), n, heads, head_dim, stride, cos.data(), sin.data());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const int64_t base = t * stride + h * head_dim;
        // The angle as transformers forms it (f32 product), rotated in f64.
        double a = static_cast<float>(pos[t]) * inv_freq[i];
        double x1 = x[base + i], x2 = x[base + i + half];
        ASSERT_NEAR(y[base + i], x1 * std::cos(a) - x2 * std::sin(a), 1e-6);
        ASSERT_NEAR(y[base + i + half], x2 * std::cos(a) + x1 * std::sin(a), 1e-6);
      }
    }
    // The two padding floats after the heads are untouched.
    EXPECT_EQ(y[t * stride + heads * head_dim], x[t * stride + heads * head_dim]);
  }
}

}  // namespace
}  // namespace retort::cpu
