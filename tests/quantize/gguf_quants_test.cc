// ggml block encoders: the legacy types byte for byte against gguf-py's
// quantize (tests/reference/ggml_blocks/make_fixtures.py), every type for
// round-trip error, edge rows, bad input and the effect of importance weights.
#include "quantize/gguf_quants.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/dtype.h"
#include "core/ggml_blocks.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

namespace retort::ggml {
namespace {

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// u32 rows, u32 cols, then the payload.
struct Matrix {
  uint32_t rows = 0, cols = 0;
  std::vector<uint8_t> data;
};

Matrix ReadMatrix(const std::string& name) {
  const std::string path = "tests/reference/ggml_blocks/" + name;
  std::vector<uint8_t> bytes = ReadFile(path);
  Matrix m;
  if (bytes.size() < 8) {
    ADD_FAILURE() << "missing fixture " << path;
    return m;
  }
  std::memcpy(&m.rows, bytes.data(), 4);
  std::memcpy(&m.cols, bytes.data() + 4, 4);
  m.data.assign(bytes.begin() + 8, bytes.end());
  return m;
}

std::vector<float> Floats(const Matrix& m) {
  std::vector<float> f(m.data.size() / 4);
  std::memcpy(f.data(), m.data.data(), f.size() * 4);
  return f;
}

std::vector<uint8_t> Quantize(DType type, const std::vector<float>& x,
                              const float* importance = nullptr) {
  std::vector<uint8_t> q(DTypeBytes(type, static_cast<int64_t>(x.size())));
  absl::Status s =
      QuantizeRow(type, x.data(), static_cast<int64_t>(x.size()), q.data(), importance);
  EXPECT_TRUE(s.ok()) << s;
  return q;
}

std::vector<float> RoundTrip(DType type, const std::vector<float>& x,
                             const float* importance = nullptr) {
  std::vector<uint8_t> q = Quantize(type, x, importance);
  std::vector<float> y(x.size());
  DequantizeRow(type, q.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

double Rmse(const std::vector<float>& x, const std::vector<float>& y, const float* w = nullptr) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double wi = w ? w[i] : 1.0;
    num += wi * (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += wi;
  }
  return std::sqrt(num / den);
}

std::vector<float> Gaussian(int64_t n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

class LegacyEncodeTest : public ::testing::TestWithParam<DType> {};

TEST_P(LegacyEncodeTest, BitExactWithGgufPy) {
  const DType type = GetParam();
  const std::string name(DTypeName(type));
  Matrix input = ReadMatrix("encode_input.bin");
  Matrix expected = ReadMatrix("encode_" + name + ".bin");
  ASSERT_GT(input.rows, 0u);
  ASSERT_EQ(expected.rows, input.rows);
  const std::vector<float> x = Floats(input);
  const size_t row_bytes = DTypeBytes(type, input.cols);
  ASSERT_EQ(expected.cols, row_bytes);
  for (uint32_t r = 0; r < input.rows; ++r) {
    std::vector<uint8_t> got(row_bytes);
    if (type == DType::kBF16) {
      ConvertFromF32(type, x.data() + size_t{r} * input.cols, got.data(), input.cols);
    } else {
      ASSERT_TRUE(
          QuantizeRow(type, x.data() + size_t{r} * input.cols, input.cols, got.data()).ok());
    }
    const uint8_t* want = expected.data.data() + r * row_bytes;
    for (size_t b = 0; b < row_bytes; ++b) {
      if (got[b] != want[b]) {
        ADD_FAILURE() << name << " row " << r << " byte " << b << " (block "
                      << b / DTypeBlockBytes(type) << "): got " << int(got[b]) << " expected "
                      << int(want[b]);
        break;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, LegacyEncodeTest,
                         ::testing::Values(DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                                           DType::kQ8_0, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// Against ggml's own k-quant encoders (make_ggml_fixtures.py): Q3_K and Q6_K
// match byte for byte without importance; Q2_K, Q4_K and Q5_K use their own
// searches, so for every type compare the reconstruction error on the random
// rows (0-5) of encode_input.bin, weighted by the importance when given.
TEST(GgufQuantsTest, KQuantsAgainstGgml) {
  Matrix input = ReadMatrix("encode_input.bin");
  ASSERT_GT(input.rows, 6u);
  const std::vector<float> x = Floats(input);
  std::vector<uint8_t> imatrix_bytes = ReadFile("tests/reference/ggml_blocks/ggml_imatrix.bin");
  ASSERT_EQ(imatrix_bytes.size(), 4 * size_t{input.cols});
  std::vector<float> imatrix(input.cols);
  std::memcpy(imatrix.data(), imatrix_bytes.data(), imatrix_bytes.size());
  struct Case {
    DType type;
    bool bit_exact;
    double max_ratio, max_ratio_imatrix;  // our error / ggml's
  };
  const Case cases[] = {{DType::kQ2_K, false, 1.05, 1.10},
                        {DType::kQ3_K, true, 1.0, 1.15},
                        {DType::kQ4_K, false, 1.05, 1.10},
                        {DType::kQ5_K, false, 1.05, 1.10},
                        {DType::kQ6_K, true, 1.0, 1.05}};
  for (const Case& c : cases) {
    const std::string name(DTypeName(c.type));
    const size_t row_bytes = DTypeBytes(c.type, input.cols);
    for (bool use_imatrix : {false, true}) {
      Matrix ref = ReadMatrix("ggml_encode_" + name + (use_imatrix ? "_imatrix" : "") + ".bin");
      ASSERT_EQ(ref.rows, input.rows);
      ASSERT_EQ(ref.cols, row_bytes);
      const float* imp = use_imatrix ? imatrix.data() : nullptr;
      double ours = 0, theirs = 0;
      for (uint32_t r = 0; r < input.rows; ++r) {
        const float* row = x.data() + size_t{r} * input.cols;
        std::vector<uint8_t> q(row_bytes);
        ASSERT_TRUE(QuantizeRow(c.type, row, input.cols, q.data(), imp).ok());
        const uint8_t* want = ref.data.data() + r * row_bytes;
        if (c.bit_exact && !use_imatrix) {
          EXPECT_EQ(std::memcmp(q.data(), want, row_bytes), 0) << name << " row " << r;
        }
        if (r >= 6) continue;
        std::vector<float> a(input.cols), b(input.cols);
        DequantizeRow(c.type, q.data(), a.data(), input.cols);
        DequantizeRow(c.type, want, b.data(), input.cols);
        double sx2 = 0;
        for (uint32_t i = 0; i < input.cols; ++i) sx2 += double(row[i]) * row[i];
        for (uint32_t i = 0; i < input.cols; ++i) {
          const double w = imp ? imp[i] : 1.0;
          ours += w * (row[i] - a[i]) * (row[i] - a[i]) / sx2;
          theirs += w * (row[i] - b[i]) * (row[i] - b[i]) / sx2;
        }
      }
      const double ratio = std::sqrt(ours / theirs);
      EXPECT_LE(ratio, use_imatrix ? c.max_ratio_imatrix : c.max_ratio)
          << name << (use_imatrix ? " with imatrix" : "") << ": error " << ratio << "x ggml's";
      std::printf("%s%s: error %.4fx ggml's\n", name.c_str(), use_imatrix ? " (imatrix)" : "",
                  ratio);
    }
  }
}

struct ErrorBound {
  DType type;
  double max_rel_rmse;  // RMSE / sigma on Gaussian rows
};

void PrintTo(const ErrorBound& b, std::ostream* os) { *os << DTypeName(b.type); }

class RoundTripTest : public ::testing::TestWithParam<ErrorBound> {};

// Bounds sit about 20% above what these encoders reach (a uniform quantizer
// over ~+-3 sigma with b bits gives roughly 6 / 2^b / sqrt(12)).
TEST_P(RoundTripTest, ErrorWithinBound) {
  const ErrorBound bound = GetParam();
  for (float sigma : {1.f, 0.02f, 300.f}) {
    const std::vector<float> x = Gaussian(4096, sigma, 7);
    const std::vector<float> y = RoundTrip(bound.type, x);
    const double rel = Rmse(x, y) / sigma;
    EXPECT_LT(rel, bound.max_rel_rmse) << DTypeName(bound.type) << " sigma " << sigma;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Types, RoundTripTest,
    ::testing::Values(ErrorBound{DType::kQ8_0, 0.006}, ErrorBound{DType::kQ8_1, 0.006},
                      ErrorBound{DType::kQ8_K, 0.008}, ErrorBound{DType::kQ6_K, 0.02},
                      ErrorBound{DType::kQ5_K, 0.04}, ErrorBound{DType::kQ5_1, 0.045},
                      ErrorBound{DType::kQ5_0, 0.05}, ErrorBound{DType::kQ4_K, 0.08},
                      ErrorBound{DType::kQ4_1, 0.09}, ErrorBound{DType::kQ4_0, 0.1},
                      ErrorBound{DType::kQ3_K, 0.2}, ErrorBound{DType::kQ2_K, 0.4}),
    [](const auto& info) { return std::string(DTypeName(info.param.type)); });

TEST(GgufQuantsTest, KQuantsBeatTheirLegacyPeers) {
  const std::vector<float> x = Gaussian(8192, 1.f, 11);
  EXPECT_LT(Rmse(x, RoundTrip(DType::kQ4_K, x)), Rmse(x, RoundTrip(DType::kQ4_0, x)));
  EXPECT_LT(Rmse(x, RoundTrip(DType::kQ5_K, x)), Rmse(x, RoundTrip(DType::kQ5_0, x)));
  EXPECT_LT(Rmse(x, RoundTrip(DType::kQ6_K, x)), Rmse(x, RoundTrip(DType::kQ5_K, x)));
  EXPECT_LT(Rmse(x, RoundTrip(DType::kQ3_K, x)), Rmse(x, RoundTrip(DType::kQ2_K, x)));
  EXPECT_LT(Rmse(x, RoundTrip(DType::kQ4_K, x)), Rmse(x, RoundTrip(DType::kQ3_K, x)));
}

const DType kAllTypes[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                           DType::kQ8_0, DType::kQ8_1, DType::kQ2_K, DType::kQ3_K,
                           DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kQ8_K};

TEST(GgufQuantsTest, EdgeRows) {
  const int64_t n = 512;
  for (DType type : kAllTypes) {
    SCOPED_TRACE(std::string(DTypeName(type)));
    // All zeros decode to zeros.
    std::vector<float> zeros(n, 0.f);
    for (float v : RoundTrip(type, zeros)) ASSERT_EQ(v, 0.f);
    // A constant row stays close to the constant.
    for (float c : {0.75f, -2.5f}) {
      std::vector<float> constant(n, c);
      std::vector<float> y = RoundTrip(type, constant);
      for (float v : y) ASSERT_NEAR(v, c, 0.15 * std::fabs(c));
    }
    // Scale invariance across magnitudes f16 scales can hold.
    for (float sigma : {1e-3f, 1e3f}) {
      std::vector<float> x = Gaussian(n, sigma, 3);
      EXPECT_LT(Rmse(x, RoundTrip(type, x)) / sigma, 0.5);
    }
    // A single outlier: reproduced to a few percent, the rest stays bounded.
    std::vector<float> outlier = Gaussian(n, 0.01f, 5);
    outlier[300] = 10.f;
    std::vector<float> y = RoundTrip(type, outlier);
    EXPECT_NEAR(y[300], 10.f, 1.0f);
    for (int i = 0; i < n; ++i) ASSERT_LT(std::fabs(y[i] - outlier[i]), 1.5f) << i;
  }
}

TEST(GgufQuantsTest, Q8_KBlockSums) {
  const std::vector<float> x = Gaussian(512, 2.f, 13);
  std::vector<uint8_t> q = Quantize(DType::kQ8_K, x);
  const auto* b = reinterpret_cast<const BlockQ8_K*>(q.data());
  for (int blk = 0; blk < 2; ++blk) {
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += b[blk].qs[16 * g + j];
      EXPECT_EQ(b[blk].bsums[g], sum);
    }
  }
  std::vector<uint8_t> q1 = Quantize(DType::kQ8_1, x);
  const auto* b1 = reinterpret_cast<const BlockQ8_1*>(q1.data());
  int sum = 0;
  for (int j = 0; j < 32; ++j) sum += b1[0].qs[j];
  EXPECT_NEAR(F16ToF32(b1[0].s), sum * F16ToF32(b1[0].d),
              0.01 * std::fabs(sum * F16ToF32(b1[0].d)) + 1e-3);
}

TEST(GgufQuantsTest, BadInput) {
  std::vector<float> x(300, 1.f);
  std::vector<uint8_t> out(4096);
  for (DType type : kAllTypes) {
    absl::Status s = QuantizeRow(type, x.data(), 300, out.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << DTypeName(type);
    EXPECT_NE(std::string(s.message()).find("block size"), std::string::npos) << s;
  }
  EXPECT_FALSE(QuantizeRow(DType::kQ4_0, x.data(), 0, out.data()).ok());
  EXPECT_FALSE(QuantizeRow(DType::kF16, x.data(), 256, out.data()).ok());
  x[17] = std::nanf("");
  EXPECT_FALSE(QuantizeRow(DType::kQ4_K, x.data(), 256, out.data()).ok());
  x[17] = INFINITY;
  EXPECT_FALSE(QuantizeRow(DType::kQ8_0, x.data(), 256, out.data()).ok());
  x[17] = 1.f;
  std::vector<float> importance(256, 1.f);
  importance[5] = -1.f;
  EXPECT_FALSE(QuantizeRow(DType::kQ4_K, x.data(), 256, out.data(), importance.data()).ok());

  Tensor bad_cols = Tensor::Zeros(DType::kF32, {4, 100});
  absl::StatusOr<Tensor> t = QuantizeTensor(bad_cols, DType::kQ8_0);
  EXPECT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("[4, 100]"), std::string::npos) << t.status();
  EXPECT_FALSE(QuantizeTensor(Tensor::Zeros(DType::kI32, {2, 256}), DType::kQ4_K).ok());
  EXPECT_FALSE(QuantizeTensor(Tensor::Zeros(DType::kF32, {2, 256}), DType::kF16).ok());
  Tensor nan_row = Tensor::Zeros(DType::kF32, {3, 256});
  nan_row.mutable_data<float>()[2 * 256 + 9] = std::nanf("");
  t = QuantizeTensor(nan_row, DType::kQ6_K);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("row 2"), std::string::npos) << t.status();
}

TEST(GgufQuantsTest, TensorMatchesRows) {
  const int64_t rows = 37, cols = 512;
  const std::vector<float> x = Gaussian(rows * cols, 0.05f, 17);
  Tensor t = Tensor::Zeros(DType::kF32, {rows, cols});
  std::memcpy(t.mutable_data<float>(), x.data(), x.size() * 4);
  std::vector<float> importance = Gaussian(cols, 1.f, 19);
  for (float& v : importance) v = v * v;
  for (DType type : kAllTypes) {
    for (const float* imp :
         {static_cast<const float*>(nullptr), static_cast<const float*>(importance.data())}) {
      absl::StatusOr<Tensor> q = QuantizeTensor(t, type, imp);
      ASSERT_TRUE(q.ok()) << q.status();
      EXPECT_EQ(q->dtype(), type);
      EXPECT_EQ(q->shape(), t.shape());
      const size_t row_bytes = DTypeBytes(type, cols);
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<uint8_t> one(row_bytes);
        ASSERT_TRUE(QuantizeRow(type, x.data() + r * cols, cols, one.data(), imp).ok());
        ASSERT_EQ(std::memcmp(one.data(), static_cast<const uint8_t*>(q->raw()) + r * row_bytes,
                              row_bytes),
                  0)
            << DTypeName(type) << " row " << r;
      }
    }
  }
  // A BF16 source quantizes as its f32 values do.
  Tensor bf16 = t.To(DType::kBF16);
  Tensor back = bf16.To(DType::kF32);
  absl::StatusOr<Tensor> from_bf16 = QuantizeTensor(bf16, DType::kQ4_K);
  absl::StatusOr<Tensor> from_f32 = QuantizeTensor(back, DType::kQ4_K);
  ASSERT_TRUE(from_bf16.ok() && from_f32.ok());
  EXPECT_EQ(std::memcmp(from_bf16->raw(), from_f32->raw(), from_f32->nbytes()), 0);
}

// Importance on an eighth of the columns (100 against 0.01 elsewhere): the
// weighted search should fit those columns much better than the plain rule;
// with a realistic random imatrix it should still win.
TEST(GgufQuantsTest, ImportanceLowersWeightedError) {
  const int64_t n = 2048;
  const std::vector<float> x = Gaussian(n, 1.f, 23);
  std::vector<float> sparse(n, 0.01f), dense(n);
  std::mt19937 rng(29);
  for (int64_t i = 0; i < n; ++i)
    if (rng() % 8 == 0) sparse[i] = 100.f;
  const std::vector<float> g = Gaussian(n, 1.f, 37);
  for (int64_t i = 0; i < n; ++i) dense[i] = g[i] * g[i];
  for (DType type : {DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K,
                     DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1}) {
    double plain = Rmse(x, RoundTrip(type, x), sparse.data());
    double weighted = Rmse(x, RoundTrip(type, x, sparse.data()), sparse.data());
    EXPECT_LT(weighted, 0.8 * plain)
        << DTypeName(type) << " sparse: plain " << plain << " weighted " << weighted;
    plain = Rmse(x, RoundTrip(type, x), dense.data());
    weighted = Rmse(x, RoundTrip(type, x, dense.data()), dense.data());
    EXPECT_LT(weighted, 0.97 * plain)
        << DTypeName(type) << " dense: plain " << plain << " weighted " << weighted;
  }
  // Uniform importance is no worse than a few percent off the plain search.
  std::vector<float> ones(n, 1.f);
  const std::vector<float> u = Gaussian(n, 1.f, 31);
  for (DType type : {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    EXPECT_LT(Rmse(u, RoundTrip(type, u, ones.data())), 1.05 * Rmse(u, RoundTrip(type, u)))
        << DTypeName(type);
  }
}

}  // namespace
}  // namespace retort::ggml
