#include "formats/safetensors.h"

#include <cmath>
#include <cstring>
#include <random>

#include "core/convert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/formats/test_util.h"

namespace retort {
namespace {

using ::retort::testing_util::Fixture;
using ::retort::testing_util::RawSafetensors;
using ::retort::testing_util::ReadBytes;
using ::retort::testing_util::ScratchDir;
using ::retort::testing_util::WriteBytes;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr DType kAllDTypes[] = {DType::kF32,    DType::kF16, DType::kBF16, DType::kF8E4M3,
                                DType::kF8E5M2, DType::kI8,  DType::kI4,   DType::kU8,
                                DType::kI16,    DType::kU16, DType::kI32,  DType::kU32,
                                DType::kI64,    DType::kU64, DType::kF64,  DType::kBool};

std::string Bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}

Tensor RandomBytesTensor(DType dtype, Shape shape, std::mt19937* rng) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.mutable_raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>((*rng)() & 0xff);
  if (dtype == DType::kBool)
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] &= 1;
  if (dtype == DType::kI4 && t.numel() % 2)
    p[t.nbytes() - 1] &= 0x0f;  // unused high nibble stays zero
  return t;
}

// --- round trips ------------------------------------------------------------

TEST(SafetensorsRoundTripTest, EveryDType) {
  ScratchDir dir;
  std::mt19937 rng(1);
  std::vector<std::pair<std::string, Tensor>> tensors;
  int i = 0;
  for (DType d : kAllDTypes) {
    Shape shape = (i % 3 == 0) ? Shape{3, 5} : (i % 3 == 1) ? Shape{7} : Shape{2, 1, 3};
    tensors.emplace_back("t" + std::to_string(i++) + "_" + std::string(DTypeName(d)),
                         RandomBytesTensor(d, shape, &rng));
  }
  const std::string path = dir.File("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->path(), path);
  EXPECT_EQ((*r)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ((*r)->entries().size(), tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& [name, t] = tensors[k];
    SCOPED_TRACE(name);
    EXPECT_EQ((*r)->entries()[k].name, name);  // given order == offset order
    ASSERT_TRUE((*r)->Has(name));
    auto got = (*r)->Get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->dtype(), t.dtype());
    EXPECT_EQ(got->shape(), t.shape());
    EXPECT_EQ(Bytes(*got), Bytes(t));
  }
  // Header is padded so the data buffer starts 8-aligned.
  EXPECT_EQ((*r)->data_start() % 8, 0u);
}

TEST(SafetensorsRoundTripTest, MetadataEntriesAndLookups) {
  ScratchDir dir;
  Tensor a = Tensor::Zeros(DType::kF32, {2});
  a.mutable_data<float>()[1] = 1.5f;
  Tensor s = Tensor::Zeros(DType::kBF16, {});
  Tensor e = Tensor::Zeros(DType::kF16, {0, 4});
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"quote\"d", "line\nbreak"}, {"ünï", "çødé"}};
  const std::string path = dir.File("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"z", a}, {"scalar", s}, {"empty", e}}, meta).ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->metadata(), meta);
  ASSERT_EQ((*r)->entries().size(), 3u);
  EXPECT_EQ((*r)->entries()[0].name, "z");
  EXPECT_EQ((*r)->entries()[0].begin, 0u);
  EXPECT_EQ((*r)->entries()[0].end, 8u);
  EXPECT_EQ((*r)->entries()[1].name, "scalar");
  EXPECT_EQ((*r)->entries()[2].name, "empty");
  const SafetensorsEntry* f = (*r)->Find("scalar");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->dtype, DType::kBF16);
  EXPECT_TRUE(f->shape.empty());
  EXPECT_EQ((*r)->Find("nope"), nullptr);
  EXPECT_FALSE((*r)->Has("nope"));
  auto missing = (*r)->Get("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), StartsWith(path + ": "));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope"));
  auto empty = (*r)->Get("empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->numel(), 0);
  EXPECT_EQ(empty->shape(), (Shape{0, 4}));
  EXPECT_EQ((*r)->data_start() % 8, 0u);  // header padded with spaces
}

