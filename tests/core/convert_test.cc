// Conversions between f32 and every narrow format, checked bit for bit against
// fixtures from ml_dtypes/numpy (cross-checked with PyTorch) built by
// tests/reference/dtypes/make_fixtures.py (its docstring has the file layout).
#include "core/convert.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "tests/fixture_util.h"

namespace retort {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// One narrow format: its fixture and our scalar conversions.
struct Format {
  const char* name;
  DType dtype;
  int bits;
  float (*decode)(uint32_t);
  uint32_t (*encode)(float);
  bool has_inf;
};

const Format kFormats[] = {
    {"f16", DType::kF16, 16, [](uint32_t b) { return F16ToF32(static_cast<uint16_t>(b)); },
     [](float f) -> uint32_t { return F32ToF16(f); }, true},
    {"bf16", DType::kBF16, 16, [](uint32_t b) { return BF16ToF32(static_cast<uint16_t>(b)); },
     [](float f) -> uint32_t { return F32ToBF16(f); }, true},
    {"f8_e4m3fn", DType::kF8E4M3, 8,
     [](uint32_t b) { return F8E4M3ToF32(static_cast<uint8_t>(b)); },
     [](float f) -> uint32_t { return F32ToF8E4M3(f); }, false},
    {"f8_e5m2", DType::kF8E5M2, 8, [](uint32_t b) { return F8E5M2ToF32(static_cast<uint8_t>(b)); },
     [](float f) -> uint32_t { return F32ToF8E5M2(f); }, true},
};

struct Fixture {
  std::vector<uint32_t> decode;        // f32 bits of pattern i
  std::vector<uint32_t> mid_expected;  // 3 per pair of adjacent values
  std::vector<uint32_t> extra_input;   // f32 bits
  std::vector<uint32_t> extra_expected;
};

class Reader {
 public:
  explicit Reader(std::string data) : data_(std::move(data)) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == data_.size(); }
  uint32_t Uint(int bytes) {
    if (pos_ + bytes > data_.size()) {
      ok_ = false;
      return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < bytes; ++i)
      v |= static_cast<uint32_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += bytes;
    return v;
  }
  std::vector<uint32_t> Array(size_t n, int bytes) {
    std::vector<uint32_t> v(n);
    for (auto& x : v) x = Uint(bytes);
    return v;
  }

 private:
  std::string data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Reads tests/reference/dtypes/<name>.bin.zst; ADD_FAILUREs on any problem.
Fixture LoadFixture(const Format& fmt) {
  Fixture fx;
  std::string path = std::string("tests/reference/dtypes/") + fmt.name + ".bin.zst";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot open " << path;
    return fx;
  }
  std::string compressed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string raw = testing_util::Unzstd(compressed, path);
  if (raw.empty()) return fx;
  const int w = fmt.bits / 8;
  Reader r(std::move(raw));
  uint32_t n_decode = r.Uint(4);
  if (n_decode != (1u << fmt.bits)) {
    ADD_FAILURE() << path << ": " << n_decode << " decode entries, expected " << (1u << fmt.bits);
    return fx;
  }
  fx.decode = r.Array(n_decode, 4);
  uint32_t n_pairs = r.Uint(4);
  fx.mid_expected = r.Array(3 * static_cast<size_t>(n_pairs), w);
  uint32_t n_extra = r.Uint(4);
  fx.extra_input = r.Array(n_extra, 4);
  fx.extra_expected = r.Array(n_extra, w);
  if (!r.ok() || !r.at_end()) ADD_FAILURE() << path << ": truncated or trailing bytes";
  return fx;
}

const Fixture& GetFixture(int i) {
  static std::vector<Fixture>* fixtures = [] {
    auto* v = new std::vector<Fixture>;
    for (const Format& f : kFormats) v->push_back(LoadFixture(f));
    return v;
  }();
  return (*fixtures)[i];
}

bool IsNaNPattern(const Format& fmt, uint32_t bits) {
  switch (fmt.dtype) {
    case DType::kF16:
      return (bits & 0x7c00) == 0x7c00 && (bits & 0x3ff) != 0;
    case DType::kBF16:
      return (bits & 0x7f80) == 0x7f80 && (bits & 0x7f) != 0;
    case DType::kF8E4M3:
      return (bits & 0x7f) == 0x7f;
    case DType::kF8E5M2:
      return (bits & 0x7c) == 0x7c && (bits & 0x3) != 0;
    default:
      return false;
  }
}

