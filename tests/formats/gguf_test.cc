// GGUF reader and writer: gguf-py fixtures read back exactly and rebuilt byte
// for byte, files we write load in gguf-py, and hostile files (truncated,
// lying counts, bad types and offsets, random corruption) fail cleanly.
#include "formats/gguf.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/process.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/formats/test_util.h"

namespace retort {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using testing_util::ReadBytes;
using testing_util::ScratchDir;
using testing_util::WriteBytes;

std::string GgufFixture(const std::string& name) {
  return testing_util::SourceDir() + "/tests/reference/gguf/" + name;
}

const json& Fixtures() {
  static const json* fixtures = new json(json::parse(ReadBytes(GgufFixture("fixtures.json"))));
  return *fixtures;
}

const json& FixtureFile(const std::string& name) {
  for (const json& f : Fixtures()["files"])
    if (f["file"] == name) return f;
  ADD_FAILURE() << "no fixture " << name;
  static const json empty;
  return empty;
}

GgufType TypeFromName(const std::string& name) {
  for (uint32_t i = 0; i < 13; ++i)
    if (GgufTypeName(static_cast<GgufType>(i)) == name) return static_cast<GgufType>(i);
  ADD_FAILURE() << "unknown type name " << name;
  return GgufType::kU8;
}

GgufValue ScalarFromJson(GgufType t, const json& v) {
  switch (t) {
    case GgufType::kU8:
      return GgufValue::U8(v.get<uint8_t>());
    case GgufType::kI8:
      return GgufValue::I8(v.get<int8_t>());
    case GgufType::kU16:
      return GgufValue::U16(v.get<uint16_t>());
    case GgufType::kI16:
      return GgufValue::I16(v.get<int16_t>());
    case GgufType::kU32:
      return GgufValue::U32(v.get<uint32_t>());
    case GgufType::kI32:
      return GgufValue::I32(v.get<int32_t>());
    case GgufType::kF32:
      return GgufValue::F32(static_cast<float>(v.get<double>()));
    case GgufType::kBool:
      return GgufValue::Bool(v.get<bool>());
    case GgufType::kString:
      return GgufValue::String(v.get<std::string>());
    case GgufType::kU64:
      return GgufValue::U64(v.get<uint64_t>());
    case GgufType::kI64:
      return GgufValue::I64(v.get<int64_t>());
    case GgufType::kF64:
      return GgufValue::F64(v.get<double>());
    default:
      ADD_FAILURE() << "not a scalar type";
      return GgufValue();
  }
}

GgufValue ArrayFromJson(const json& desc) {
  const GgufType elem = TypeFromName(desc["elem"]);
  std::vector<GgufValue> items;
  for (const json& item : desc["value"]) {
    items.push_back(elem == GgufType::kArray ? ArrayFromJson(item) : ScalarFromJson(elem, item));
  }
  return GgufValue::Array(elem, std::move(items));
}

GgufValue ValueFromJson(const json& desc) {
  const GgufType t = TypeFromName(desc["type"]);
  return t == GgufType::kArray ? ArrayFromJson(desc) : ScalarFromJson(t, desc["value"]);
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}
std::string Hex(const void* data, size_t n) {
  std::string out;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) out += absl::StrFormat("%02x", p[i]);
  return out;
}

// Builds the fixture `name` with our writer from its JSON description.
absl::Status WriteFromDescription(const json& f, const std::string& path,
                                  std::vector<std::shared_ptr<std::string>>* keep) {
  GgufWriter w(f["arch"].get<std::string>());
  for (const json& m : f["metadata"]) {
    if (m["key"] == "general.architecture") continue;  // the constructor added it, first
    w.AddMetadata(m["key"], ValueFromJson(m));
  }
  for (const json& t : f["tensors"]) {
    auto bytes = std::make_shared<std::string>(Unhex(t["data_hex"]));
    keep->push_back(bytes);
    auto dtype = DTypeFromGgmlType(t["ggml_type"].get<uint32_t>());
    if (!dtype.ok()) return dtype.status();
    RETURN_IF_ERROR(w.AddRawTensor(t["name"], *dtype, t["shape"].get<Shape>(), bytes->data(),
                                   bytes->size(), bytes));
  }
  return w.Write(path);
}

// ------------------------------------------------------------------ fixtures

class GgufFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufFixtureTest, ReadsWhatGgufPyWrote) {
  const json& f = FixtureFile(GetParam());
  auto r = GgufReader::Open(GgufFixture(GetParam()));
  ASSERT_TRUE(r.ok()) << r.status();
  const GgufReader& reader = **r;
  EXPECT_EQ(reader.version(), 3u);
  EXPECT_EQ(reader.alignment(), f["alignment"].get<uint64_t>());
  EXPECT_EQ(reader.data_offset(), f["data_offset"].get<uint64_t>());
  EXPECT_EQ(reader.file_size(), f["file_size"].get<uint64_t>());