TEST(SafetensorsRoundTripTest, NoTensorsNoMetadata) {
  ScratchDir dir;
  const std::string path = dir.File("empty.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {}, {}).ok());
  EXPECT_EQ(ReadBytes(path), RawSafetensors("{}      ", ""));
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->entries().empty());
  EXPECT_TRUE((*r)->metadata().empty());
}

TEST(SafetensorsRoundTripTest, ViewIsZeroCopyAndOutlivesReader) {
  ScratchDir dir;
  Tensor a = Tensor::Zeros(DType::kF32, {4});
  for (int i = 0; i < 4; ++i) a.mutable_data<float>()[i] = 0.25f * i;
  const std::string path = dir.File("v.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", a}}).ok());
  Tensor view;
  {
    auto r = SafetensorsReader::Open(path);
    ASSERT_TRUE(r.ok());
    auto t = (*r)->Get("a");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->raw(), (*r)->EntryData(*(*r)->Find("a")));  // points into the mapping
    view = *t;
  }
  // The reader is gone; the view keeps the mapping alive.
  EXPECT_EQ(view.data<float>()[3], 0.75f);
}

TEST(SafetensorsRoundTripTest, MisalignedTensorIsCopiedToAlignedBuffer) {
  ScratchDir dir;
  Tensor b = Tensor::Zeros(DType::kU8, {3});
  Tensor f = Tensor::Zeros(DType::kF32, {2});
  f.mutable_data<float>()[0] = -2.5f;
  f.mutable_data<float>()[1] = 7.0f;
  const std::string path = dir.File("mis.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"bytes", b}, {"floats", f}}).ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->Find("floats")->begin, 3u);
  auto t = (*r)->Get("floats");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->raw()) % alignof(float), 0u);
  EXPECT_NE(t->raw(), (*r)->EntryData(*(*r)->Find("floats")));
  EXPECT_EQ(t->data<float>()[0], -2.5f);
  EXPECT_EQ(t->data<float>()[1], 7.0f);
}

// --- files written by the python safetensors library -------------------------

