// MatMul with QuantizedMatrix weights (kernels/cpu/quant_matrix_matmul.h).
//
// Every value type (int4, int8, fp8 e4m3, fp8 e5m2) x granularity (tensor,
// channel, group, block) x symmetric/asymmetric x g_idx, on shapes with
// partial groups/blocks and odd row counts, for m in {1, 2, 3, 5, 16, 17, 64}
// (GEMV and GEMM paths), with and without bias, is checked against an f64
// loop over core's DequantizeRows (the reference dequantization).
//
// Tolerance: |y - ref| <= (k + 16) * 2^-24 * S, with
//   S = sum_c |x_c| * (|w_rc| + |s_rc * z_rc|) + |bias_r|.
// That is the textbook bound of an f32 sum of k products (each product and
// partial sum rounded once, u = 2^-24) plus a few roundings of the scaling.
// The |s * z| term is there because the asymmetric GEMV computes
// s * (x.q - z * sum(x)), whose two parts can each be larger than x.w (the
// reference's own f32 rounding of w = s * (q - z) is covered by the k + 16).
// A wrong scale, zero point, group index or nibble moves a result by a
// sizeable fraction of S, far outside the bound (~1e-5 S for these k).
//
// Both builds of the GEMV (AVX2, and AVX-512 where the CPU has it, switched
// with SetQuantDotPath) are checked. Also: results do not depend on the thread count (same bits on
// 1 and 3 threads); the GEMM path's dequantization gives DequantizeRows' bits; and MatMulGroup with
// Tensor and QuantizedMatrix outputs mixed gives the same bits as separate MatMul calls.
#include "kernels/cpu/quant_matrix_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_matmul.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using testing::MakeTensor;
using testing::RandomVector;

struct Layout {
  DType value = DType::kI4;
  QuantGranularity granularity = QuantGranularity::kGroup;
  int64_t group = 0;
  bool asym = false;
  bool gidx = false;
  int64_t rows = 37, cols = 200;
};

std::string LayoutName(const Layout& l) {
  std::string s;
  switch (l.value) {
    case DType::kI4:
      s = "int4";
      break;
    case DType::kI8:
      s = "int8";
      break;
    case DType::kF8E4M3:
      s = "e4m3";
      break;
    default:
      s = "e5m2";
  }
  s += std::string("_") + QuantGranularityName(l.granularity);
  if (l.group > 0) s += std::to_string(l.group);
  s += l.asym ? "_asym" : "_sym";
  if (l.gidx) s += "_gidx";
  s += "_" + std::to_string(l.rows) + "x" + std::to_string(l.cols);
  return s;
}

void PrintTo(const Layout& l, std::ostream* os) { *os << LayoutName(l); }

// A valid random matrix of the layout: every stored byte random (fp8: the
// non-finite codes replaced), scales spread over four binades, zero points
// over the whole value range, g_idx a random act-order permutation.
QuantizedMatrix RandomMatrix(const Layout& l, uint32_t seed) {
  std::mt19937 rng(seed);
  QuantizedMatrix w;
  w.rows = l.rows;
  w.cols = l.cols;
  w.value_type = l.value;
  w.granularity = l.granularity;
  w.group_size = l.group;
  w.values = Tensor::Zeros(l.value, {l.rows, l.cols});
  auto* v = static_cast<uint8_t*>(w.values.mutable_raw());
  for (size_t i = 0; i < w.values.nbytes(); ++i) {
    uint8_t b = static_cast<uint8_t>(rng());
    if (l.value == DType::kF8E4M3 && (b & 0x7f) == 0x7f) b &= 0x80;         // NaN -> +-0
    if (l.value == DType::kF8E5M2 && ((b >> 2) & 0x1f) == 0x1f) b &= 0x83;  // inf/NaN -> subnormal
    v[i] = b;
  }
  const auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  Shape scale_shape;
  switch (l.granularity) {
    case QuantGranularity::kTensor:
      scale_shape = {1, 1};
      break;
    case QuantGranularity::kChannel:
      scale_shape = {l.rows, 1};
      break;
    case QuantGranularity::kGroup:
      scale_shape = {l.rows, ceil_div(l.cols, l.group)};
      break;
    case QuantGranularity::kBlock:
      scale_shape = {ceil_div(l.rows, l.group), ceil_div(l.cols, l.group)};
      break;
  }
  w.scales = Tensor::Zeros(DType::kF32, scale_shape);
  std::uniform_real_distribution<float> binade(-2.f, 2.f);
  float* s = w.scales.mutable_data<float>();
  for (int64_t i = 0; i < w.scales.numel(); ++i) s[i] = 0.01f * std::exp2(binade(rng));
  if (l.asym) {
    w.zero_points = Tensor::Zeros(DType::kI8, scale_shape);
    int8_t* z = w.zero_points.mutable_data<int8_t>();
    const int lo = l.value == DType::kI4 ? -8 : -128, hi = l.value == DType::kI4 ? 7 : 127;
    std::uniform_int_distribution<int> zd(lo, hi);
    for (int64_t i = 0; i < w.zero_points.numel(); ++i) z[i] = static_cast<int8_t>(zd(rng));
  }
  if (l.gidx) {
    std::vector<int32_t> perm(l.cols);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    w.g_idx = Tensor::Zeros(DType::kI32, {l.cols});
    int32_t* g = w.g_idx.mutable_data<int32_t>();
    for (int64_t c = 0; c < l.cols; ++c) g[c] = static_cast<int32_t>(perm[c] / l.group);
  }
  return w;
}