  ASSERT_EQ(reader.metadata().size(), f["metadata"].size());
  for (size_t i = 0; i < reader.metadata().size(); ++i) {
    const json& m = f["metadata"][i];
    const auto& [key, value] = reader.metadata()[i];
    EXPECT_EQ(key, m["key"].get<std::string>());
    EXPECT_EQ(value, ValueFromJson(m)) << key << ": " << value.DebugString();
    ASSERT_NE(reader.Find(key), nullptr);
  }

  ASSERT_EQ(reader.tensors().size(), f["tensors"].size());
  for (size_t i = 0; i < reader.tensors().size(); ++i) {
    const json& t = f["tensors"][i];
    const GgufTensorInfo& info = reader.tensors()[i];
    SCOPED_TRACE(info.name);
    EXPECT_EQ(info.name, t["name"].get<std::string>());
    EXPECT_EQ(info.ggml_type, t["ggml_type"].get<uint32_t>());
    EXPECT_EQ(info.dims, t["dims"].get<std::vector<uint64_t>>());
    EXPECT_EQ(info.shape(), t["shape"].get<Shape>());  // row-major = dims reversed
    EXPECT_EQ(info.offset, t["offset"].get<uint64_t>());
    EXPECT_EQ(info.nbytes, t["nbytes"].get<uint64_t>());
    EXPECT_EQ(*GgmlTypeFromDType(info.dtype), info.ggml_type);
    auto tensor = reader.Get(info.name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->dtype(), info.dtype);
    EXPECT_EQ(tensor->shape(), info.shape());
    ASSERT_EQ(tensor->nbytes(), info.nbytes);
    EXPECT_EQ(Hex(tensor->raw(), tensor->nbytes()), t["data_hex"].get<std::string>());
    EXPECT_EQ(reader.FindTensor(info.name), &info);
  }
}

TEST_P(GgufFixtureTest, WriterReproducesGgufPyBytes) {
  ScratchDir dir;
  std::vector<std::shared_ptr<std::string>> keep;
  const std::string out = dir.File(GetParam());
  absl::Status s = WriteFromDescription(FixtureFile(GetParam()), out, &keep);
  ASSERT_TRUE(s.ok()) << s;
  const std::string want = ReadBytes(GgufFixture(GetParam()));
  const std::string got = ReadBytes(out);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(got[i], want[i]) << "first difference at byte " << i;
  EXPECT_THAT(dir.List(), ::testing::ElementsAre(GetParam()));  // no temporary left behind
}

INSTANTIATE_TEST_SUITE_P(Files, GgufFixtureTest,
                         ::testing::Values("all_types.gguf", "aligned64.gguf", "aligned1.gguf",
                                           "metadata_only.gguf"),
                         [](const auto& info) {
                           std::string n = info.param;
                           return n.substr(0, n.find('.'));
                         });