TEST(SafetensorsPythonTest, ReadsEveryDTypeExactly) {
  auto r = SafetensorsReader::Open(Fixture("all_dtypes.safetensors"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  auto text = ReadBytes(Fixture("all_dtypes.expected.json"));
  nlohmann::json expected = nlohmann::json::parse(text);
  ASSERT_EQ((*r)->entries().size(), expected.size());
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    auto t = (*r)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(std::string(DTypeName(t->dtype())), want["dtype"].get<std::string>());
    EXPECT_EQ(t->shape(), want["shape"].get<Shape>());
    // Raw bytes.
    std::string hex;
    static const char kHex[] = "0123456789abcdef";
    for (unsigned char c : Bytes(*t)) {
      hex += kHex[c >> 4];
      hex += kHex[c & 15];
    }
    EXPECT_EQ(hex, want["hex"].get<std::string>());
    // Values: floats through our conversions to f32 (exact), 64-bit and
    // 32-bit integers read directly (f32 would round them).
    const auto values = want["values"].get<std::vector<double>>();
    ASSERT_EQ(static_cast<int64_t>(values.size()), t->numel());
    for (int64_t i = 0; i < t->numel(); ++i) {
      double got = 0;
      switch (t->dtype()) {
        case DType::kF64:
          got = t->data<double>()[i];
          break;
        case DType::kI64:
          got = static_cast<double>(t->data<int64_t>()[i]);
          break;
        case DType::kU64:
          got = static_cast<double>(t->data<uint64_t>()[i]);
          break;
        case DType::kI32:
          got = t->data<int32_t>()[i];
          break;
        case DType::kU32:
          got = t->data<uint32_t>()[i];
          break;
        case DType::kBool:
          got = t->data<uint8_t>()[i] ? 1.0 : 0.0;
          break;
        default: {
          float f;
          ConvertToF32(t->dtype(),
                       static_cast<const uint8_t*>(t->raw()) + DTypeBytes(t->dtype(), i), &f, 1);
          got = f;
        }
      }
      EXPECT_EQ(got, values[i]) << "element " << i;
    }
  }
  // The fixture covers the narrow float types this test is most about.
  for (const char* n : {"t_bf16", "t_f16", "t_f8_e4m3", "t_f8_e5m2"})
    EXPECT_TRUE((*r)->Has(n)) << n;
}

TEST(SafetensorsPythonTest, ReadsFileWithoutMetadata) {
  auto r = SafetensorsReader::Open(Fixture("no_metadata.safetensors"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->metadata().empty());
  ASSERT_EQ((*r)->entries().size(), 2u);
  EXPECT_EQ((*r)->entries()[0].name, "b");  // python puts F32 before U8
  EXPECT_EQ((*r)->entries()[1].name, "a");
  auto b = (*r)->Get("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data<float>()[3], 3.0f);
}

// The tensors of formula.safetensors, in the order python wrote them
// (descending dtype alignment, then name). Kept in sync with FORMULA in
// tests/reference/safetensors/make_fixtures.py.
std::vector<std::pair<std::string, Tensor>> FormulaTensors() {
  struct Spec {
    const char* name;
    DType dtype;
    Shape shape;
  };
  const std::vector<Spec> specs = {
      {"ids", DType::kI64, {2, 2}},
      {"scalar", DType::kF64, {}},
      {"norm.weight", DType::kF32, {3}},
      {"i32", DType::kI32, {1, 2}},
      {"embed.weight", DType::kBF16, {4, 3}},
      {"empty", DType::kF16, {0, 3}},
      {"h", DType::kF16, {2, 2}},
      {"u16", DType::kU16, {2}},
      {"q.weight", DType::kF8E4M3, {2, 5}},
      {"k.weight", DType::kF8E5M2, {3}},
      {"small", DType::kI8, {3}},
      {"mask", DType::kBool, {5}},
  };
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Spec& s : specs) {
    Tensor t = Tensor::Zeros(s.dtype, s.shape);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double v = ((7 * i) % 11 - 5) / 2.0;  // exact in every float type
      switch (s.dtype) {
        case DType::kI64:
          t.mutable_data<int64_t>()[i] = static_cast<int64_t>(v * 2);
          break;
        case DType::kI32:
          t.mutable_data<int32_t>()[i] = static_cast<int32_t>(v * 2);
          break;
        case DType::kI8:
          t.mutable_data<int8_t>()[i] = static_cast<int8_t>(v * 2);
          break;
        case DType::kU16:
          t.mutable_data<uint16_t>()[i] = static_cast<uint16_t>(v * 2 + 5);
          break;
        case DType::kBool:
          t.mutable_data<uint8_t>()[i] = v > 0;
          break;
        case DType::kF64:
          t.mutable_data<double>()[i] = v;
          break;
        default: {
          const float f = static_cast<float>(v);
          ConvertFromF32(s.dtype, &f,
                         static_cast<uint8_t*>(t.mutable_raw()) + DTypeBytes(s.dtype, i), 1);
        }
      }
    }
    out.emplace_back(s.name, t);
  }
  return out;
}

TEST(SafetensorsPythonTest, WriterOutputIsByteIdenticalToPython) {
  ScratchDir dir;
  const std::string path = dir.File("formula.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, FormulaTensors(), {{"format", "pt"}}).ok());
  const std::string ours = ReadBytes(path), theirs = ReadBytes(Fixture("formula.safetensors"));
  ASSERT_FALSE(theirs.empty());
  EXPECT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs)
      << "first difference at byte "
      << std::mismatch(ours.begin(), ours.end(), theirs.begin(), theirs.end()).first - ours.begin();
}

TEST(SafetensorsPythonTest, WriterWithoutMetadataIsByteIdenticalToPython) {
  ScratchDir dir;
  Tensor b = Tensor::Zeros(DType::kF32, {4});
  for (int i = 0; i < 4; ++i) b.mutable_data<float>()[i] = i;
  Tensor a = Tensor::Zeros(DType::kU8, {3});
  for (int i = 0; i < 3; ++i) a.mutable_data<uint8_t>()[i] = i;
  const std::string path = dir.File("nm.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"b", b}, {"a", a}}, {}).ok());
  EXPECT_EQ(ReadBytes(path), ReadBytes(Fixture("no_metadata.safetensors")));
}

// --- the writer refuses bad input and leaves nothing behind -------------------

class SafetensorsWriterTest : public ::testing::Test {
 protected:
  void ExpectRefused(const std::vector<std::pair<std::string, Tensor>>& tensors,
                     const std::string& needle,
                     const std::map<std::string, std::string>& meta = {{"format", "pt"}}) {
    const std::string path = dir_.File("out.safetensors");
    absl::Status s = WriteSafetensors(path, tensors, meta);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), StartsWith(path + ": "));
    EXPECT_THAT(std::string(s.message()), HasSubstr(needle));
    EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos);
    EXPECT_TRUE(dir_.List().empty()) << "left " << dir_.List()[0];
  }
  ScratchDir dir_;
  Tensor t_ = Tensor::Zeros(DType::kF32, {2});
};