std::vector<Layout> AllLayouts() {
  std::vector<Layout> out;
  using G = QuantGranularity;
  for (DType v : {DType::kI4, DType::kI8, DType::kF8E4M3, DType::kF8E5M2}) {
    const bool is_int = v == DType::kI4 || v == DType::kI8;
    for (bool asym : {false, true}) {
      if (asym && !is_int) continue;  // zero points are for integer values
      out.push_back({v, G::kChannel, 0, asym, false, 37, 200});
      out.push_back({v, G::kChannel, 0, asym, false, 5, 202});  // cols not whole 8s
      out.push_back({v, G::kGroup, 32, asym, false, 37, 200});  // last group of 8
      out.push_back({v, G::kGroup, 128, asym, false, 41, 264});
      out.push_back({v, G::kGroup, 12, asym, false, 19, 200});  // generic GEMV path
      out.push_back({v, G::kGroup, 32, asym, true, 37, 200});   // act-order
    }
    out.push_back({v, G::kTensor, 0, false, false, 37, 200});
    out.push_back({v, G::kBlock, 128, false, false, 131, 264});  // partial tiles both ways
    out.push_back({v, G::kBlock, 16, false, false, 37, 200});
    if (!is_int || v == DType::kI8) {
      out.push_back({v, G::kTensor, 0, false, false, 9, 203});  // odd width
      out.push_back({v, G::kBlock, 16, false, false, 33, 203});
    }
  }
  return out;
}

class QuantMatrixMatMulTest : public ::testing::TestWithParam<Layout> {};

TEST_P(QuantMatrixMatMulTest, MatchesF64ReferenceOnAnyThreadCount) {
  const Layout& l = GetParam();
  const QuantizedMatrix w = RandomMatrix(l, 1234 + static_cast<uint32_t>(l.rows * l.cols));
  ASSERT_TRUE(ValidateQuantizedMatrix(w, "w").ok()) << ValidateQuantizedMatrix(w, "w");
  const int64_t n = l.rows, k = l.cols;

  std::vector<float> wf(n * k);
  DequantizeRows(w, 0, n, wf.data());
  // The GEMM path's vectorised dequantization gives the reference's bits.
  std::vector<float> fast(n * k);
  DequantizeRowsFast(w, 0, n, fast.data());
  ASSERT_EQ(std::memcmp(wf.data(), fast.data(), wf.size() * 4), 0);
  // |s * z| of every element, for the tolerance.
  std::vector<float> sz(n * k, 0.f);
  if (!w.symmetric()) {
    const int64_t sc = w.scales.dim(1);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const int64_t si = w.ScaleRow(r) * sc + w.ScaleCol(c);
        sz[r * k + c] = std::fabs(w.scales.data<float>()[si] * w.zero_points.data<int8_t>()[si]);
      }
  }

  const std::vector<float> bias = RandomVector(n, 77, 0.5f);
  for (QuantDotPath path : {QuantDotPath::kAvx2, QuantDotPath::kAvx512Vnni}) {
    if (!SetQuantDotPath(path)) continue;  // the CPU lacks it
    SCOPED_TRACE(QuantDotPathName(path));
    for (int64_t m : {1, 2, 3, 5, 16, 17, 64}) {
      const std::vector<float> x = RandomVector(m * k, 100 + static_cast<uint32_t>(m));
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        SetNumThreads(1);
        std::vector<float> y1(m * n, -1.f), y3(m * n, -2.f);
        ASSERT_TRUE(MatMul(x.data(), m, w, b, y1.data()).ok());
        SetNumThreads(3);
        ASSERT_TRUE(MatMul(x.data(), m, w, b, y3.data()).ok());
        ASSERT_EQ(std::memcmp(y1.data(), y3.data(), y1.size() * 4), 0)
            << "m=" << m << ": result depends on the thread count";
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t r = 0; r < n; ++r) {
            double ref = b ? b[r] : 0.0, mag = b ? std::fabs(b[r]) : 0.0;
            for (int64_t c = 0; c < k; ++c) {
              const double xv = x[i * k + c];
              ref += xv * wf[r * k + c];
              mag += std::fabs(xv) * (std::fabs(wf[r * k + c]) + sz[r * k + c]);
            }
            const double tol = (k + 16) * std::ldexp(1.0, -24) * mag;
            ASSERT_NEAR(y1[i * n + r], ref, tol)
                << "m=" << m << " i=" << i << " r=" << r << " bias=" << with_bias;
          }
        }
      }
    }
  }
  SetQuantDotPath(DefaultQuantDotPath());
  SetNumThreads(2);
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, QuantMatrixMatMulTest, ::testing::ValuesIn(AllLayouts()),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           return LayoutName(info.param);
                         });