TEST(GgufReaderTest, TypedLookupsAndMessages) {
  auto r = GgufReader::Open(GgufFixture("all_types.gguf"));
  ASSERT_TRUE(r.ok()) << r.status();
  const GgufReader& g = **r;
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("test.u8"), 255);
  EXPECT_EQ(*g.GetInt("test.i8"), -128);
  EXPECT_EQ(*g.GetInt("test.i64"), INT64_MIN);
  EXPECT_EQ(*g.GetInt("test.u32"), 4294967295);
  EXPECT_EQ(*g.GetFloat("test.f32"), static_cast<double>(0.1f));
  EXPECT_EQ(*g.GetFloat("test.f64"), 3.141592653589793);
  EXPECT_EQ(*g.GetFloat("test.i16"), -32768.0);
  EXPECT_TRUE(*g.GetBool("test.bool_true"));
  EXPECT_FALSE(*g.GetBool("test.bool_false"));
  EXPECT_EQ(*g.GetStringArray("test.arr_string"),
            (std::vector<std::string>{"a", "", "\xc4\xa0the", "<|endoftext|>"}));
  EXPECT_EQ(*g.GetIntArray("test.arr_i8"), (std::vector<int64_t>{-1, 2, -128}));
  EXPECT_EQ(*g.GetFloatArray("test.arr_f32"),
            (std::vector<double>{0.5, -1.25, static_cast<double>(1e-3f)}));
  const GgufValue* nested = g.Find("test.nested_3");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->elem_type(), GgufType::kArray);
  ASSERT_EQ(nested->size(), 2u);
  EXPECT_EQ(nested->Item(0).Item(1), GgufValue::F32Array({2.5f, 3.5f}));

  auto missing = g.GetInt("llama.block_count");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("all_types.gguf: metadata key llama.block_count is missing"));
  auto wrong = g.GetInt("test.string");
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("metadata key test.string has type string, expected an integer"));
  EXPECT_THAT(std::string(g.GetInt("test.u64").status().message()),
              HasSubstr("does not fit int64"));
  EXPECT_THAT(std::string(g.GetString("test.arr_u8").status().message()),
              HasSubstr("has type array, expected string"));
  EXPECT_THAT(std::string(g.GetIntArray("test.arr_string").status().message()),
              HasSubstr("array of string"));
  EXPECT_FALSE(g.GetInt("test.bool_true").ok());
  EXPECT_EQ(g.Get("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufReaderTest, DebugString) {
  EXPECT_EQ(GgufValue::U32(4096).DebugString(), "u32 4096");
  EXPECT_EQ(GgufValue::I8(-3).DebugString(), "i8 -3");
  EXPECT_EQ(GgufValue::U64(UINT64_MAX).DebugString(), "u64 18446744073709551615");
  EXPECT_EQ(GgufValue::F32(0.5f).DebugString(), "f32 0.5");
  EXPECT_EQ(GgufValue::Bool(true).DebugString(), "bool true");
  EXPECT_EQ(GgufValue::String("a\"b\n\x01").DebugString(), "string \"a\\\"b\\n\\x01\"");
  EXPECT_EQ(GgufValue::I32Array({1, 2, 3}).DebugString(), "array<i32>[3] [1, 2, 3]");
  EXPECT_EQ(GgufValue::StringArray({"a", "b", "c"}).DebugString(2),
            "array<string>[3] [\"a\", \"b\", ...]");
  EXPECT_EQ(GgufValue::Array(GgufType::kArray, {GgufValue::I32Array({1}), GgufValue::I32Array({})})
                .DebugString(),
            "array<array>[2] [array<i32>[1] [1], array<i32>[0] []]");
  EXPECT_EQ(GgufValue::String(std::string(500, 'x')).DebugString().size(), 8u + 80 + 3 + 1);
}

TEST(GgufReaderTest, MisalignedTensorIsCopied) {
  // alignment 1: "f" (f32) starts at an odd byte; Get() must still hand out
  // aligned floats.
  auto r = GgufReader::Open(GgufFixture("aligned1.gguf"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->alignment(), 1u);
  EXPECT_EQ((*r)->FindTensor("f")->offset, 3u);
  auto f = (*r)->Get("f");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f->raw()) % 4, 0u);
  EXPECT_EQ(std::memcmp(f->raw(), (*r)->TensorData(*(*r)->FindTensor("f")), 8), 0);
  auto e = (*r)->Get("e");  // i8 is never misaligned: a view
  EXPECT_EQ(e->raw(), (*r)->TensorData(*(*r)->FindTensor("e")));
}

TEST(GgufReaderTest, TensorsOutliveReader) {
  Tensor t;
  {
    auto r = GgufReader::Open(GgufFixture("aligned64.gguf"));
    ASSERT_TRUE(r.ok());
    t = *(*r)->Get("a");
  }
  EXPECT_EQ(t.shape(), (Shape{3}));
  EXPECT_TRUE(std::isfinite(t.data<float>()[2]));
}

TEST(GgufTypesTest, GgmlTypeIds) {
  const std::vector<std::pair<uint32_t, DType>> ids = {
      {0, DType::kF32},   {1, DType::kF16},   {2, DType::kQ4_0},  {3, DType::kQ4_1},
      {6, DType::kQ5_0},  {7, DType::kQ5_1},  {8, DType::kQ8_0},  {9, DType::kQ8_1},
      {10, DType::kQ2_K}, {11, DType::kQ3_K}, {12, DType::kQ4_K}, {13, DType::kQ5_K},
      {14, DType::kQ6_K}, {15, DType::kQ8_K}, {24, DType::kI8},   {25, DType::kI16},
      {26, DType::kI32},  {27, DType::kI64},  {28, DType::kF64},  {30, DType::kBF16}};
  for (auto [id, dtype] : ids) {
    EXPECT_EQ(*DTypeFromGgmlType(id), dtype) << id;
    EXPECT_EQ(*GgmlTypeFromDType(dtype), id) << id;
  }
  EXPECT_THAT(std::string(DTypeFromGgmlType(16).status().message()),
              HasSubstr("ggml type 16 (IQ2_XXS) is not supported"));
  EXPECT_THAT(std::string(DTypeFromGgmlType(4).status().message()), HasSubstr("removed"));
  EXPECT_THAT(std::string(DTypeFromGgmlType(1000).status().message()),
              HasSubstr("unknown ggml type 1000"));
  EXPECT_FALSE(GgmlTypeFromDType(DType::kU8).ok());
  EXPECT_FALSE(GgmlTypeFromDType(DType::kF8E4M3).ok());
  EXPECT_FALSE(GgmlTypeFromDType(DType::kI4).ok());
}

// ------------------------------------------------------------------ writer