TEST_F(SafetensorsWriterTest, RefusesDuplicateNames) {
  ExpectRefused({{"w", t_}, {"x", t_}, {"w", t_}}, "duplicate tensor name \"w\"");
}
TEST_F(SafetensorsWriterTest, RefusesReservedName) {
  ExpectRefused({{"__metadata__", t_}}, "reserved");
}
TEST_F(SafetensorsWriterTest, RefusesEmptyName) { ExpectRefused({{"", t_}}, "empty tensor name"); }
TEST_F(SafetensorsWriterTest, RefusesTensorWithoutData) {
  ExpectRefused({{"w", Tensor()}}, "has no data");
}
TEST_F(SafetensorsWriterTest, RefusesInvalidUtf8Name) {
  ExpectRefused({{"bad\xff", t_}}, "not valid UTF-8");
}
TEST_F(SafetensorsWriterTest, RefusesInvalidUtf8Metadata) {
  ExpectRefused({{"w", t_}}, "metadata is not valid UTF-8", {{"k", "\xc3"}});
}

TEST_F(SafetensorsWriterTest, FailedWriteKeepsPreviousFile) {
  const std::string path = dir_.File("out.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", t_}}).ok());
  const std::string before = ReadBytes(path);
  ASSERT_FALSE(WriteSafetensors(path, {{"w", t_}, {"w", t_}}).ok());
  EXPECT_EQ(ReadBytes(path), before);
  EXPECT_EQ(dir_.List(), (std::vector<std::string>{"out.safetensors"}));
}

TEST_F(SafetensorsWriterTest, MissingFolderIsAnErrorNamingThePath) {
  const std::string path = dir_.File("no/such/dir/out.safetensors");
  absl::Status s = WriteSafetensors(path, {{"w", t_}});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
}

// --- the reader rejects bad input: one line, names the file -------------------

