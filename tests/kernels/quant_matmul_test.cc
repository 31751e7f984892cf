// MatMul with ggml block-quantized weights (kernels/cpu/quant_matmul.h).
//
// Weights are random valid blocks: random bytes for the quants and random
// finite f16 scales written straight into the structs. Three checks:
//  * the AVX2 dots and activation quantizer against their scalar references
//    (same quantized math; only the f32 order of per-block sums differs);
//  * MatMul against an f64 loop over the dequantized weights and the
//    original f32 input, within a bound on the activation rounding computed
//    per output from the blocks (see ActivationErrorBound);
//  * one and two threads give the same bits;
//  * the AVX2 and AVX-512 VNNI builds of the integer dots give the same bits
//    (every dot check above runs under each path the CPU supports).
// For the k-quants the test decodes blocks itself (f64) from the layouts in
// core/ggml_blocks.h and cross-checks that decoder with ggml::DequantizeRow.
#include "kernels/cpu/quant_matmul.h"

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/convert.h"
#include "core/ggml_blocks.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/quant_test_util.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using namespace ggml;  // block structs
using testing::RandomVector;

// Offsets of the f16 scale fields of each block type.
std::vector<size_t> ScaleOffsets(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return {offsetof(BlockQ4_0, d)};
    case DType::kQ4_1:
      return {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)};
    case DType::kQ5_0:
      return {offsetof(BlockQ5_0, d)};
    case DType::kQ5_1:
      return {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)};
    case DType::kQ8_0:
      return {offsetof(BlockQ8_0, d)};
    case DType::kQ2_K:
      return {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)};
    case DType::kQ3_K:
      return {offsetof(BlockQ3_K, d)};
    case DType::kQ4_K:
      return {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)};
    case DType::kQ5_K:
      return {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)};
    case DType::kQ6_K:
      return {offsetof(BlockQ6_K, d)};
    default:
      return {};
  }
}

// An [n, k] tensor of random valid blocks.
Tensor RandomBlocks(DType t, int64_t n, int64_t k, uint32_t seed) {
  Tensor w = Tensor::Zeros(t, {n, k});
  std::mt19937 rng(seed);
  auto* bytes = static_cast<uint8_t*>(w.mutable_raw());
  for (size_t i = 0; i < w.nbytes(); ++i) bytes[i] = static_cast<uint8_t>(rng());
  // Scales of either sign, magnitudes spread over a few binades.
  std::uniform_real_distribution<float> mag(-3.f, 0.f), sign(0.f, 1.f);
  const size_t bb = DTypeBlockBytes(t);
  for (size_t b = 0; b < w.nbytes() / bb; ++b) {
    for (size_t off : ScaleOffsets(t)) {
      float v = 0.05f * std::pow(10.f, mag(rng)) * (sign(rng) < 0.5f ? -1.f : 1.f);
      const uint16_t h = F32ToF16(v);
      std::memcpy(bytes + b * bb + off, &h, 2);
    }
  }
  return w;
}

// ---------------------------------------------------------------------------
// f64 decoding of the k-quants, written from the layouts in ggml_blocks.h.

void ScaleMinK4(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void DecodeQ45K(bool five, const void* src, double* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t *scales, *qs, *qh = nullptr;
    uint16_t d16, m16;
    if (five) {
      const auto& blk = static_cast<const BlockQ5_K*>(src)[b];
      scales = blk.scales, qs = blk.qs, qh = blk.qh, d16 = blk.d, m16 = blk.dmin;
    } else {
      const auto& blk = static_cast<const BlockQ4_K*>(src)[b];
      scales = blk.scales, qs = blk.qs, d16 = blk.d, m16 = blk.dmin;
    }
    const double d = F16ToF32(d16), dmin = F16ToF32(m16);
    for (int e = 0; e < 256; ++e) {
      const int chunk = e / 64, within = e % 64, l = within % 32, high = within / 32;
      const uint8_t byte = qs[32 * chunk + l];
      int q = high ? byte >> 4 : byte & 0xf;
      if (five) q += ((qh[l] >> (2 * chunk + high)) & 1) * 16;
      int sc, m;
      ScaleMinK4(2 * chunk + high, scales, &sc, &m);
      y[b * 256 + e] = d * sc * q - dmin * m;
    }
  }
}