TEST(GgufWriterTest, DimensionOrderAndRoundTrip) {
  ScratchDir dir;
  Tensor w = Tensor::Zeros(DType::kF32, {3, 4});  // HF [out, in]
  for (int i = 0; i < 12; ++i) w.mutable_data<float>()[i] = static_cast<float>(i);
  GgufWriter writer("llama");
  writer.AddMetadata("llama.block_count", GgufValue::U32(2));
  ASSERT_TRUE(writer.AddTensor("blk.0.attn_q.weight", w).ok());
  ASSERT_TRUE(writer.Write(dir.File("m.gguf")).ok());
  auto r = GgufReader::Open(dir.File("m.gguf"));
  ASSERT_TRUE(r.ok()) << r.status();
  const GgufTensorInfo* info = (*r)->FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->dims, (std::vector<uint64_t>{4, 3}));  // innermost first
  EXPECT_EQ(info->shape(), (Shape{3, 4}));
  auto t = (*r)->Get("blk.0.attn_q.weight");
  EXPECT_EQ(std::memcmp(t->raw(), w.raw(), 48), 0);
  EXPECT_EQ(*(*r)->GetInt("llama.block_count"), 2);
  EXPECT_EQ((*r)->metadata()[0].first, "general.architecture");
}

TEST(GgufWriterTest, RepeatedKeyKeepsPositionTakesNewValue) {
  GgufWriter w;
  w.AddMetadata("a", GgufValue::U8(1));
  w.AddMetadata("b", GgufValue::U8(2));
  w.AddMetadata("a", GgufValue::String("new"));
  auto header = w.HeaderBytes();
  ASSERT_TRUE(header.ok());
  auto r = GgufReader::FromMemory("mem", reinterpret_cast<const uint8_t*>(header->data()),
                                  header->size(), nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ((*r)->metadata().size(), 2u);
  EXPECT_EQ((*r)->metadata()[0].first, "a");
  EXPECT_EQ((*r)->metadata()[0].second, GgufValue::String("new"));
}

TEST(GgufWriterTest, RejectsWhatGgmlWouldRefuse) {
  GgufWriter w;
  Tensor f = Tensor::Zeros(DType::kF32, {2});
  EXPECT_TRUE(w.AddTensor(std::string(63, 'n'), f).ok());
  EXPECT_THAT(std::string(w.AddTensor(std::string(64, 'n'), f).message()),
              HasSubstr("64 bytes, ggml allows at most 63"));
  EXPECT_THAT(std::string(w.AddTensor(std::string(63, 'n'), f).message()),
              HasSubstr("added twice"));
  EXPECT_THAT(std::string(w.AddTensor("r5", Tensor::Zeros(DType::kF32, {1, 1, 1, 1, 1})).message()),
              HasSubstr("more than 4 dimensions"));
  EXPECT_THAT(std::string(w.AddTensor("q", Tensor::Zeros(DType::kQ8_0, {2, 64})).message()),
              ::testing::IsEmpty());
  std::string blocks(34, '\0');
  EXPECT_THAT(
      std::string(w.AddRawTensor("q2", DType::kQ8_0, {33}, blocks.data(), 34, nullptr).message()),
      HasSubstr("not a whole number of Q8_0 blocks of 32"));
  EXPECT_THAT(
      std::string(w.AddRawTensor("q3", DType::kQ8_0, {32}, blocks.data(), 33, nullptr).message()),
      HasSubstr("33 bytes given"));
  EXPECT_THAT(std::string(w.AddTensor("u8", Tensor::Zeros(DType::kU8, {2})).message()),
              HasSubstr("has no ggml type"));
}

TEST(GgufWriterTest, BadAlignmentWritesNothing) {
  for (GgufValue bad :
       {GgufValue::U32(0), GgufValue::U32(48), GgufValue::U64(64), GgufValue::I32(32)}) {
    ScratchDir dir;
    GgufWriter w("llama");
    w.AddMetadata("general.alignment", bad);
    absl::Status s = w.Write(dir.File("x.gguf"));
    EXPECT_FALSE(s.ok()) << bad.DebugString();
    EXPECT_THAT(std::string(s.message()), HasSubstr("general.alignment"));
    EXPECT_TRUE(dir.List().empty());
  }
}

TEST(GgufWriterTest, CustomAlignmentPadsEveryTensor) {
  GgufWriter w("llama");
  w.AddMetadata("general.alignment", GgufValue::U32(128));
  ASSERT_TRUE(w.AddTensor("a", Tensor::Zeros(DType::kF16, {3})).ok());
  ASSERT_TRUE(w.AddTensor("b", Tensor::Zeros(DType::kI8, {129})).ok());
  ASSERT_TRUE(w.AddTensor("c", Tensor::Zeros(DType::kF32, {1})).ok());
  ScratchDir dir;
  ASSERT_TRUE(w.Write(dir.File("a.gguf")).ok());
  auto r = GgufReader::Open(dir.File("a.gguf"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->data_offset() % 128, 0u);
  EXPECT_EQ((*r)->FindTensor("b")->offset, 128u);
  EXPECT_EQ((*r)->FindTensor("c")->offset, 384u);
  EXPECT_EQ((*r)->file_size(), (*r)->data_offset() + 512);
}

// gguf-py itself must load what we write (not only our own reader).
TEST(GgufWriterTest, GgufPyLoadsOurFile) {
  const std::string python = std::string(RETORT_BINARY_DIR_PATH) + "/venv/bin/python";
  ASSERT_TRUE(std::filesystem::exists(python)) << python
                                               << " is missing: run scripts/test (it installs the "
                                                  "PyPI package gguf into the build folder's venv)";

  ASSERT_EQ(std::system(("\"" + python + "\" -c 'import gguf' 2>/dev/null").c_str()), 0)
      << python
      << " cannot import gguf: run scripts/test (it installs the PyPI package gguf into the "
      << "build folder's venv)";

  ScratchDir dir;
  GgufWriter w("llama");
  std::vector<std::pair<std::string, GgufValue>> meta = {
      {"general.name", GgufValue::String("retort test \u2713")},
      {"llama.block_count", GgufValue::U32(1)},
      {"llama.rope.freq_base", GgufValue::F32(500000.0f)},
      {"llama.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-5f)},
      {"tokenizer.ggml.tokens", GgufValue::StringArray({"<s>", "\xc4\xa0hi", ""})},
      {"tokenizer.ggml.token_type", GgufValue::I32Array({3, 1, 1})},
      {"tokenizer.ggml.scores", GgufValue::F32Array({0.0f, -1.5f, 2.25f})},
      {"tokenizer.ggml.add_bos_token", GgufValue::Bool(true)},
      {"test.u64", GgufValue::U64(UINT64_MAX)},
      {"test.i64", GgufValue::I64(INT64_MIN)},
      {"test.f64", GgufValue::F64(-0.1)},
      {"test.i8", GgufValue::I8(-7)},
      {"test.u16", GgufValue::U16(65535)},
      {"test.i16", GgufValue::I16(-300)},
      {"test.u8", GgufValue::U8(200)},
      {"test.nested", GgufValue::Array(GgufType::kArray,
                                       {GgufValue::I64Array({1, -2}), GgufValue::I64Array({3})})},
      {"test.u8_array", GgufValue::U8Array({1, 2, 3})},
  };
  for (const auto& [k, v] : meta) w.AddMetadata(k, v);
  std::mt19937 rng(7);
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto add = [&](const std::string& name, DType dtype, Shape shape) {
    Tensor t = Tensor::Zeros(dtype, shape);
    auto* p = static_cast<uint8_t*>(t.mutable_raw());
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng());
    if (dtype == DType::kF32) {
      for (int64_t i = 0; i < t.numel(); ++i)
        t.mutable_data<float>()[i] = static_cast<float>(i) * 0.25f;
    }
    ASSERT_TRUE(w.AddTensor(name, t).ok());
    tensors.emplace_back(name, t);
  };
  add("token_embd.weight", DType::kF16, {5, 8});
  add("blk.0.attn_q.weight", DType::kF32, {3, 4});
  add("blk.0.attn_k.weight", DType::kBF16, {2, 2, 6});
  add("blk.0.ffn_up.weight", DType::kQ8_0, {2, 64});
  add("blk.0.ffn_down.weight", DType::kQ4_K, {1, 256});
  add("blk.0.ids", DType::kI32, {7});
  const std::string path = dir.File("ours.gguf");
  ASSERT_TRUE(w.Write(path).ok());

  const std::string cmd =
      "\"" + python + "\" \"" + GgufFixture("check_with_gguf_py.py") + "\" \"" + path + "\"";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) out.append(buf, n);
  const int rc = ::pclose(pipe);
  ASSERT_EQ(rc, 0) << "gguf-py could not load our file (" << cmd << ")";
  const json seen = json::parse(out);
  EXPECT_EQ(seen["version"], 3);
  EXPECT_EQ(seen["alignment"], 32);

  // Metadata: general.architecture then ours, each with the leaves gguf-py sees.
  ASSERT_EQ(seen["metadata"].size(), meta.size() + 1);
  EXPECT_EQ(seen["metadata"][0]["key"], "general.architecture");
  EXPECT_EQ(seen["metadata"][0]["contents"], "llama");
  std::function<void(const GgufValue&, json*, json*)> leaves = [&](const GgufValue& v, json* types,
                                                                   json* out) {
    if (types) types->push_back(GgufTypeName(v.type()));
    if (v.is_array()) {
      if (types && v.size() == 0) types->push_back(GgufTypeName(v.elem_type()));
      for (size_t i = 0; i < v.size(); ++i) leaves(v.Item(i), i == 0 ? types : nullptr, out);
      return;
    }
    switch (v.type()) {
      case GgufType::kString:
        out->push_back(*v.AsString());
        break;
      case GgufType::kBool:
        out->push_back(*v.AsBool());
        break;
      case GgufType::kF32:
      case GgufType::kF64:
        out->push_back(*v.AsFloat());
        break;
      case GgufType::kU64: {
        std::string b;
        v.AppendTo(&b, false);
        uint64_t u;
        std::memcpy(&u, b.data(), 8);
        out->push_back(u);
        break;
      }
      default:
        out->push_back(*v.AsInt());
    }
  };
  for (size_t i = 0; i < meta.size(); ++i) {
    const json& s = seen["metadata"][i + 1];
    SCOPED_TRACE(meta[i].first);
    EXPECT_EQ(s["key"], meta[i].first);
    json types = json::array(), values = json::array();
    leaves(meta[i].second, &types, &values);
    EXPECT_EQ(s["types"], types);
    EXPECT_EQ(meta[i].second.is_array() ? s["contents"] : json::array({s["contents"]}), values);
  }

  ASSERT_EQ(seen["tensors"].size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const json& s = seen["tensors"][i];
    const Tensor& t = tensors[i].second;
    SCOPED_TRACE(tensors[i].first);
    EXPECT_EQ(s["name"], tensors[i].first);
    EXPECT_EQ(s["ggml_type"], *GgmlTypeFromDType(t.dtype()));
    Shape reversed(t.shape().rbegin(), t.shape().rend());
    EXPECT_EQ(s["dims"].get<Shape>(), reversed);
    EXPECT_EQ(s["n_bytes"], t.nbytes());
    EXPECT_EQ(s["data_hex"], Hex(t.raw(), t.nbytes()));
  }
}

// ------------------------------------------------------------------ bad input

// A GGUF image assembled field by field.
class RawGguf {
 public:
  RawGguf& U32(uint32_t v) { return Le(v, 4); }
  RawGguf& U64(uint64_t v) { return Le(v, 8); }
  RawGguf& Str(const std::string& s) { return U64(s.size()).Raw(s); }
  RawGguf& Raw(const std::string& s) {
    bytes_ += s;
    return *this;
  }
  RawGguf& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return Raw("GGUF").U32(version).U64(n_tensors).U64(n_kv);
  }
  RawGguf& Tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                  uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  RawGguf& PadTo(size_t align) {
    bytes_.resize((bytes_.size() + align - 1) / align * align, '\0');
    return *this;
  }
  const std::string& bytes() const { return bytes_; }

 private:
  RawGguf& Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string bytes_;
};

