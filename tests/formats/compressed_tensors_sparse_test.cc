// Sparse weights in compressed-tensors' sparse-bitmask and sparse-24-bitmask
// layouts, checked byte for byte against the library's own output
// (tests/reference/compressed_tensors/make_sparse_fixtures.py).
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "core/convert.h"
#include "formats/compressed_tensors.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/formats/compressed_tensors_test_util.h"
#include "tests/formats/test_util.h"

namespace retort {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const char kModule[] = "model.layers.0.self_attn.q_proj";

using testing_util::AsF32;
using testing_util::LoadAll;
using testing_util::MapLookup;
using testing_util::OpenOrDie;
using testing_util::ReadJson;
using testing_util::SameBytes;
using testing_util::ToMap;

std::string Fixture(const std::string& name) { return testing_util::CtFixture(name); }

// Packs the fixture's dense weight and compares every tensor with the
// library's; then unpacks the library's tensors back to the dense weight.
void CheckFixture(const std::string& c, bool two_four) {
  auto dense = LoadAll(Fixture(c + ".dense.safetensors"));
  auto lib = LoadAll(Fixture(c + ".safetensors"));
  ASSERT_EQ(dense.count("weight"), 1u);
  const Tensor& w = dense.at("weight");
  auto packed = two_four ? PackSparse24Bitmask(kModule, w) : PackSparseBitmask(kModule, w);
  ASSERT_TRUE(packed.ok()) << packed.status();
  size_t lib_module_tensors = 0;
  for (const auto& [name, t] : lib) lib_module_tensors += name.rfind(kModule, 0) == 0;
  EXPECT_EQ(packed->size(), lib_module_tensors);
  for (const auto& [name, t] : *packed) {
    ASSERT_EQ(lib.count(name), 1u) << name;
    EXPECT_TRUE(SameBytes(t, lib.at(name)))
        << name << ": ours " << DTypeName(t.dtype()) << ShapeString(t.shape()) << ", library "
        << DTypeName(lib.at(name).dtype()) << ShapeString(lib.at(name).shape());
  }
  auto back = two_four ? UnpackSparse24Bitmask(kModule, MapLookup(lib), DType::kBF16)
                       : UnpackSparseBitmask(kModule, MapLookup(lib), DType::kBF16);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape(), w.shape());
  EXPECT_EQ(AsF32(*back), AsF32(w));  // -0.0 == +0.0 here
}

TEST(CtSparse, BitmaskMatchesLibrary) { CheckFixture("sparse_bitmask_50", false); }

TEST(CtSparse, TwoFourMatchesLibrary) { CheckFixture("sparse_24", true); }

TEST(CtSparse, NegativeZeroIsDroppedAndComesBackPositive) {
  auto dense = LoadAll(Fixture("sparse_bitmask_50.dense.safetensors"));
  const Tensor& w = dense.at("weight");
  const int64_t i = 5 * w.dim(1) + 7;  // the fixture's -0.0
  ASSERT_EQ(w.data<uint16_t>()[i], 0x8000);
  auto packed = PackSparseBitmask(kModule, w);
  ASSERT_TRUE(packed.ok());
  auto m = ToMap(*packed);
  auto back = UnpackSparseBitmask(kModule, MapLookup(m), DType::kBF16);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->data<uint16_t>()[i], 0);
}

TEST(CtSparse, ConfigsMatchLibrary) {
  json lib = ReadJson(Fixture("sparse_configs.json"));
  EXPECT_EQ(SparseQuantizationConfig("unstructured", 0.6125, {"lm_head"}),
            lib["sparse_bitmask_50"]);
  EXPECT_EQ(SparseQuantizationConfig("2:4", 0.5, {"lm_head"}), lib["sparse_24"]);
  EXPECT_EQ(SparsityConfig("4:8", 0.5, {})["format"], "sparse-bitmask");
  EXPECT_STREQ(SparseFormatFor("2:4"), "sparse-24-bitmask");
}

Tensor RandomSparse(DType dtype, int64_t rows, int64_t cols, double density, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> v(rows * cols);
  for (float& x : v) x = u(gen) < density ? n(gen) + 0.01f : 0.f;
  Tensor f = Tensor::Zeros(DType::kF32, {rows, cols});
  std::memcpy(f.mutable_raw(), v.data(), v.size() * sizeof(float));
  return f.To(dtype);
}

TEST(CtSparse, BitmaskRoundTripsEveryDtype) {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3}) {
    for (double density : {0.0, 0.3, 1.0}) {
      Tensor w = RandomSparse(dt, 13, 37, density, 11);
      auto packed = PackSparseBitmask(kModule, w);
      ASSERT_TRUE(packed.ok()) << packed.status();
      auto m = ToMap(*packed);
      EXPECT_EQ(m.at(std::string(kModule) + ".bitmask").shape(), (Shape{13, 5}));
      auto back = UnpackSparseBitmask(kModule, MapLookup(m), dt);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_TRUE(SameBytes(*back, w)) << DTypeName(dt) << " density " << density;
      auto f32 = UnpackSparseBitmask(kModule, MapLookup(m), DType::kF32);
      ASSERT_TRUE(f32.ok());
      EXPECT_EQ(AsF32(*f32), AsF32(w));
    }
  }
}