class SafetensorsBadInputTest : public ::testing::Test {
 protected:
  // Writes `bytes`, opens them and checks the error; returns its message.
  std::string ExpectOpenError(const std::string& bytes, absl::StatusCode code,
                              const std::string& needle) {
    const std::string path = dir_.File("bad.safetensors");
    WriteBytes(path, bytes);
    auto r = SafetensorsReader::Open(path);
    EXPECT_FALSE(r.ok());
    if (r.ok()) return "";
    const std::string msg(r.status().message());
    EXPECT_EQ(r.status().code(), code) << msg;
    EXPECT_THAT(msg, StartsWith(path + ": "));
    EXPECT_THAT(msg, HasSubstr(needle));
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  std::string Entry(const std::string& dtype, const std::string& shape,
                    const std::string& offsets) {
    return "{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
  }
  ScratchDir dir_;
  const absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
  const absl::StatusCode kLoss = absl::StatusCode::kDataLoss;
};

TEST_F(SafetensorsBadInputTest, MissingFile) {
  auto r = SafetensorsReader::Open(dir_.File("absent.safetensors"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()),
              StartsWith(dir_.File("absent.safetensors") + ": "));
}

TEST_F(SafetensorsBadInputTest, EmptyFile) { ExpectOpenError("", kLoss, "too short"); }
TEST_F(SafetensorsBadInputTest, ShorterThanEightBytes) {
  ExpectOpenError(std::string("\x02\0\0\0", 4), kLoss, "4 bytes, too short");
}

TEST_F(SafetensorsBadInputTest, HeaderLengthOverLimit) {
  ExpectOpenError(testing_util::LittleEndian64(100'000'001) + "{}", kInvalid, "exceeds the limit");
}
TEST_F(SafetensorsBadInputTest, HeaderLengthHuge) {
  ExpectOpenError(testing_util::LittleEndian64(~0ull) + "{}", kInvalid, "exceeds the limit");
}
TEST_F(SafetensorsBadInputTest, HeaderLengthPastEndOfFile) {
  ExpectOpenError(testing_util::LittleEndian64(64) + "{}", kLoss,
                  "runs past the end of the 10-byte file");
}
TEST_F(SafetensorsBadInputTest, HeaderNotJson) {
  ExpectOpenError(RawSafetensors("{\"a\": nope}", ""), kInvalid, "not valid UTF-8 JSON");
}
TEST_F(SafetensorsBadInputTest, HeaderNestedTooDeep) {
  // Refused by a byte scan before the parser (which recurses) sees it.
  const std::string deep = "{\"a\":" + std::string(100'000, '[') + std::string(100'000, ']') + "}";
  ExpectOpenError(RawSafetensors(deep, ""), kInvalid,
                  ": header: JSON nests deeper than 64 levels (at byte 68)");
}
TEST_F(SafetensorsBadInputTest, HeaderTruncatedJson) {
  ExpectOpenError(RawSafetensors("{\"a\":{", ""), kInvalid, "not valid UTF-8 JSON");
}
TEST_F(SafetensorsBadInputTest, HeaderInvalidUtf8) {
  ExpectOpenError(RawSafetensors("{\"a\xff\":{}}", ""), kInvalid, "not valid UTF-8 JSON");
}
TEST_F(SafetensorsBadInputTest, HeaderWithNulPadding) {
  ExpectOpenError(RawSafetensors(std::string("{}\0\0\0\0\0\0", 8), ""), kInvalid,
                  "not valid UTF-8 JSON");
}
TEST_F(SafetensorsBadInputTest, HeaderNotAnObject) {
  ExpectOpenError(RawSafetensors("[1, 2]  ", ""), kInvalid, "must be a JSON object, got array");
}
TEST_F(SafetensorsBadInputTest, EntryNotAnObject) {
  ExpectOpenError(RawSafetensors("{\"a\":5}", ""), kInvalid, "tensor \"a\": expected an object");
}
TEST_F(SafetensorsBadInputTest, MissingDtype) {
  ExpectOpenError(RawSafetensors("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd"),
                  kInvalid, "tensor \"a\": missing \"dtype\"");
}
TEST_F(SafetensorsBadInputTest, MissingShape) {
  ExpectOpenError(RawSafetensors("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "abcd"),
                  kInvalid, "missing \"shape\"");
}
TEST_F(SafetensorsBadInputTest, MissingDataOffsets) {
  ExpectOpenError(RawSafetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "abcd"), kInvalid,
                  "missing \"data_offsets\"");
}
TEST_F(SafetensorsBadInputTest, DtypeNotAString) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("32", "[1]", "[0,4]") + "}", "abcd"), kInvalid,
                  "\"dtype\" must be a string");
}
TEST_F(SafetensorsBadInputTest, UnknownDtype) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"C64\"", "[1]", "[0,8]") + "}", "abcdefgh"),
                  kInvalid, "unknown dtype \"C64\"");
}
TEST_F(SafetensorsBadInputTest, ShapeNotAnArray) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "\"1\"", "[0,4]") + "}", "abcd"),
                  kInvalid, "\"shape\" must be an array");
}
TEST_F(SafetensorsBadInputTest, ShapeNotIntegers) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1.5]", "[0,4]") + "}", "abcd"),
                  kInvalid, "non-negative integers");
}
TEST_F(SafetensorsBadInputTest, NegativeShape) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[2,-1]", "[0,4]") + "}", "abcd"),
                  kInvalid, "negative dimension -1");
}
TEST_F(SafetensorsBadInputTest, ShapeOverflows) {
  ExpectOpenError(
      RawSafetensors("{\"a\":" + Entry("\"F32\"", "[4294967296,4294967296]", "[0,4]") + "}",
                     "abcd"),
      kInvalid, "too many elements");
}
TEST_F(SafetensorsBadInputTest, OffsetsWrongType) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "[0]") + "}", "abcd"),
                  kInvalid, "\"data_offsets\" must be [begin, end]");
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "[-4,0]") + "}", "abcd"),
                  kInvalid, "\"data_offsets\" must be [begin, end]");
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "{}") + "}", "abcd"), kInvalid,
                  "\"data_offsets\" must be [begin, end]");
}
TEST_F(SafetensorsBadInputTest, OffsetsEndBeforeBegin) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[0]", "[4,0]") + "}", "abcd"),
                  kInvalid, "end before they begin");
}
TEST_F(SafetensorsBadInputTest, SizeDisagreesWithShape) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[2]", "[0,4]") + "}", "abcd"),
                  kInvalid, "hold 4 bytes, but F32 [2] needs 8");
}
TEST_F(SafetensorsBadInputTest, OffsetsDoNotStartAtZero) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "[4,8]") + "}", "abcdefgh"),
                  kInvalid, "gap in the data buffer: bytes [0, 4)");
}
TEST_F(SafetensorsBadInputTest, GapBetweenTensors) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "[0,4]") +
                                     ",\"b\":" + Entry("\"F32\"", "[1]", "[8,12]") + "}",
                                 std::string(12, 'x')),
                  kInvalid, "gap in the data buffer: bytes [4, 8) before tensor \"b\"");
}
TEST_F(SafetensorsBadInputTest, OverlappingTensors) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[2]", "[0,8]") +
                                     ",\"b\":" + Entry("\"F32\"", "[1]", "[4,8]") + "}",
                                 std::string(8, 'x')),
                  kInvalid, "overlaps tensor");
}
TEST_F(SafetensorsBadInputTest, TwoNamesSameBytes) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "[0,4]") +
                                     ",\"b\":" + Entry("\"F32\"", "[1]", "[0,4]") + "}",
                                 std::string(4, 'x')),
                  kInvalid, "overlaps tensor");
}
TEST_F(SafetensorsBadInputTest, TrailingBytes) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "[0,4]") + "}", "abcdEXTRA"),
                  kInvalid, "5 trailing bytes after the last tensor");
}
TEST_F(SafetensorsBadInputTest, TensorPastEndOfFile) {
  ExpectOpenError(
      RawSafetensors("{\"a\":" + Entry("\"F32\"", "[4]", "[0,16]") + "}", "abcd"), kLoss,
      "tensor \"a\" ends at byte 16 of the data buffer, but the file holds only 4 data bytes");
}
TEST_F(SafetensorsBadInputTest, TruncatedValidFile) {
  const std::string good = ReadBytes(Fixture("formula.safetensors"));
  ExpectOpenError(good.substr(0, good.size() - 3), kLoss, "(truncated?)");
  ExpectOpenError(good.substr(0, 100), kLoss, "runs past the end");
}
TEST_F(SafetensorsBadInputTest, DuplicateNames) {
  ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F32\"", "[1]", "[0,4]") +
                                     ",\"a\":" + Entry("\"F32\"", "[1]", "[4,8]") + "}",
                                 std::string(8, 'x')),
                  kInvalid, "duplicate key \"a\"");
}
TEST_F(SafetensorsBadInputTest, DuplicateFieldInEntry) {
  ExpectOpenError(
      RawSafetensors(
          "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,4]}}",
          "abcd"),
      kInvalid, "duplicate key \"dtype\"");
}
TEST_F(SafetensorsBadInputTest, MetadataNotStrings) {
  ExpectOpenError(RawSafetensors("{\"__metadata__\":{\"format\":1}}", ""), kInvalid,
                  "\"__metadata__\" value for \"format\" must be a string");
  ExpectOpenError(RawSafetensors("{\"__metadata__\":[]}", ""), kInvalid,
                  "\"__metadata__\" must be an object");
}
TEST_F(SafetensorsBadInputTest, ControlBytesInMessageAreMadePrintable) {
  const std::string msg =
      ExpectOpenError(RawSafetensors("{\"a\":" + Entry("\"F\\n32\"", "[1]", "[0,4]") + "}", "abcd"),
                      kInvalid, "unknown dtype \"F?32\"");
}
TEST_F(SafetensorsBadInputTest, DirectoryInsteadOfFile) {
  auto r = SafetensorsReader::Open(dir_.path());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), StartsWith(dir_.path() + ": "));
}