uint64_t g_bytes_seen = 0;

absl::Status Parse(const std::string& bytes) {
  auto owned = std::make_shared<std::string>(bytes);
  auto r = GgufReader::FromMemory("bad.gguf", reinterpret_cast<const uint8_t*>(owned->data()),
                                  owned->size(), owned);
  if (!r.ok()) return r.status();
  // Touch every tensor byte: a reader that opened must only point inside the file.
  uint64_t sum = 0;
  for (const GgufTensorInfo& t : (*r)->tensors()) {
    auto tensor = (*r)->Get(t.name);
    if (!tensor.ok()) return tensor.status();
    const auto* p = static_cast<const uint8_t*>(tensor->raw());
    for (size_t i = 0; i < tensor->nbytes(); ++i) sum += p[i];
  }
  for (const auto& [k, v] : (*r)->metadata()) sum += v.DebugString().size();
  g_bytes_seen += sum;  // a global, so the reads cannot be optimized away
  return absl::OkStatus();
}

void ExpectError(const std::string& bytes, const std::string& substring) {
  absl::Status s = Parse(bytes);
  EXPECT_FALSE(s.ok()) << "expected an error containing: " << substring;
  EXPECT_THAT(std::string(s.message()), HasSubstr(substring));
  EXPECT_THAT(std::string(s.message()), HasSubstr("bad.gguf: "));
  EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos) << s.message();
}