void DecodeQ6K(const void* src, double* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const auto& blk = static_cast<const BlockQ6_K*>(src)[b];
    const double d = F16ToF32(blk.d);
    for (int e = 0; e < 256; ++e) {
      const int half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
      const uint8_t lbyte = blk.ql[64 * half + l + (quarter & 1) * 32];
      const int lo = quarter < 2 ? lbyte & 0xf : lbyte >> 4;
      const int hi = (blk.qh[32 * half + l] >> (2 * quarter)) & 3;
      y[b * 256 + e] = d * blk.scales[8 * half + 2 * quarter + l / 16] * ((lo | (hi << 4)) - 32);
    }
  }
}

// Row r of w decoded to f64.
std::vector<double> DecodeRow(const Tensor& w, int64_t r, bool use_ggml) {
  const DType t = w.dtype();
  const int64_t k = w.dim(1);
  const char* src = static_cast<const char*>(w.raw()) + r * DTypeBytes(t, k);
  std::vector<double> out(k);
  if (!use_ggml && (t == DType::kQ4_K || t == DType::kQ5_K)) {
    DecodeQ45K(t == DType::kQ5_K, src, out.data(), k / 256);
  } else if (!use_ggml && t == DType::kQ6_K) {
    DecodeQ6K(src, out.data(), k / 256);
  } else {
    std::vector<float> f(k);
    DequantizeRow(t, src, f.data(), k);
    out.assign(f.begin(), f.end());
  }
  return out;
}

using testing::ForEachPath;
using testing::SupportedPaths;

bool OwnDecoder(DType t) { return t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K; }

std::string Name(DType t) { return std::string(DTypeName(t)); }

const DType kAllTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                           DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// How far (x quantized to 8-bit blocks) · w can be from x · w, for one output.
// Per element of an activation block with d = max|x| / 127: rounding to the
// grid costs d/2, storing d in f16 (Q8_0/Q8_1) costs |q| d 2^-11 <= 127 d 2^-11;
// Q8_1's s = f16(d * sum q) adds |s| 2^-11 times the weight block's |m|. A
// small relative term covers f32 arithmetic.
double ActivationErrorBound(DType wt, const std::vector<double>& w, const float* x,
                            const char* wrow, int64_t k) {
  const DType at = QuantDotActivationType(wt);
  if (at == DType::kF32) {
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += std::abs(w[j] * x[j]);
    return 1e-5 * s + 1e-7;
  }
  const int64_t block = DTypeBlockElems(at);
  const double f16_term = at == DType::kQ8_K ? 0.0 : 127.0 / 2048.0;
  double bound = 0, abs_sum = 0;
  for (int64_t b = 0; b < k / block; ++b) {
    double amax = 0, wsum = 0, xsum = 0;
    for (int64_t j = b * block; j < (b + 1) * block; ++j) {
      amax = std::max(amax, std::abs(static_cast<double>(x[j])));
      wsum += std::abs(w[j]);
      xsum += std::abs(x[j]);
      abs_sum += std::abs(w[j] * x[j]);
    }
    const double d = amax / 127.0;
    bound += wsum * d * (0.5 + f16_term);
    if (at == DType::kQ8_1) {
      // |m| of this weight block times |s| (<= sum |x| plus the rounding) * 2^-11.
      const size_t bb = DTypeBlockBytes(wt);
      uint16_t m16;
      std::memcpy(&m16, wrow + b * bb + 2, 2);
      bound += std::abs(F16ToF32(m16)) * (xsum + block * d) / 2048.0;
    }
  }
  return bound * 1.01 + 1e-5 * abs_sum + 1e-7;
}

// ---------------------------------------------------------------------------

TEST(QuantizeActivationTest, VectorisedMatchesScalarBytes) {
  for (DType at : {DType::kQ8_0, DType::kQ8_1, DType::kQ8_K}) {
    const int64_t n = 768;
    auto x = RandomVector(n, 11, 3.f);
    // Edge cases: an all-zero block, exact halves of the grid, a huge value.
    for (int j = 0; j < 32; ++j) x[32 + j] = 0.f;
    for (int j = 0; j < 32; ++j) x[64 + j] = (j - 16) * 0.5f;
    x[100] = 1e30f;
    std::vector<char> a(ActivationRowBytes(at, n)), b(ActivationRowBytes(at, n));
    QuantizeActivationRow(at, x.data(), a.data(), n);
    QuantizeActivationRowReference(at, x.data(), b.data(), n);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size())) << Name(at);
  }
}