// --- fuzz: damaged copies of a valid file give an error or a valid reader ------

// Touches every byte of every tensor a reader hands out, so a bad offset that
// slipped through would read outside the mapping.
uint64_t ConsumeAll(const SafetensorsReader& r) {
  uint64_t sum = 0;
  for (const SafetensorsEntry& e : r.entries()) {
    auto t = r.Get(e.name);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) continue;
    const auto* p = static_cast<const uint8_t*>(t->raw());
    for (size_t i = 0; i < t->nbytes(); ++i) sum += p[i];
  }
  return sum;
}

TEST(SafetensorsFuzzTest, TruncationsAndByteFlipsNeverCrash) {
  ScratchDir dir;
  const std::string good = ReadBytes(Fixture("formula.safetensors"));
  ASSERT_GT(good.size(), 100u);
  std::mt19937 rng(42);
  const std::string path = dir.File("fuzz.safetensors");
  int ok = 0, failed = 0;
  uint64_t checksum = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes = good;
    switch (iter % 4) {
      case 0:  // truncate
        bytes.resize(rng() % bytes.size());
        break;
      case 1:  // flip bytes in the length prefix or header
        for (int k = 0, n = 1 + rng() % 4; k < n; ++k)
          bytes[rng() % (8 + 300)] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 2:  // flip bytes anywhere
        for (int k = 0, n = 1 + rng() % 8; k < n; ++k)
          bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 3: {  // replace a digit in the header (offsets and shapes)
        std::vector<size_t> digits;
        for (size_t i = 8; i < 8 + 776 && i < bytes.size(); ++i)
          if (bytes[i] >= '0' && bytes[i] <= '9') digits.push_back(i);
        bytes[digits[rng() % digits.size()]] = static_cast<char>('0' + rng() % 10);
        if (rng() % 2) bytes.resize(bytes.size() - rng() % 16);
        break;
      }
    }
    // In memory: the parser alone (exact-size heap copy, so an overread is
    // visible to sanitizers).
    {
      std::vector<uint8_t> copy(bytes.begin(), bytes.end());
      std::vector<SafetensorsEntry> entries;
      std::map<std::string, std::string> meta;
      uint64_t start = 0;
      absl::Status s =
          ParseSafetensorsHeader("mem", copy.data(), copy.size(), &entries, &meta, &start);
      if (s.ok()) {
        for (const auto& e : entries) ASSERT_LE(start + e.end, copy.size());
      } else {
        ASSERT_THAT(std::string(s.message()), StartsWith("mem: "));
        ASSERT_EQ(std::string(s.message()).find('\n'), std::string::npos);
      }
    }
    // Through a real file now and then (37 is coprime to the 4 damage kinds).
    if (iter % 37 == 0) {
      WriteBytes(path, bytes);
      auto r = SafetensorsReader::Open(path);
      if (r.ok()) {
        ++ok;
        checksum += ConsumeAll(**r);
      } else {
        ++failed;
        ASSERT_THAT(std::string(r.status().message()), StartsWith(path + ": "));
      }
    }
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(ok, 0);  // flips inside tensor data leave a valid file
  EXPECT_GT(checksum, 0u);
}

}  // namespace
}  // namespace retort