uint32_t SignBit(const Format& fmt) { return 1u << (fmt.bits - 1); }

class ConvertFixtureTest : public ::testing::TestWithParam<int> {
 protected:
  const Format& fmt() const { return kFormats[GetParam()]; }
  const Fixture& fx() const { return GetFixture(GetParam()); }

  // Checks our encoding of `input` against the reference's answer `ref`.
  // NaN results are compared by NaN-ness; e4m3fn differs on purpose where the
  // reference overflows to NaN: we saturate to +-448 (0x7E / 0xFE).
  void ExpectEncode(float input, uint32_t ref, const char* what) {
    uint32_t got = fmt().encode(input);
    bool ref_nan = IsNaNPattern(fmt(), ref);
    if (fmt().dtype == DType::kF8E4M3 && ref_nan && !std::isnan(input)) {
      ASSERT_GT(std::fabs(input), 448.0f) << what << ": reference NaN for an in-range input";
      EXPECT_EQ(got, std::signbit(input) ? 0xFEu : 0x7Eu)
          << what << ": e4m3fn must saturate input " << input << " (bits 0x" << std::hex
          << Bits(input) << ")";
      return;
    }
    if (ref_nan) {
      EXPECT_TRUE(IsNaNPattern(fmt(), got)) << what << ": input bits 0x" << std::hex << Bits(input)
                                            << " gave 0x" << got << ", not a NaN";
      // We keep the sign of a NaN input.
      EXPECT_EQ(got & SignBit(fmt()), std::signbit(input) ? SignBit(fmt()) : 0u) << what;
      return;
    }
    EXPECT_EQ(got, ref) << what << ": input " << input << " (bits 0x" << std::hex << Bits(input)
                        << ")";
  }
};

TEST_P(ConvertFixtureTest, DecodesEveryPatternLikeReference) {
  ASSERT_EQ(fx().decode.size(), 1u << fmt().bits);
  for (uint32_t p = 0; p < fx().decode.size(); ++p) {
    float got = fmt().decode(p);
    float ref = FromBits(fx().decode[p]);
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(got)) << fmt().name << " pattern 0x" << std::hex << p;
      EXPECT_TRUE(IsNaNPattern(fmt(), p)) << fmt().name << " pattern 0x" << std::hex << p;
    } else {
      ASSERT_EQ(Bits(got), fx().decode[p]) << fmt().name << " pattern 0x" << std::hex << p;
      EXPECT_FALSE(IsNaNPattern(fmt(), p));
    }
  }
}

TEST_P(ConvertFixtureTest, BulkConvertToF32MatchesScalar) {
  const uint32_t n = 1u << fmt().bits;
  std::vector<uint8_t> src(n * fmt().bits / 8);
  for (uint32_t p = 0; p < n; ++p) {
    if (fmt().bits == 16) {
      uint16_t v = static_cast<uint16_t>(p);
      std::memcpy(&src[2 * p], &v, 2);
    } else {
      src[p] = static_cast<uint8_t>(p);
    }
  }
  std::vector<float> dst(n);
  ConvertToF32(fmt().dtype, src.data(), dst.data(), n);
  for (uint32_t p = 0; p < n; ++p) {
    float want = fmt().decode(p);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(dst[p]));
    } else {
      ASSERT_EQ(Bits(dst[p]), Bits(want)) << "pattern 0x" << std::hex << p;
    }
  }
  // And back: ConvertFromF32 agrees with the scalar encoder.
  std::vector<uint8_t> back(src.size());
  ConvertFromF32(fmt().dtype, dst.data(), back.data(), n);
  for (uint32_t p = 0; p < n; ++p) {
    uint32_t got = fmt().bits == 16 ? (back[2 * p] | (back[2 * p + 1] << 8)) : back[p];
    ASSERT_EQ(got, fmt().encode(dst[p])) << "pattern 0x" << std::hex << p;
  }
}

TEST_P(ConvertFixtureTest, EncodesEveryValueToItself) {
  // make_fixtures.py checks the reference maps every non-NaN value to its own
  // pattern; NaN patterns must give some NaN of the same sign.
  for (uint32_t p = 0; p < fx().decode.size(); ++p) {
    float v = FromBits(fx().decode[p]);
    uint32_t got = fmt().encode(v);
    if (std::isnan(v)) {
      EXPECT_TRUE(IsNaNPattern(fmt(), got)) << "pattern 0x" << std::hex << p << " -> 0x" << got;
      EXPECT_EQ(got & SignBit(fmt()), p & SignBit(fmt())) << "pattern 0x" << std::hex << p;
    } else {
      ASSERT_EQ(got, p) << fmt().name << " value " << v;
    }
  }
}