TEST(QuantizeActivationTest, BlockSumsAndScales) {
  const int64_t n = 512;
  auto x = RandomVector(n, 12, 2.f);
  std::vector<BlockQ8_K> k(n / 256);
  QuantizeActivationRow(DType::kQ8_K, x.data(), k.data(), n);
  for (int64_t b = 0; b < n / 256; ++b) {
    float amax = 0;
    for (int j = 0; j < 256; ++j) amax = std::max(amax, std::abs(x[b * 256 + j]));
    EXPECT_FLOAT_EQ(k[b].d, amax / 127.f);
    for (int s = 0; s < 16; ++s) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += k[b].qs[16 * s + j];
      EXPECT_EQ(sum, k[b].bsums[s]);
    }
    for (int j = 0; j < 256; ++j) EXPECT_NEAR(k[b].qs[j] * k[b].d, x[b * 256 + j], k[b].d * 0.5001);
  }
  std::vector<BlockQ8_1> q1(n / 32);
  QuantizeActivationRow(DType::kQ8_1, x.data(), q1.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += q1[b].qs[j];
    EXPECT_NEAR(F16ToF32(q1[b].s), F16ToF32(q1[b].d) * sum, std::abs(F16ToF32(q1[b].s)) * 2e-3);
  }
}