TEST(GgufBadInputTest, HeaderProblems) {
  ExpectError("", "too short for a GGUF header");
  ExpectError("GGU", "too short");
  ExpectError("GGML\x03\0\0\0", "not a GGUF file");
  ExpectError(RawGguf().Header(0, 0, 1).bytes(), "GGUF version 1 is not supported");
  ExpectError(RawGguf().Header(0, 0, 4).bytes(), "unsupported GGUF version 4");
  ExpectError(RawGguf().Header(0, 0, 0).bytes(), "unsupported GGUF version 0");
  ExpectError(RawGguf().Header(0, 0, 0x03000000).bytes(), "big-endian");
  ExpectError(RawGguf().Raw("GGUF").U32(3).U64(0).bytes(),
              "file ends inside the header (metadata count)");
  EXPECT_TRUE(Parse(RawGguf().Header(0, 0).bytes()).ok());
  EXPECT_TRUE(Parse(RawGguf().Header(0, 0, 2).bytes()).ok());
}

TEST(GgufBadInputTest, VersionTwoReadsLikeThree) {
  std::string bytes = ReadBytes(GgufFixture("all_types.gguf"));
  bytes[4] = 2;
  auto owned = std::make_shared<std::string>(bytes);
  auto r = GgufReader::FromMemory("v2", reinterpret_cast<const uint8_t*>(owned->data()),
                                  owned->size(), owned);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->version(), 2u);
  EXPECT_EQ((*r)->tensors().size(), 6u);
}