TEST_P(ConvertFixtureTest, RoundsMidpointsToEvenLikeReference) {
  // Rebuild the midpoint inputs from the reference decode table (rule in
  // make_fixtures.py): adjacent distinct finite values a < b, both >= 0.
  std::set<double> values;
  for (uint32_t bits : fx().decode) {
    float v = FromBits(bits);
    if (std::isfinite(v) && v >= 0) values.insert(v);
  }
  std::vector<double> sorted(values.begin(), values.end());
  ASSERT_EQ(fx().mid_expected.size(), 3 * (sorted.size() - 1));
  int ties_up = 0, ties_down = 0;
  for (size_t i = 0; i + 1 < sorted.size(); ++i) {
    double mid = (sorted[i] + sorted[i + 1]) / 2;
    float m = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(m), mid) << "midpoint not exact in f32";
    const float inputs[3] = {std::nextafter(m, -INFINITY), m, std::nextafter(m, INFINITY)};
    for (int k = 0; k < 3; ++k) {
      uint32_t ref = fx().mid_expected[3 * i + k];
      ExpectEncode(inputs[k], ref, "midpoint");
      ExpectEncode(-inputs[k], ref | SignBit(fmt()), "negative midpoint");
      if (::testing::Test::HasFailure()) return;  // one report, not 100k
    }
    // Sanity of the fixture itself: ties go both ways (to the even side).
    uint32_t tie = fx().mid_expected[3 * i + 1];
    (FromBits(fx().decode[tie]) == sorted[i + 1] ? ties_up : ties_down)++;
    EXPECT_EQ(tie & 1, 0u) << "the reference rounded a tie to an odd pattern";
  }
  EXPECT_GT(ties_up, 0);
  EXPECT_GT(ties_down, 0);
}

TEST_P(ConvertFixtureTest, EncodesExtraInputsLikeReference) {
  ASSERT_GT(fx().extra_input.size(), 4000u);
  for (size_t i = 0; i < fx().extra_input.size(); ++i) {
    ExpectEncode(FromBits(fx().extra_input[i]), fx().extra_expected[i], "extra");
    if (::testing::Test::HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, ConvertFixtureTest, ::testing::Range(0, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(kFormats[info.param].name);
                         });

TEST(ConvertTest, E4M3SaturatesInsteadOfNaN) {
  const float big[] = {448.f, 449.f, 464.f, 464.0001f, 480.f, 500.f, 1e6f, 3.4e38f, INFINITY};
  for (float f : big) {
    EXPECT_EQ(F32ToF8E4M3(f), 0x7E) << f;
    EXPECT_EQ(F32ToF8E4M3(-f), 0xFE) << -f;
  }
  EXPECT_EQ(F8E4M3ToF32(0x7E), 448.f);
  EXPECT_EQ(F8E4M3ToF32(0xFE), -448.f);
  EXPECT_EQ(F32ToF8E4M3(NAN), 0x7F);
  EXPECT_EQ(F32ToF8E4M3(-NAN), 0xFF);
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7F)));
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0xFF)));
  // 0x78..0x7E are ordinary finite values (exponent field all ones).
  EXPECT_EQ(F8E4M3ToF32(0x78), 256.f);
  // Smallest subnormal 2^-9; half of it ties to 0, a bit more rounds up.
  EXPECT_EQ(F32ToF8E4M3(std::ldexp(1.f, -10)), 0x00);
  EXPECT_EQ(F32ToF8E4M3(std::nextafter(std::ldexp(1.f, -10), 1.f)), 0x01);
  EXPECT_EQ(F32ToF8E4M3(-std::ldexp(1.f, -10)), 0x80);
}

TEST(ConvertTest, E5M2OverflowsToInfinity) {
  EXPECT_EQ(F32ToF8E5M2(57344.f), 0x7B);
  EXPECT_EQ(F32ToF8E5M2(61439.f), 0x7B);
  EXPECT_EQ(F32ToF8E5M2(61440.f), 0x7C);  // tie with 65536: 0x7B is odd -> up -> inf
  EXPECT_EQ(F32ToF8E5M2(-1e9f), 0xFC);
  EXPECT_EQ(F32ToF8E5M2(INFINITY), 0x7C);
  EXPECT_TRUE(std::isinf(F8E5M2ToF32(0x7C)));
  EXPECT_TRUE(std::isnan(F8E5M2ToF32(0x7D)));
}