// The test's own f64 decoders agree with ggml::DequantizeRow (the one the
// generic path and the GEMM path use).
TEST(QuantDecodeTest, TestDecodersMatchGgmlDequantize) {
  for (DType t : {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    Tensor w = RandomBlocks(t, 3, 512, 21);
    for (int64_t r = 0; r < 3; ++r) {
      auto own = DecodeRow(w, r, false), ggml = DecodeRow(w, r, true);
      for (int64_t j = 0; j < 512; ++j)
        ASSERT_NEAR(own[j], ggml[j], 1e-6 * std::abs(own[j]) + 1e-12)
            << Name(t) << " row " << r << " element " << j;
    }
  }
}

class QuantDotTest : public ::testing::TestWithParam<DType> {};

void CheckVectorisedAgainstReference(DType wt);

TEST_P(QuantDotTest, VectorisedMatchesScalarReference) {
  ForEachPath([&] { CheckVectorisedAgainstReference(GetParam()); });
}

void CheckVectorisedAgainstReference(DType wt) {
  const DType at = QuantDotActivationType(wt);
  const int64_t block = DTypeBlockElems(wt);
  for (int64_t nblocks : {1, 2, 3, 7, 18}) {
    const int64_t k = nblocks * block;
    Tensor w = RandomBlocks(wt, 4, k, 31 + static_cast<uint32_t>(nblocks));
    auto x = RandomVector(k, 32, 2.f);
    std::vector<char> a(ActivationRowBytes(at, k));
    QuantizeActivationRow(at, x.data(), a.data(), k);
    for (int64_t r = 0; r < 4; ++r) {
      const char* wr = static_cast<const char*>(w.raw()) + r * DTypeBytes(wt, k);
      const float got = QuantDot(wt, wr, a.data(), k);
      const float want = QuantDotReference(wt, wr, a.data(), k);
      // Scale of the terms: sum |w_j x_j| (f64, original x).
      auto wd = DecodeRow(w, r, !OwnDecoder(wt));
      double abs_sum = 0;
      for (int64_t j = 0; j < k; ++j) abs_sum += std::abs(wd[j] * x[j]);
      ASSERT_NEAR(got, want, 1e-6 * abs_sum + 1e-12) << Name(wt) << " k=" << k << " row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, QuantDotTest, ::testing::ValuesIn(kAllTypes),
                         [](const auto& info) { return Name(info.param); });

class QuantMatMulTest
    : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t, int64_t>> {};

void CheckAgainstF64Loop(std::tuple<DType, int64_t, int64_t, int64_t> param);

TEST_P(QuantMatMulTest, MatchesF64LoopOverDequantizedWeights) {
  ForEachPath([&] { CheckAgainstF64Loop(GetParam()); });
}

void CheckAgainstF64Loop(std::tuple<DType, int64_t, int64_t, int64_t> param) {
  auto [wt, m, n, nblocks] = param;
  const int64_t k = nblocks * DTypeBlockElems(wt);
  Tensor w = RandomBlocks(wt, n, k, 41);
  auto x = RandomVector(m * k, 42, 1.5f);
  auto bias = RandomVector(n, 43);
  std::vector<float> y(m * n, 123.f);
  ASSERT_TRUE(MatMul(x.data(), m, w, bias.data(), y.data()).ok());

  const bool gemv = m <= kQuantGemvMaxRows;
  for (int64_t r = 0; r < n; ++r) {
    auto wd = DecodeRow(w, r, !OwnDecoder(wt));
    const char* wr = static_cast<const char*>(w.raw()) + r * DTypeBytes(wt, k);
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x.data() + i * k;
      double ref = bias[r], abs_sum = std::abs(bias[r]);
      for (int64_t j = 0; j < k; ++j) {
        ref += wd[j] * xi[j];
        abs_sum += std::abs(wd[j] * xi[j]);
      }
      // GEMV: x is rounded to 8-bit blocks first; GEMM: f32 sgemm of the
      // dequantized weights.
      const double tol = gemv ? ActivationErrorBound(wt, wd, xi, wr, k) + 1e-6 * std::abs(bias[r])
                              : 1e-5 * abs_sum + 1e-7;
      ASSERT_NEAR(y[i * n + r], ref, tol)
          << Name(wt) << " m=" << m << " row " << r << " input " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, QuantMatMulTest,
    ::testing::Combine(::testing::ValuesIn(kAllTypes),
                       ::testing::Values<int64_t>(1, 3, 4, 5, 19),  // GEMV and GEMM paths
                       ::testing::Values<int64_t>(1, 37, 301),      // odd row counts
                       ::testing::Values<int64_t>(1, 3)),           // blocks per row
    [](const auto& info) {
      return Name(std::get<0>(info.param)) + "_m" + std::to_string(std::get<1>(info.param)) + "_n" +
             std::to_string(std::get<2>(info.param)) + "_b" +
             std::to_string(std::get<3>(info.param));
    });

// The GEMV path computes exactly QuantDot of the quantized input, row by row.
TEST(QuantMatMulTest, GemvIsQuantDotOfQuantizedInput) {
  ForEachPath([] {
    for (DType wt : kAllTypes) {
      const int64_t k = 2 * DTypeBlockElems(wt), n = 45, m = 3;
      Tensor w = RandomBlocks(wt, n, k, 51);
      auto x = RandomVector(m * k, 52);
      std::vector<float> y(m * n);
      ASSERT_TRUE(MatMul(x.data(), m, w, nullptr, y.data()).ok());
      const DType at = QuantDotActivationType(wt);
      std::vector<char> a(ActivationRowBytes(at, k));
      for (int64_t i = 0; i < m; ++i) {
        QuantizeActivationRow(at, x.data() + i * k, a.data(), k);
        for (int64_t r = 0; r < n; ++r) {
          const char* wr = static_cast<const char*>(w.raw()) + r * DTypeBytes(wt, k);
          ASSERT_EQ(y[i * n + r], QuantDot(wt, wr, a.data(), k)) << Name(wt);
        }
      }
    }
  });
}

TEST(QuantMatMulTest, SameResultOnOneAndTwoThreads) {
  ForEachPath([] {
    for (DType wt : kAllTypes) {
      for (int64_t m : {1, 4, 13}) {
        const int64_t k = 3 * DTypeBlockElems(wt), n = 301;
        Tensor w = RandomBlocks(wt, n, k, 61);
        auto x = RandomVector(m * k, 62);
        std::vector<float> y1(m * n), y2(m * n);
        SetNumThreads(1);
        ASSERT_TRUE(MatMul(x.data(), m, w, nullptr, y1.data()).ok());
        SetNumThreads(2);
        ASSERT_TRUE(MatMul(x.data(), m, w, nullptr, y2.data()).ok());
        EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)))
            << Name(wt) << " m=" << m;
      }
    }
  });
}

// The AVX-512 VNNI build computes the same int32 lanes and the same f32
// steps as the AVX2 one: outputs are bit-identical, for every 32-block type,
// for row counts that leave remainders of the 4-row groups, odd block counts
// and several inputs.
TEST(QuantMatMulTest, Avx512VnniAndAvx2GiveSameBits) {
  if (!QuantDotPathSupported(QuantDotPath::kAvx512Vnni))
    GTEST_SKIP() << "this CPU has no AVX-512 VNNI: only the AVX2 path exists here";
  const QuantDotPath before = ActiveQuantDotPath();
  for (DType wt : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1}) {
    for (int64_t nblocks : {1, 5, 18}) {
      for (int64_t m : {1, 3, 16}) {
        const int64_t k = 32 * nblocks, n = 203;
        Tensor w = RandomBlocks(wt, n, k, 101 + static_cast<uint32_t>(nblocks));
        auto x = RandomVector(m * k, 102, 4.f);
        auto bias = RandomVector(n, 103);
        std::vector<float> y2(m * n), y5(m * n);
        ASSERT_TRUE(SetQuantDotPath(QuantDotPath::kAvx2));
        ASSERT_TRUE(MatMul(x.data(), m, w, bias.data(), y2.data()).ok());
        ASSERT_TRUE(SetQuantDotPath(QuantDotPath::kAvx512Vnni));
        ASSERT_TRUE(MatMul(x.data(), m, w, bias.data(), y5.data()).ok());
        EXPECT_EQ(0, std::memcmp(y2.data(), y5.data(), y2.size() * sizeof(float)))
            << Name(wt) << " k=" << k << " m=" << m;
        // Single dots too (QuantDot takes the same path).
        const DType at = QuantDotActivationType(wt);
        std::vector<char> a(ActivationRowBytes(at, k));
        QuantizeActivationRow(at, x.data(), a.data(), k);
        for (int64_t r = 0; r < n; r += 17) {
          const char* wr = static_cast<const char*>(w.raw()) + r * DTypeBytes(wt, k);
          ASSERT_TRUE(SetQuantDotPath(QuantDotPath::kAvx2));
          const float d2 = QuantDot(wt, wr, a.data(), k);
          ASSERT_TRUE(SetQuantDotPath(QuantDotPath::kAvx512Vnni));
          const float d5 = QuantDot(wt, wr, a.data(), k);
          EXPECT_EQ(0, std::memcmp(&d2, &d5, sizeof(float))) << Name(wt) << " row " << r;
        }
      }
    }
  }
  SetQuantDotPath(before);
}