TEST(CtSparse, TwoFourRoundTripsIncludingSparseGroups) {
  // Groups with 2, 1 and 0 nonzeros.
  Tensor w = Tensor::Zeros(DType::kF32, {2, 8});
  float* p = w.mutable_data<float>();
  p[1] = 1.f, p[3] = -2.f;  // group 0: two
  p[6] = 3.f;               // group 1: one
  p[8] = 0.5f, p[9] = 4.f;  // group 2: two; group 3: none
  auto packed = PackSparse24Bitmask(kModule, w);
  ASSERT_TRUE(packed.ok()) << packed.status();
  auto m = ToMap(*packed);
  EXPECT_EQ(m.at(std::string(kModule) + ".compressed").shape(), (Shape{2, 4}));
  EXPECT_EQ(m.at(std::string(kModule) + ".shape").shape(), (Shape{2, 1}));
  auto back = UnpackSparse24Bitmask(kModule, MapLookup(m), DType::kF32);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(SameBytes(*back, w));
}

TEST(CtSparse, RefusesBadDenseWeights) {
  Tensor rank1 = Tensor::Zeros(DType::kF32, {8});
  EXPECT_THAT(PackSparseBitmask(kModule, rank1).status().message(), HasSubstr("2-D"));
  Tensor ints = Tensor::Zeros(DType::kI32, {2, 4});
  EXPECT_THAT(PackSparseBitmask(kModule, ints).status().message(), HasSubstr("I32"));
  Tensor odd = Tensor::Zeros(DType::kF32, {2, 6});
  EXPECT_THAT(PackSparse24Bitmask(kModule, odd).status().message(), HasSubstr("multiple of 4"));
  Tensor dense3 = Tensor::Zeros(DType::kF32, {1, 4});
  dense3.mutable_data<float>()[0] = dense3.mutable_data<float>()[1] =
      dense3.mutable_data<float>()[2] = 1.f;
  auto s = PackSparse24Bitmask(kModule, dense3).status();
  EXPECT_THAT(s.message(), HasSubstr("not 2:4"));
  EXPECT_THAT(s.message(), HasSubstr(kModule));
}

TEST(CtSparse, RefusesInconsistentTensors) {
  const std::string mod = kModule;
  Tensor w = RandomSparse(DType::kBF16, 4, 16, 0.5, 3);
  auto packed = PackSparseBitmask(kModule, w);
  ASSERT_TRUE(packed.ok());
  auto good = ToMap(*packed);
  auto unpack = [&](const std::map<std::string, Tensor>& m) {
    return UnpackSparseBitmask(kModule, MapLookup(m), DType::kBF16).status();
  };
  ASSERT_TRUE(unpack(good).ok());

  {  // shape says more columns than the bitmask holds
    auto m = good;
    Tensor s = m.at(mod + ".shape").Clone();
    s.mutable_data<int64_t>()[1] = 24;
    m[mod + ".shape"] = s;
    auto st = unpack(m);
    EXPECT_THAT(st.message(), HasSubstr(mod + ".bitmask: expected shape [4, 3]"));
  }
  {  // bitmask with a dropped row
    auto m = good;
    m[mod + ".bitmask"] = m.at(mod + ".bitmask").Rows(0, 3).Clone();
    EXPECT_THAT(unpack(m).message(), HasSubstr(".bitmask: expected shape"));
  }
  {  // one bit more than there are values
    auto m = good;
    Tensor b = m.at(mod + ".bitmask").Clone();
    uint8_t* bits = b.mutable_data<uint8_t>();
    int i = 0;
    while (bits[i / 8] & (1 << (i % 8))) ++i;
    bits[i / 8] |= static_cast<uint8_t>(1 << (i % 8));
    m[mod + ".bitmask"] = b;
    EXPECT_THAT(unpack(m).message(), HasSubstr("values but"));
  }
  {  // row_offsets that disagree with the bitmask
    auto m = good;
    Tensor o = m.at(mod + ".row_offsets").Clone();
    o.mutable_data<int64_t>()[2] += 1;
    m[mod + ".row_offsets"] = o;
    EXPECT_THAT(unpack(m).message(), HasSubstr(".row_offsets[2]"));
  }
  {  // missing tensor
    auto m = good;
    m.erase(mod + ".compressed");
    auto st = unpack(m);
    EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(st.message(), HasSubstr(mod + ".compressed"));
  }
  {  // shape tensor with three entries
    auto m = good;
    m[mod + ".shape"] = Tensor::Zeros(DType::kI64, {3});
    EXPECT_THAT(unpack(m).message(), HasSubstr(".shape: expected 2 elements"));
  }
}

TEST(CtSparse, TwoFourRefusesBitmaskThatIsNotTwoOfFour) {
  const std::string mod = kModule;
  auto lib = LoadAll(Fixture("sparse_24.safetensors"));
  Tensor b = lib.at(mod + ".bitmask").Clone();
  b.mutable_data<uint8_t>()[0] |= 0x0f;  // all four of the first group marked
  lib[mod + ".bitmask"] = b;
  auto st = UnpackSparse24Bitmask(kModule, MapLookup(lib), DType::kBF16).status();
  EXPECT_THAT(st.message(), HasSubstr("2:4 needs exactly 2"));
  lib = LoadAll(Fixture("sparse_24.safetensors"));
  lib[mod + ".compressed"] = lib.at(mod + ".compressed").Rows(0, 7).Clone();
  EXPECT_THAT(UnpackSparse24Bitmask(kModule, MapLookup(lib), DType::kBF16).status().message(),
              HasSubstr(".compressed: expected"));
}

}  // namespace
}  // namespace retort