TEST(ConvertTest, F16AndBF16Overflow) {
  EXPECT_EQ(F32ToF16(65504.f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65519.f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.f), 0x7C00);
  EXPECT_EQ(F32ToBF16(3.4028235e38f), 0x7F80);  // f32 max rounds up to inf in bf16
  EXPECT_EQ(F32ToBF16(-INFINITY), 0xFF80);
  EXPECT_EQ(F32ToBF16(FromBits(0x7F800001)) & 0x7FC0, 0x7FC0);  // signalling NaN stays NaN
}

TEST(ConvertTest, I8RoundTripAndSaturation) {
  std::vector<float> all;
  for (int v = -128; v <= 127; ++v) all.push_back(static_cast<float>(v));
  std::vector<int8_t> q(all.size());
  ConvertFromF32(DType::kI8, all.data(), q.data(), all.size());
  std::vector<float> back(all.size());
  ConvertToF32(DType::kI8, q.data(), back.data(), all.size());
  EXPECT_EQ(back, all);

  const float in[] = {200.f, -200.f, 127.5f, -128.5f,  2.5f,     3.5f,
                      -2.5f, 0.49f,  NAN,    INFINITY, -INFINITY};
  const int8_t want[] = {127, -128, 127, -128, 2, 4, -2, 0, 0, 127, -128};
  int8_t out[std::size(in)];
  ConvertFromF32(DType::kI8, in, out, std::size(in));
  for (size_t i = 0; i < std::size(in); ++i) EXPECT_EQ(out[i], want[i]) << "input " << in[i];
}

TEST(ConvertTest, WiderIntegersSaturate) {
  const float in[] = {-1.f, 70000.f, 1e20f, -1e20f, std::ldexp(1.f, 63), std::ldexp(1.f, 64),
                      NAN,  2.5f};
  uint8_t u8[std::size(in)];
  ConvertFromF32(DType::kU8, in, u8, std::size(in));
  EXPECT_EQ(u8[0], 0);
  EXPECT_EQ(u8[1], 255);
  EXPECT_EQ(u8[6], 0);
  EXPECT_EQ(u8[7], 2);
  int16_t i16[std::size(in)];
  ConvertFromF32(DType::kI16, in, i16, std::size(in));
  EXPECT_EQ(i16[0], -1);
  EXPECT_EQ(i16[1], 32767);
  EXPECT_EQ(i16[3], -32768);
  uint16_t u16[std::size(in)];
  ConvertFromF32(DType::kU16, in, u16, std::size(in));
  EXPECT_EQ(u16[0], 0);
  EXPECT_EQ(u16[1], 65535);
  int32_t i32[std::size(in)];
  ConvertFromF32(DType::kI32, in, i32, std::size(in));
  EXPECT_EQ(i32[1], 70000);
  EXPECT_EQ(i32[2], std::numeric_limits<int32_t>::max());
  EXPECT_EQ(i32[3], std::numeric_limits<int32_t>::min());
  uint32_t u32[std::size(in)];
  ConvertFromF32(DType::kU32, in, u32, std::size(in));
  EXPECT_EQ(u32[0], 0u);
  EXPECT_EQ(u32[2], std::numeric_limits<uint32_t>::max());
  // 2^63 is one past INT64_MAX, 2^64 one past UINT64_MAX (a plain cast of
  // either is undefined behaviour).
  int64_t i64[std::size(in)];
  ConvertFromF32(DType::kI64, in, i64, std::size(in));
  EXPECT_EQ(i64[2], std::numeric_limits<int64_t>::max());
  EXPECT_EQ(i64[3], std::numeric_limits<int64_t>::min());
  EXPECT_EQ(i64[4], std::numeric_limits<int64_t>::max());
  EXPECT_EQ(i64[6], 0);
  uint64_t u64[std::size(in)];
  ConvertFromF32(DType::kU64, in, u64, std::size(in));
  EXPECT_EQ(u64[0], 0u);
  EXPECT_EQ(u64[4], uint64_t{1} << 63);
  EXPECT_EQ(u64[5], std::numeric_limits<uint64_t>::max());
  const float below_2_64 = std::nextafter(std::ldexp(1.f, 64), 0.f);
  uint64_t u;
  ConvertFromF32(DType::kU64, &below_2_64, &u, 1);
  EXPECT_EQ(u, (uint64_t{1} << 40) * ((uint64_t{1} << 24) - 1));
  const float exact_min = -std::ldexp(1.f, 63);  // INT64_MIN itself
  int64_t m;
  ConvertFromF32(DType::kI64, &exact_min, &m, 1);
  EXPECT_EQ(m, std::numeric_limits<int64_t>::min());
}