// Extreme weights and activations: Q8_0 weights of -128 and 127 (the
// unsigned form's 0 and 255) against activations of +-127, where a careless
// int16 step would saturate.
TEST(QuantMatMulTest, ExtremeQ8_0ValuesAreExact) {
  const int64_t k = 64, n = 8;
  Tensor w = RandomBlocks(DType::kQ8_0, n, k, 111);
  auto* blocks = static_cast<BlockQ8_0*>(w.mutable_raw());
  // Scales of 1: every partial sum is an integer below 2^24, so f32 order
  // cannot matter and both sides must be exact.
  for (int64_t b = 0; b < n * k / 32; ++b) {
    blocks[b].d = F32ToF16(1.f);
    for (int j = 0; j < 32; ++j) blocks[b].qs[j] = (b + j) % 3 == 0 ? -128 : (j % 2 ? 127 : -128);
  }
  std::vector<BlockQ8_0> a(k / 32);
  for (auto& blk : a) {
    blk.d = F32ToF16(1.f);
    for (int j = 0; j < 32; ++j) blk.qs[j] = j % 4 == 3 ? -127 : 127;
  }
  ForEachPath([&] {
    for (int64_t r = 0; r < n; ++r) {
      const char* wr = static_cast<const char*>(w.raw()) + r * DTypeBytes(DType::kQ8_0, k);
      EXPECT_EQ(QuantDot(DType::kQ8_0, wr, a.data(), k),
                QuantDotReference(DType::kQ8_0, wr, a.data(), k))
          << "row " << r;
    }
  });
}