TEST(GgufBadInputTest, AbsurdCounts) {
  ExpectError(RawGguf().Header(0, uint64_t{1} << 63).bytes(),
              "claims 9223372036854775808 metadata pairs");
  ExpectError(RawGguf().Header(UINT64_MAX, 0).bytes(), "claims 18446744073709551615 tensors");
  ExpectError(RawGguf().Header(0, 1).U64(UINT64_MAX).Raw(std::string(100, 'k')).bytes(),
              "claims 18446744073709551615 bytes");
  ExpectError(RawGguf().Header(0, 1).Str("k").U32(8).U64(1000).Raw("abc").bytes(),
              "metadata key \"k\" claims 1000 bytes");
  for (uint32_t elem : {0u, 4u, 8u, 9u, 12u}) {
    ExpectError(RawGguf()
                    .Header(0, 1)
                    .Str("k")
                    .U32(9)
                    .U32(elem)
                    .U64(uint64_t{1} << 62)
                    .Raw(std::string(64, 0))
                    .bytes(),
                "array of 4611686018427387904");
    ExpectError(RawGguf()
                    .Header(0, 1)
                    .Str("k")
                    .U32(9)
                    .U32(elem)
                    .U64(UINT64_MAX)
                    .Raw(std::string(64, 0))
                    .bytes(),
                "array of 18446744073709551615");
  }
  // Nested arrays beyond a sane depth.
  RawGguf deep;
  deep.Header(0, 1).Str("k").U32(9);
  for (int i = 0; i < 100; ++i) deep.U32(9).U64(1);
  deep.U32(0).U64(0);
  ExpectError(deep.bytes(), "nested deeper than");
}

TEST(GgufBadInputTest, MetadataProblems) {
  ExpectError(RawGguf().Header(0, 1).Str("k").U32(13).Raw("\x01").bytes(), "unknown value type 13");
  ExpectError(RawGguf().Header(0, 1).Str("k").U32(9).U32(77).U64(0).bytes(),
              "unknown value type 77");
  ExpectError(
      RawGguf().Header(0, 2).Str("k").U32(0).Raw("\x01").Str("k").U32(0).Raw("\x02").bytes(),
      "duplicate metadata key \"k\"");
  ExpectError(RawGguf().Header(0, 1).Str("general.alignment").U32(10).U64(32).bytes(),
              "general.alignment has type u64, expected u32");
  ExpectError(RawGguf().Header(0, 1).Str("general.alignment").U32(4).U32(0).bytes(),
              "0 is not a power of two");
  ExpectError(RawGguf().Header(0, 1).Str("general.alignment").U32(4).U32(24).bytes(),
              "24 is not a power of two");
  ExpectError(RawGguf().Header(0, 1).Str("k\x01\"").U32(6).Raw("\x01").bytes(),
              "metadata key \"k\\x01\\\"\"");
}

TEST(GgufBadInputTest, TensorInfoProblems) {
  auto one = [](const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset,
                size_t data = 256) {
    return RawGguf()
        .Header(1, 0)
        .Tensor(name, dims, type, offset)
        .PadTo(32)
        .Raw(std::string(data, '\0'))
        .bytes();
  };
  EXPECT_TRUE(Parse(one(std::string(63, 'n'), {4}, 0, 0)).ok());
  ExpectError(one(std::string(64, 'n'), {4}, 0, 0), "name is 64 bytes, ggml allows at most 63");
  ExpectError(one("t", {1, 1, 1, 1, 1}, 0, 0), "5 dimensions, ggml allows at most 4");
  ExpectError(one("t", {32}, 16, 0), "ggml type 16 (IQ2_XXS) is not supported");
  ExpectError(one("t", {32}, 99, 0), "unknown ggml type 99");
  ExpectError(one("t", {33, 2}, 8, 0),
              "rows of 33 elements are not a whole number of Q8_0 blocks of 32");
  ExpectError(one("t", {}, 8, 0), "rows of 1 elements");
  ExpectError(one("t", {4}, 0, 16), "data offset 16 is not a multiple of the alignment 32");
  ExpectError(one("t", {4}, 0, 256), "lies outside the data section");
  ExpectError(one("t", {64}, 0, 32), "lies outside the data section");
  ExpectError(one("t", {4}, 0, UINT64_MAX - 31), "lies outside");
  ExpectError(one("t", {uint64_t{1} << 62, 4}, 0, 0), "dimensions overflow int64");
  ExpectError(one("t", {UINT64_MAX}, 0, 0), "dimensions overflow int64");
  ExpectError(one("t", {uint64_t{1} << 61}, 0, 0), "outside the data section");  // 2^63 bytes
  ExpectError(RawGguf().Header(1, 0).Tensor("t", {4}, 0, 0).bytes(),
              "data section would start at byte 64");
  ExpectError(RawGguf()
                  .Header(2, 0)
                  .Tensor("t", {4}, 0, 0)
                  .Tensor("t", {4}, 0, 32)
                  .PadTo(32)
                  .Raw(std::string(64, 0))
                  .bytes(),
              "duplicate tensor name \"t\"");
  ExpectError(RawGguf()
                  .Header(2, 0)
                  .Tensor("a", {16}, 0, 0)
                  .Tensor("b", {4}, 0, 32)
                  .PadTo(32)
                  .Raw(std::string(64, 0))
                  .bytes(),
              "tensors \"a\" and \"b\" overlap");
  ExpectError(RawGguf().Header(1, 0).Str("a_longer_name").U32(1).U64(4).bytes(),
              "file ends inside tensor \"a_longer_name\" (type)");
  // Zero-sized tensors may sit anywhere inside the data section.
  EXPECT_TRUE(Parse(RawGguf()
                        .Header(2, 0)
                        .Tensor("a", {0}, 0, 0)
                        .Tensor("b", {4}, 0, 0)
                        .PadTo(32)
                        .Raw(std::string(16, 0))
                        .bytes())
                  .ok());
}