TEST(ConvertTest, BoolIsZeroOrOne) {
  const float in[] = {0.f, -0.f, 1.f, 2.f, -3.5f, 0.25f, NAN};
  const uint8_t want[] = {0, 0, 1, 1, 1, 1, 1};  // like C++ and torch: NaN is true
  uint8_t out[std::size(in)];
  ConvertFromF32(DType::kBool, in, out, std::size(in));
  for (size_t i = 0; i < std::size(in); ++i) EXPECT_EQ(out[i], want[i]) << "input " << in[i];
}

TEST(ConvertTest, PackedI4LayoutAndSaturation) {
  // All 16 values, element 2k in the low nibble of byte k.
  std::vector<float> vals;
  for (int v = -8; v <= 7; ++v) vals.push_back(static_cast<float>(v));
  std::vector<uint8_t> packed(8, 0xAA);
  ConvertFromF32(DType::kI4, vals.data(), packed.data(), vals.size());
  for (int k = 0; k < 8; ++k) {
    uint8_t lo = static_cast<uint8_t>(vals[2 * k]) & 0xF,
            hi = static_cast<uint8_t>(vals[2 * k + 1]) & 0xF;
    EXPECT_EQ(packed[k], lo | (hi << 4)) << "byte " << k;
  }
  std::vector<float> back(vals.size());
  ConvertToF32(DType::kI4, packed.data(), back.data(), vals.size());
  EXPECT_EQ(back, vals);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(UnpackI4(packed.data(), i), vals[i]);

  // An odd count leaves the high nibble of the last byte alone.
  const float three[] = {1.f, -1.f, 5.f};
  uint8_t two[2] = {0x00, 0xB0};
  ConvertFromF32(DType::kI4, three, two, 3);
  EXPECT_EQ(two[0], 0xF1);
  EXPECT_EQ(two[1], 0xB5);

  const float in[] = {8.f, -9.f, 7.5f, -8.5f, 2.5f, -2.5f, 3.5f, NAN, 100.f, -INFINITY};
  const int want[] = {7, -8, 7, -8, 2, -2, 4, 0, 7, -8};
  uint8_t q[5] = {};
  ConvertFromF32(DType::kI4, in, q, std::size(in));
  for (size_t i = 0; i < std::size(in); ++i)
    EXPECT_EQ(UnpackI4(q, i), want[i]) << "input " << in[i];

  // PackI4 writes one nibble and keeps its neighbour.
  uint8_t b[1] = {0x00};
  PackI4(b, 1, -3);
  PackI4(b, 0, 6);
  EXPECT_EQ(b[0], 0xD6);
  PackI4(b, 1, 0);
  EXPECT_EQ(b[0], 0x06);
}