TEST(QuantDotPathTest, EnvironmentVariableKeepsAvx2) {
  const char* old = std::getenv("RETORT_NO_AVX512");
  const std::string saved = old ? old : "";
  setenv("RETORT_NO_AVX512", "1", 1);
  EXPECT_EQ(DefaultQuantDotPath(), QuantDotPath::kAvx2);
  setenv("RETORT_NO_AVX512", "0", 1);
  const QuantDotPath best = QuantDotPathSupported(QuantDotPath::kAvx512Vnni)
                                ? QuantDotPath::kAvx512Vnni
                                : QuantDotPath::kAvx2;
  EXPECT_EQ(DefaultQuantDotPath(), best);
  unsetenv("RETORT_NO_AVX512");
  EXPECT_EQ(DefaultQuantDotPath(), best);
  if (old) setenv("RETORT_NO_AVX512", saved.c_str(), 1);
  EXPECT_TRUE(SetQuantDotPath(QuantDotPath::kAvx2));
  EXPECT_EQ(ActiveQuantDotPath(), QuantDotPath::kAvx2);
  EXPECT_TRUE(SetQuantDotPath(best));
}

// A group mixing activation types (Q4_K_M files mix Q4_K and Q6_K) and a
// bf16 weight; each output matches its own MatMul.
TEST(QuantMatMulTest, GroupMixesWeightTypes) {
  const int64_t k = 512;
  Tensor a = RandomBlocks(DType::kQ4_K, 40, k, 71);
  Tensor b = RandomBlocks(DType::kQ6_K, 24, k, 72);
  Tensor c = RandomBlocks(DType::kQ8_0, 9, k, 73);
  Tensor d = RandomBlocks(DType::kQ4_1, 5, k, 74);
  for (int64_t m : {1, 2, 7}) {
    auto x = RandomVector(m * k, 75);
    std::vector<float> ya(m * 40), yb(m * 24), yc(m * 9), yd(m * 5);
    ASSERT_TRUE(MatMulGroup(x.data(), m, k,
                            {{&a, nullptr, ya.data()},
                             {&b, nullptr, yb.data()},
                             {&c, nullptr, yc.data()},
                             {&d, nullptr, yd.data()}})
                    .ok());
    for (auto [t, y] : {std::pair{&a, &ya}, {&b, &yb}, {&c, &yc}, {&d, &yd}}) {
      std::vector<float> want(y->size());
      ASSERT_TRUE(MatMul(x.data(), m, *t, nullptr, want.data()).ok());
      EXPECT_EQ(want, *y) << Name(t->dtype()) << " m=" << m;
    }
  }
  // Mixed with a bf16 weight: the GEMV path serves both kinds.
  Tensor e = testing::MakeTensor(DType::kBF16, {6, k}, RandomVector(6 * k, 76));
  auto x = RandomVector(2 * k, 77);
  std::vector<float> ya(2 * 40), ye(2 * 6), wa(2 * 40), we(2 * 6);
  ASSERT_TRUE(
      MatMulGroup(x.data(), 2, k, {{&a, nullptr, ya.data()}, {&e, nullptr, ye.data()}}).ok());
  ASSERT_TRUE(MatMul(x.data(), 2, a, nullptr, wa.data()).ok());
  ASSERT_TRUE(MatMul(x.data(), 2, e, nullptr, we.data()).ok());
  EXPECT_EQ(wa, ya);
  EXPECT_EQ(we, ye);
}

TEST(QuantMatMulTest, RejectsPartialBlocksAndActivationTypes) {
  EXPECT_TRUE(IsSupportedWeightDType(DType::kQ4_K));
  EXPECT_FALSE(IsSupportedWeightDType(DType::kQ8_K));  // activation-only types
  EXPECT_FALSE(IsSupportedWeightDType(DType::kQ8_1));
  Tensor w = RandomBlocks(DType::kQ8_0, 4, 64, 81);
  std::vector<float> x(96), y(4);
  // A [4, 64] Q8_0 weight cannot take width-96 inputs.
  EXPECT_FALSE(MatMulGroup(x.data(), 1, 96, {{&w, nullptr, y.data()}}).ok());
}

TEST(QuantEmbeddingTest, RowsAreDequantized) {
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ6_K}) {
    Tensor table = RandomBlocks(t, 10, 256, 91);
    const int32_t ids[] = {3, 0, 9};
    std::vector<float> out(3 * 256);
    ASSERT_TRUE(Embedding(table, ids, 3, out.data()).ok());
    for (int i = 0; i < 3; ++i) {
      auto row = DecodeRow(table, ids[i], !OwnDecoder(t));
      for (int j = 0; j < 256; ++j) ASSERT_NEAR(out[i * 256 + j], row[j], 1e-6 * std::abs(row[j]));
    }
  }
}

}  // namespace
}  // namespace retort::cpu