TEST(QuantMatrixMatMul, GenericPathOnlyForGidxAndRaggedGroups) {
  const std::vector<float> x(200, 1.f);
  EXPECT_TRUE(
      QuantMatrixGemv(RandomMatrix({DType::kI4, QuantGranularity::kGroup, 32}, 1), x.data(), 1)
          .fast());
  EXPECT_FALSE(
      QuantMatrixGemv(RandomMatrix({DType::kI4, QuantGranularity::kGroup, 12}, 1), x.data(), 1)
          .fast());
  EXPECT_FALSE(
      QuantMatrixGemv(RandomMatrix({DType::kI4, QuantGranularity::kGroup, 32, false, true}, 1),
                      x.data(), 1)
          .fast());
}

// q/k/v-like outputs of mixed kinds in one MatMulGroup: the same bits as one
// MatMul per output, on the GEMV and the GEMM path.
TEST(QuantMatrixMatMul, GroupMixesTensorAndQuantizedOutputs) {
  const int64_t k = 256;
  const QuantizedMatrix q4 =
      RandomMatrix({DType::kI4, QuantGranularity::kGroup, 128, true, false, 53, k}, 5);
  const QuantizedMatrix f8 =
      RandomMatrix({DType::kF8E4M3, QuantGranularity::kBlock, 128, false, false, 131, k}, 6);
  const Tensor bf16 = MakeTensor(DType::kBF16, {40, k}, RandomVector(40 * k, 7, 0.1f));
  // Q8_0 blocks: f16 d, then 32 int8 values.
  Tensor q8_0 = Tensor::Zeros(DType::kQ8_0, {24, k});
  {
    std::mt19937 rng(8);
    auto* p = static_cast<uint8_t*>(q8_0.mutable_raw());
    for (size_t i = 0; i < q8_0.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng());
    const uint16_t d = F32ToF16(0.003f);
    for (size_t b = 0; b < q8_0.nbytes() / 34; ++b) std::memcpy(p + 34 * b, &d, 2);
  }
  const std::vector<float> bias = RandomVector(131, 9);
  for (int64_t m : {1, 2, 4, 8, 17, 64}) {
    const std::vector<float> x = RandomVector(m * k, 10 + static_cast<uint32_t>(m));
    std::vector<float> ya(m * 53), yb(m * 131), yc(m * 40), yd(m * 24);
    ASSERT_TRUE(MatMulGroup(x.data(), m, k,
                            {MatMulOutput{nullptr, bias.data(), ya.data(), &q4},
                             MatMulOutput{&bf16, nullptr, yc.data()},
                             MatMulOutput{nullptr, nullptr, yb.data(), &f8},
                             MatMulOutput{&q8_0, bias.data(), yd.data()}})
                    .ok());
    std::vector<float> ea(m * 53), eb(m * 131), ec(m * 40), ed(m * 24);
    ASSERT_TRUE(MatMul(x.data(), m, q4, bias.data(), ea.data()).ok());
    ASSERT_TRUE(MatMul(x.data(), m, f8, nullptr, eb.data()).ok());
    ASSERT_TRUE(MatMul(x.data(), m, bf16, nullptr, ec.data()).ok());
    EXPECT_EQ(ya, ea) << "m=" << m;
    EXPECT_EQ(yb, eb) << "m=" << m;
    EXPECT_EQ(yc, ec) << "m=" << m;
    if (m == 8) continue;  // alone, Q8_0 takes its integer dots up to 16 rows
    ASSERT_TRUE(MatMul(x.data(), m, q8_0, bias.data(), ed.data()).ok());
    EXPECT_EQ(yd, ed) << "m=" << m;
  }
}

TEST(QuantMatrixMatMul, RejectsMismatchedLayouts) {
  QuantizedMatrix w =
      RandomMatrix({DType::kI8, QuantGranularity::kGroup, 32, true, false, 8, 64}, 3);
  std::vector<float> x(64 * 2), y(8 * 2);
  EXPECT_TRUE(MatMul(x.data(), 2, w, nullptr, y.data()).ok());
  // Input width differs from the matrix's columns.
  EXPECT_FALSE(MatMulGroup(x.data(), 2, 32, {MatMulOutput{nullptr, nullptr, y.data(), &w}}).ok());
  QuantizedMatrix bad_scales = w;
  bad_scales.scales = Tensor::Zeros(DType::kF32, {8, 3});
  const absl::Status st = MatMul(x.data(), 2, bad_scales, nullptr, y.data());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("scales"), absl::string_view::npos) << st;
  QuantizedMatrix bad_zeros = w;
  bad_zeros.zero_points = Tensor::Zeros(DType::kI32, {8, 2});
  EXPECT_FALSE(MatMul(x.data(), 2, bad_zeros, nullptr, y.data()).ok());
  QuantizedMatrix bad_values = w;
  bad_values.values = Tensor::Zeros(DType::kU8, {8, 64});
  EXPECT_FALSE(MatMul(x.data(), 2, bad_values, nullptr, y.data()).ok());
}

}  // namespace
}  // namespace retort::cpu