TEST(DTypeTest, SizesNamesAndParsing) {
  EXPECT_EQ(DTypeBits(DType::kI4), 4);
  EXPECT_EQ(DTypeBits(DType::kBF16), 16);
  EXPECT_EQ(DTypeBytes(DType::kI4, 5), 3u);
  EXPECT_EQ(DTypeBytes(DType::kI4, 0), 0u);
  EXPECT_EQ(DTypeBytes(DType::kF8E5M2, 7), 7u);
  EXPECT_EQ(DTypeBytes(DType::kF64, 3), 24u);
  for (int i = 0; i <= static_cast<int>(DType::kBool); ++i) {
    DType t = static_cast<DType>(i);
    auto parsed = ParseDType(DTypeName(t));
    ASSERT_TRUE(parsed.ok()) << DTypeName(t);
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_EQ(DTypeName(DType::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(DTypeName(DType::kBool), "BOOL");
  auto bad = ParseDType("F8_E8M0");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("F8_E8M0"), std::string::npos);
  EXPECT_FALSE(ParseDType("f32").ok());  // safetensors spellings are upper case
  EXPECT_TRUE(IsFloat(DType::kF8E4M3));
  EXPECT_FALSE(IsFloat(DType::kI8));
}

TEST(TensorToTest, ConvertsThroughF32) {
  Tensor f = Tensor::Zeros(DType::kF32, {2, 3});
  const float vals[] = {1.f, -2.5f, 1.0009765625f, 300.f, 1e-3f, -0.f};
  std::memcpy(f.mutable_data<float>(), vals, sizeof(vals));
  for (DType t :
       {DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2, DType::kI8, DType::kI4}) {
    Tensor q = f.To(t);
    EXPECT_EQ(q.dtype(), t);
    EXPECT_EQ(q.shape(), f.shape());
    std::vector<uint8_t> want(DTypeBytes(t, 6));
    ConvertFromF32(t, vals, want.data(), 6);
    ASSERT_EQ(q.nbytes(), want.size());
    EXPECT_EQ(std::memcmp(q.raw(), want.data(), want.size()), 0) << DTypeName(t);
    Tensor back = q.To(DType::kF32);
    std::vector<float> want_back(6);
    ConvertToF32(t, want.data(), want_back.data(), 6);
    for (int i = 0; i < 6; ++i)
      EXPECT_EQ(Bits(back.data<float>()[i]), Bits(want_back[i])) << DTypeName(t);
  }
  // Narrow to narrow goes through f32: bf16 -> f16 of 1.0009765625 (exact in
  // f16, rounds to 1.0 in bf16).
  Tensor h = f.To(DType::kBF16).To(DType::kF16);
  EXPECT_EQ(h.data<uint16_t>()[2], F32ToF16(1.f));
  EXPECT_EQ(f.To(DType::kF16).data<uint16_t>()[2], 0x3C01);
  // Same dtype: a deep copy.
  Tensor c = f.To(DType::kF32);
  c.mutable_data<float>()[0] = 7.f;
  EXPECT_EQ(f.data<float>()[0], 1.f);
  Tensor i4 = f.To(DType::kI4);
  Tensor i4c = i4.To(DType::kI4);
  EXPECT_NE(i4c.raw(), i4.raw());
  EXPECT_EQ(std::memcmp(i4c.raw(), i4.raw(), i4.nbytes()), 0);
  // e4m3 saturates through Tensor::To too.
  EXPECT_EQ(f.To(DType::kF8E4M3).data<uint8_t>()[3], F32ToF8E4M3(300.f));
}

TEST(TensorToTest, I8AndI4FromIntegers) {
  Tensor i8 = Tensor::Zeros(DType::kI8, {5});
  const int8_t v[] = {-128, -1, 0, 7, 127};
  std::memcpy(i8.mutable_data<int8_t>(), v, 5);
  Tensor as_i4 = i8.To(DType::kI4);  // saturates to -8..7
  const int want[] = {-8, -1, 0, 7, 7};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(UnpackI4(as_i4.data<uint8_t>(), i), want[i]);
  Tensor back = as_i4.To(DType::kI8);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back.data<int8_t>()[i], want[i]);
  EXPECT_EQ(as_i4.nbytes(), 3u);
}

// inspect --check-values counts NaN/Inf elements in every stored type.
TEST(ConvertTest, CountNonFiniteInEveryType) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> f32(200000, 1.5f);
  f32[3] = nan;
  f32[70000] = -inf;
  f32[199999] = inf;
  EXPECT_EQ(CountNonFinite(DType::kF32, f32.data(), 200000), 3);
  EXPECT_EQ(CountNonFinite(DType::kF32, f32.data(), 3), 0);
  for (DType t : {DType::kF16, DType::kBF16, DType::kF8E5M2}) {
    std::vector<uint8_t> bytes(DTypeBytes(t, 200000));
    ConvertFromF32(t, f32.data(), bytes.data(), 200000);
    EXPECT_EQ(CountNonFinite(t, bytes.data(), 200000), 3) << DTypeName(t);
  }
  std::vector<int32_t> ints(100, 7);
  EXPECT_EQ(CountNonFinite(DType::kI32, ints.data(), 100), 0);
  // Q8_0: 32 elements share an f16 scale; an infinite scale spoils its block
  // (0 * inf is NaN too).
  std::vector<uint8_t> q8(2 * 34, 1);
  const uint16_t one = F32ToF16(1.0f), inf16 = F32ToF16(inf);
  std::memcpy(q8.data(), &one, 2);
  std::memcpy(q8.data() + 34, &inf16, 2);
  EXPECT_EQ(CountNonFinite(DType::kQ8_0, q8.data(), 64), 32);
}

}  // namespace
}  // namespace retort
