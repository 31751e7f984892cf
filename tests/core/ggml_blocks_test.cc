// ggml block decoders checked bit for bit against gguf-py's dequantize, on
// random but valid blocks from tests/reference/ggml_blocks/make_fixtures.py
// (its docstring has the file layout; Q8_1/Q8_K are ggml's x = d * q).
#include "core/ggml_blocks.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/dtype.h"
#include "gtest/gtest.h"

namespace retort {
namespace {

struct DecodeFixture {
  uint32_t n_blocks = 0, block_bytes = 0;
  std::vector<uint8_t> blocks;
  std::vector<float> expected;
};

DecodeFixture ReadDecodeFixture(const std::string& type_name, int block_elems) {
  const std::string path = "tests/reference/ggml_blocks/decode_" + type_name + ".bin";
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  DecodeFixture f;
  if (bytes.size() < 8) {
    ADD_FAILURE() << "missing or short fixture " << path;
    return f;
  }
  std::memcpy(&f.n_blocks, bytes.data(), 4);
  std::memcpy(&f.block_bytes, bytes.data() + 4, 4);
  const size_t raw = size_t{f.n_blocks} * f.block_bytes;
  const size_t out = size_t{f.n_blocks} * block_elems;
  if (bytes.size() != 8 + raw + 4 * out) {
    ADD_FAILURE() << path << ": " << bytes.size() << " bytes, expected " << 8 + raw + 4 * out;
    return f;
  }
  f.blocks.assign(bytes.begin() + 8, bytes.begin() + 8 + raw);
  f.expected.resize(out);
  std::memcpy(f.expected.data(), bytes.data() + 8 + raw, 4 * out);
  return f;
}

class DecodeTest : public ::testing::TestWithParam<DType> {};

TEST_P(DecodeTest, BitExactWithGgufPy) {
  const DType type = GetParam();
  const std::string name(DTypeName(type));
  const int block_elems = DTypeBlockElems(type);
  DecodeFixture f = ReadDecodeFixture(name, block_elems);
  ASSERT_FALSE(f.expected.empty());
  ASSERT_EQ(static_cast<int>(f.block_bytes), DTypeBlockBytes(type)) << name;
  const int64_t n = static_cast<int64_t>(f.expected.size());
  ASSERT_EQ(DTypeBytes(type, n), f.blocks.size());

  // Through the public entry point every reader uses.
  std::vector<float> got(n, -1.f);
  ConvertToF32(type, f.blocks.data(), got.data(), n);
  int mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(f.expected[i]);
    if (!both_nan && std::memcmp(&got[i], &f.expected[i], 4) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << name << " element " << i << " (block " << i / block_elems << ", index "
                    << i % block_elems << "): got " << got[i] << " expected " << f.expected[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << name;

  if (IsBlockQuantized(type)) {
    // Block by block gives the same as the whole row.
    std::vector<float> one(block_elems);
    for (uint32_t b = 0; b < f.n_blocks; ++b) {
      ggml::DequantizeRow(type, f.blocks.data() + size_t{b} * f.block_bytes, one.data(),
                          block_elems);
      ASSERT_EQ(std::memcmp(one.data(), got.data() + size_t{b} * block_elems, 4 * block_elems), 0)
          << name << " block " << b;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DecodeTest,
                         ::testing::Values(DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                                           DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ8_1,
                                           DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                                           DType::kQ6_K, DType::kQ8_K),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(GgmlBlocksTest, DTypeTable) {
  struct Row {
    DType type;
    int elems, bytes;
    double bpw;
  };
  const Row rows[] = {
      {DType::kQ4_0, 32, 18, 4.5},      {DType::kQ4_1, 32, 20, 5.0},
      {DType::kQ5_0, 32, 22, 5.5},      {DType::kQ5_1, 32, 24, 6.0},
      {DType::kQ8_0, 32, 34, 8.5},      {DType::kQ8_1, 32, 36, 9.0},
      {DType::kQ2_K, 256, 84, 2.625},   {DType::kQ3_K, 256, 110, 3.4375},
      {DType::kQ4_K, 256, 144, 4.5},    {DType::kQ5_K, 256, 176, 5.5},
      {DType::kQ6_K, 256, 210, 6.5625}, {DType::kQ8_K, 256, 292, 9.125},
  };
  for (const Row& r : rows) {
    EXPECT_TRUE(IsBlockQuantized(r.type));
    EXPECT_EQ(DTypeBlockElems(r.type), r.elems);
    EXPECT_EQ(DTypeBlockBytes(r.type), r.bytes);
    EXPECT_DOUBLE_EQ(BitsPerWeight(r.type), r.bpw);
    EXPECT_EQ(DTypeBytes(r.type, 3 * r.elems), size_t(3 * r.bytes));
    auto parsed = ParseAnyDType(DTypeName(r.type));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, r.type);
    EXPECT_FALSE(ParseDType(DTypeName(r.type)).ok()) << "block types are not safetensors dtypes";
  }
  EXPECT_FALSE(IsBlockQuantized(DType::kF16));
  EXPECT_EQ(DTypeBlockElems(DType::kBF16), 1);
}

TEST(GgmlBlocksTest, KScaleMinUnpacking) {
  // Sub-block j < 4: low 6 bits of bytes j (scale) and j + 4 (min); j >= 4:
  // nibbles of byte j + 4 below the top two bits of bytes j - 4 and j.
  uint8_t packed[12];
  const uint8_t sc[8] = {1, 17, 33, 63, 62, 5, 40, 21}, mn[8] = {63, 0, 12, 48, 7, 59, 31, 16};
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    ggml::UnpackKScaleMin(packed, j, &s, &m);
    EXPECT_EQ(s, sc[j]) << j;
    EXPECT_EQ(m, mn[j]) << j;
  }
}

// The block-type table agrees with the dtype table: every block dtype, and
// only those, has a struct, of the dtype's block size.
TEST(GgmlBlocksTest, VisitBlockTypeGivesEachBlockDTypeItsStruct) {
  int visited = 0;
  for (int t = 0; t <= static_cast<int>(DType::kQ8_K); ++t) {
    const DType type = static_cast<DType>(t);
    size_t size = 0;
    const bool block =
        ggml::VisitBlockType(type, [&]<typename Block>(Block*) { size = sizeof(Block); });
    EXPECT_EQ(block, IsBlockQuantized(type)) << DTypeName(type);
    if (block) {
      ++visited;
      EXPECT_EQ(size, static_cast<size_t>(DTypeBlockBytes(type))) << DTypeName(type);
    }
  }
  EXPECT_EQ(visited, 12);
}

}  // namespace
}  // namespace retort