TEST(GgufBadInputTest, EveryTruncationFailsCleanly) {
  for (const char* name :
       {"all_types.gguf", "aligned64.gguf", "aligned1.gguf", "metadata_only.gguf"}) {
    const std::string bytes = ReadBytes(GgufFixture(name));
    auto full = GgufReader::Open(GgufFixture(name));
    ASSERT_TRUE(full.ok());
    // Every prefix shorter than `end` lacks part of the header or of a
    // tensor's data: the tensor infos end after data_offset - alignment.
    uint64_t end = (*full)->data_offset() - (*full)->alignment() + 1;
    for (const GgufTensorInfo& t : (*full)->tensors())
      end = std::max(end, (*full)->data_offset() + t.offset + t.nbytes);
    for (size_t n = 0; n < bytes.size(); ++n) {
      absl::Status s = Parse(bytes.substr(0, n));
      SCOPED_TRACE(absl::StrCat(name, " cut to ", n, " bytes"));
      bool opened = true;
      if (!s.ok()) {
        EXPECT_THAT(s.code(), ::testing::AnyOf(absl::StatusCode::kDataLoss,
                                               absl::StatusCode::kInvalidArgument));
        opened = false;
      }
      // Cutting only the final padding leaves a complete file; cutting inside
      // the header or any tensor's data never does.
      if (n < end) {
        EXPECT_FALSE(opened) << s;
      }
    }
  }
}

size_t PeakRssKb() { return PeakRssBytes() / 1024; }

TEST(GgufBadInputTest, FuzzNeverCrashesAndStaysSmall) {
  const std::string base = ReadBytes(GgufFixture("all_types.gguf"));
  auto full = GgufReader::Open(GgufFixture("all_types.gguf"));
  ASSERT_TRUE(full.ok());
  const size_t header_end = (*full)->data_offset();
  const size_t rss_before = PeakRssKb();
  std::mt19937_64 rng(20240611);
  const uint64_t absurd[] = {0,
                             1,
                             2,
                             3,
                             31,
                             32,
                             63,
                             64,
                             255,
                             0x7fffffff,
                             0xffffffff,
                             uint64_t{1} << 32,
                             uint64_t{1} << 62,
                             (uint64_t{1} << 63) - 1,
                             uint64_t{1} << 63,
                             UINT64_MAX,
                             UINT64_MAX - 7,
                             base.size(),
                             base.size() - header_end};
  int ok = 0, errors = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes = base;
    const int mode = iter % 4;
    if (mode == 0) {  // flip a few bytes anywhere in the header
      for (int k = 0, n = 1 + rng() % 4; k < n; ++k)
        bytes[rng() % header_end] ^= static_cast<char>(1 + rng() % 255);
    } else if (mode == 1) {  // an absurd 64-bit value at any header offset
      uint64_t v = absurd[rng() % std::size(absurd)];
      size_t at = rng() % (header_end - 8);
      for (int i = 0; i < 8; ++i) bytes[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
    } else if (mode == 2) {  // an absurd 32-bit value (types, n_dims, versions)
      uint32_t v = static_cast<uint32_t>(absurd[rng() % std::size(absurd)]) ^
                   static_cast<uint32_t>(rng() % 16);
      size_t at = rng() % (header_end - 4);
      std::memcpy(&bytes[at], &v, 4);
    } else {  // corrupt, then truncate
      bytes[rng() % header_end] = static_cast<char>(rng());
      bytes.resize(rng() % bytes.size());
    }
    (Parse(bytes).ok() ? ok : errors)++;
  }
  EXPECT_GT(errors, 5000);
  EXPECT_GT(ok, 10);  // flips inside string payloads still give valid files
  EXPECT_LT(PeakRssKb() - rss_before, 64u * 1024)
      << "parsing hostile files must not allocate by their counts";
}

}  // namespace
}  // namespace retort
