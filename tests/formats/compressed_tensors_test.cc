#include "formats/compressed_tensors.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "core/convert.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/formats/compressed_tensors_test_util.h"
#include "tests/formats/test_util.h"

namespace retort {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const char kCtModule[] = "model.layers.0.self_attn.q_proj";
const char kGptqModule[] = "model.layers.0.mlp.down_proj";

using testing_util::AsF32;
using testing_util::LoadAll;
using testing_util::MapLookup;
using testing_util::OpenOrDie;
using testing_util::ReadJson;
using testing_util::SameBytes;
using testing_util::ToMap;

std::string Fixture(const std::string& name) { return testing_util::CtFixture(name); }

int ValueAt(const QuantizedMatrix& m, int64_t r, int64_t c) {
  if (m.value_type == DType::kI4) return UnpackI4(m.values.data<uint8_t>() + r * (m.cols / 2), c);
  return m.values.data<int8_t>()[r * m.cols + c];
}

// Checks m against a .ref.safetensors written by the fixture scripts: q, scale,
// zero_point (absent = symmetric), g_idx (absent = plain grouping).
void ExpectMatchesRef(const QuantizedMatrix& m, std::map<std::string, Tensor>& ref) {
  const Tensor& q = ref.at("q");
  ASSERT_EQ(q.shape(), (Shape{m.rows, m.cols}));
  if (q.dtype() == DType::kF8E4M3) {
    EXPECT_TRUE(SameBytes(m.values, q));
  } else {
    int mismatches = 0;
    for (int64_t r = 0; r < m.rows; ++r) {
      for (int64_t c = 0; c < m.cols; ++c)
        mismatches += ValueAt(m, r, c) != q.data<int8_t>()[r * m.cols + c];
    }
    EXPECT_EQ(mismatches, 0);
  }
  EXPECT_EQ(AsF32(m.scales), AsF32(ref.at("scale")));
  if (ref.count("zero_point")) {
    ASSERT_FALSE(m.zero_points.empty());
    EXPECT_EQ(AsF32(m.zero_points), AsF32(ref.at("zero_point")));
  } else {
    EXPECT_TRUE(m.zero_points.empty());
  }
  if (ref.count("g_idx")) {
    ASSERT_FALSE(m.g_idx.empty());
    EXPECT_EQ(AsF32(m.g_idx), AsF32(ref.at("g_idx")));
  } else {
    EXPECT_TRUE(m.g_idx.empty());
  }
}

// ------------------------------------------- compressed-tensors fixtures --

const char* const kCtCases[] = {"int4_g32_sym",   "int4_g32_asym",     "int4_g128_sym",
                                "int4_g128_asym", "int8_channel_sym",  "int8_channel_asym",
                                "fp8_channel",    "fp8_channel_w8a16", "fp8_tensor",
                                "fp8_block128",   "int4_g32_actorder"};

QuantizationConfig CtConfigOf(const std::string& name) {
  const json configs = ReadJson(Fixture("quantization_configs.json"));
  auto qc = ParseQuantizationConfig(json{{"quantization_config", configs.at(name)}}, name);
  EXPECT_TRUE(qc.ok()) << qc.status();
  return qc.ok() ? *qc : QuantizationConfig();
}

// The spec that should reproduce each library config.
CtConfigSpec SpecOf(const std::string& name) {
  CtConfigSpec s;
  if (absl::StartsWith(name, "int4_g32")) s.group_size = 32;
  if (absl::StartsWith(name, "int8")) {
    s.value_type = DType::kI8;
    s.granularity = QuantGranularity::kChannel;
  }
  if (absl::StartsWith(name, "fp8")) s.value_type = DType::kF8E4M3;
  if (absl::StartsWith(name, "fp8_channel")) s.granularity = QuantGranularity::kChannel;
  if (name == "fp8_channel") s.activations = ActivationQuant::kDynamic;
  if (name == "fp8_tensor") {
    s.granularity = QuantGranularity::kTensor;
    s.activations = ActivationQuant::kStatic;
  }
  if (name == "fp8_block128") {
    s.granularity = QuantGranularity::kBlock;
    s.activations = ActivationQuant::kDynamic;
  }
  s.symmetric = !absl::EndsWith(name, "_asym");
  s.act_order = absl::EndsWith(name, "_actorder");
  return s;
}

TEST(CompressedTensorsTest, ReadsLibraryFixturesExactly) {
  for (const char* name : kCtCases) {
    SCOPED_TRACE(name);
    const QuantizationConfig qc = CtConfigOf(name);
    ASSERT_EQ(qc.kind, QuantizationConfig::Kind::kCompressedTensors);
    auto file = OpenOrDie(Fixture(std::string(name) + ".safetensors"));
    ASSERT_TRUE(file);
    TensorLookup lookup = [&](const std::string& n) -> std::optional<Tensor> {
      if (!file->Has(n)) return std::nullopt;
      return *file->Get(n);
    };
    auto m = ReadQuantizedLinear(qc, kCtModule, lookup);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE(m->has_value());
    auto ref = LoadAll(Fixture(std::string(name) + ".ref.safetensors"));
    ExpectMatchesRef(**m, ref);
    // The library dequantizes in the scale dtype (bf16): our f32 product
    // rounded once to bf16 must equal it bit for bit.
    const Tensor ours = Dequantize(**m);
    const std::vector<float> lib = AsF32(ref.at("dequantized"));
    int mismatches = 0;
    for (int64_t i = 0; i < ours.numel(); ++i) {
      mismatches += BF16ToF32(F32ToBF16(ours.data<float>()[i])) != lib[i];
    }
    EXPECT_EQ(mismatches, 0);
    // lm_head is in the ignore list and stored as plain bf16.
    auto head = ReadQuantizedLinear(qc, "lm_head", lookup);
    ASSERT_TRUE(head.ok()) << head.status();
    EXPECT_FALSE(head->has_value());
    auto input_scale = ReadInputScale(kCtModule, lookup);
    ASSERT_TRUE(input_scale.ok());
    EXPECT_EQ(input_scale->has_value(), std::string(name) == "fp8_tensor");
  }
}

// Packing the library's own values/scales gives the library's tensors, byte
// for byte (names, dtypes, shapes, packing, zero-point packing).
TEST(CompressedTensorsTest, PackMatchesLibraryBytes) {
  for (const char* name : kCtCases) {
    SCOPED_TRACE(name);
    const QuantizationConfig qc = CtConfigOf(name);
    auto file = LoadAll(Fixture(std::string(name) + ".safetensors"));
    auto read = ReadQuantizedLinear(qc, kCtModule, MapLookup(file));
    ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
    std::optional<float> input_scale;
    if (std::string(name) == "fp8_tensor") input_scale = BF16ToF32(F32ToBF16(0.0123f));
    auto packed = PackCompressedTensors(kCtModule, **read, DType::kBF16, input_scale);
    ASSERT_TRUE(packed.ok()) << packed.status();
    std::set<std::string> lib_names, our_names;
    for (const auto& [n, t] : file) {
      if (absl::StartsWith(n, kCtModule)) lib_names.insert(n);
    }
    for (const auto& [n, t] : *packed) {
      our_names.insert(n);
      ASSERT_TRUE(file.count(n)) << n;
      EXPECT_TRUE(SameBytes(t, file.at(n)))
          << n << " ours " << DTypeName(t.dtype()) << ShapeString(t.shape()) << " library "
          << DTypeName(file.at(n).dtype()) << ShapeString(file.at(n).shape());
    }
    EXPECT_EQ(our_names, lib_names);
  }
}

// Every key we write has the library's value; every key the library writes
// that we leave out is null/empty or one of 0.12's observer settings.
void CompareJson(const json& ours, const json& lib, const std::string& path) {
  if (ours.is_object() && lib.is_object()) {
    for (auto it = ours.begin(); it != ours.end(); ++it) {
      if (!lib.contains(it.key())) {
        EXPECT_TRUE(it.value().is_null()) << path << "." << it.key() << " only in ours";
        continue;
      }
      CompareJson(it.value(), lib.at(it.key()), path + "." + it.key());
    }
    for (auto it = lib.begin(); it != lib.end(); ++it) {
      if (ours.contains(it.key())) continue;
      const bool empty = it.value().is_null() || (it.value().is_object() && it.value().empty());
      EXPECT_TRUE(empty || it.key() == "observer")
          << path << "." << it.key() << " missing: " << it.value();
    }
    return;
  }
  EXPECT_EQ(ours, lib) << path;
}

TEST(CompressedTensorsTest, ConfigMatchesLibrarySchema) {
  const json configs = ReadJson(Fixture("quantization_configs.json"));
  for (const char* name : kCtCases) {
    SCOPED_TRACE(name);
    const CtConfigSpec spec = SpecOf(name);
    ASSERT_TRUE(ValidateCtConfigSpec(spec).ok()) << ValidateCtConfigSpec(spec);
    CompareJson(CompressedTensorsConfig(spec), configs.at(name), "quantization_config");
  }
  // The whole config.json fixture (W4A16) holds the same object.
  const json full = ReadJson(Fixture("config.json"));
  CompareJson(CompressedTensorsConfig(CtConfigSpec{}), full.at("quantization_config"),
              "config.json");
}

TEST(CompressedTensorsTest, ParsesLibraryConfigs) {
  for (const char* name : kCtCases) {
    SCOPED_TRACE(name);
    const QuantizationConfig qc = CtConfigOf(name);
    const CtConfigSpec spec = SpecOf(name);
    ASSERT_EQ(qc.groups.size(), 1u);
    const QuantSchemeSpec& s = qc.groups[0];
    EXPECT_EQ(s.value_type, spec.value_type);
    EXPECT_EQ(s.granularity, spec.granularity);
    if (spec.granularity == QuantGranularity::kGroup ||
        spec.granularity == QuantGranularity::kBlock) {
      EXPECT_EQ(s.group_size, spec.group_size);
    }
    EXPECT_EQ(s.symmetric, spec.symmetric);
    EXPECT_EQ(s.act_order, spec.act_order);
    EXPECT_EQ(s.activations, spec.activations);
    EXPECT_EQ(s.format, CompressedTensorsFormat(spec));
    EXPECT_EQ(qc.ignore, std::vector<std::string>{"lm_head"});
    EXPECT_EQ(qc.bits, DTypeBits(spec.value_type));
    EXPECT_EQ(qc.SchemeFor("lm_head"), nullptr);
    EXPECT_EQ(qc.SchemeFor(kCtModule), &qc.groups[0]);
  }
  auto none = ParseQuantizationConfig(json{{"model_type", "llama"}}, "config.json");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->kind, QuantizationConfig::Kind::kNone);
}

// --------------------------------------------------------- round trips --

// A random QuantizedMatrix of the spec's layout (scales exact in bf16).
QuantizedMatrix RandomMatrix(const CtConfigSpec& spec, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = spec.value_type;
  m.granularity = spec.granularity;
  m.group_size =
      spec.granularity == QuantGranularity::kGroup || spec.granularity == QuantGranularity::kBlock
          ? spec.group_size
          : 0;
  Shape ss;
  switch (spec.granularity) {
    case QuantGranularity::kTensor:
      ss = {1, 1};
      break;
    case QuantGranularity::kChannel:
      ss = {rows, 1};
      break;
    case QuantGranularity::kGroup:
      ss = {rows, cols / spec.group_size};
      break;
    case QuantGranularity::kBlock:
      ss = {(rows + spec.group_size - 1) / spec.group_size,
            (cols + spec.group_size - 1) / spec.group_size};
      break;
  }
  m.scales = Tensor::Zeros(DType::kF32, ss);
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  for (int64_t i = 0; i < m.scales.numel(); ++i)
    m.scales.mutable_data<float>()[i] = BF16ToF32(F32ToBF16(u(rng)));
  m.values = Tensor::Zeros(spec.value_type, {rows, cols});
  const int lo = spec.value_type == DType::kI4 ? -8 : -128,
            hi = spec.value_type == DType::kI4 ? 7 : 127;
  std::uniform_int_distribution<int> qd(lo, hi);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (spec.value_type == DType::kI4) {
        PackI4(m.values.mutable_data<uint8_t>() + r * (cols / 2), c, qd(rng));
      } else if (spec.value_type == DType::kI8) {
        m.values.mutable_data<int8_t>()[r * cols + c] = static_cast<int8_t>(qd(rng));
      } else {
        uint8_t b;
        do b = static_cast<uint8_t>(rng());
        while ((b & 0x78) == 0x78);  // finite in e4m3 and e5m2
        m.values.mutable_data<uint8_t>()[r * cols + c] = b;
      }
    }
  }
  if (!spec.symmetric) {
    m.zero_points = Tensor::Zeros(DType::kI8, ss);
    for (int64_t i = 0; i < m.zero_points.numel(); ++i) {
      m.zero_points.mutable_data<int8_t>()[i] = static_cast<int8_t>(qd(rng));
    }
    m.zero_points.mutable_data<int8_t>()[0] = 3;  // never all zero
  }
  if (spec.act_order) {
    m.g_idx = Tensor::Zeros(DType::kI32, {cols});
    std::vector<int32_t> g(cols);
    for (int64_t c = 0; c < cols; ++c) g[c] = static_cast<int32_t>(c / spec.group_size);
    std::shuffle(g.begin(), g.end(), rng);
    std::memcpy(m.g_idx.mutable_data<int32_t>(), g.data(), cols * 4);
  }
  return m;
}

void ExpectSameMatrix(const QuantizedMatrix& a, const QuantizedMatrix& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.value_type, b.value_type);
  EXPECT_EQ(a.granularity, b.granularity);
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_TRUE(SameBytes(a.values, b.values));
  EXPECT_TRUE(SameBytes(a.scales, b.scales));
  EXPECT_EQ(a.zero_points.empty(), b.zero_points.empty());
  if (!a.zero_points.empty() && !b.zero_points.empty()) {
    EXPECT_TRUE(SameBytes(a.zero_points, b.zero_points));
  }
  EXPECT_EQ(a.g_idx.empty(), b.g_idx.empty());
  if (!a.g_idx.empty() && !b.g_idx.empty()) {
    EXPECT_TRUE(SameBytes(a.g_idx, b.g_idx));
  }
}

struct RoundTripCase {
  const char* name;
  CtConfigSpec spec;
  int64_t rows, cols;
};

std::vector<RoundTripCase> RoundTripCases() {
  auto spec = [](DType t, QuantGranularity g, int64_t gs, bool sym, bool act, ActivationQuant a) {
    CtConfigSpec s;
    s.value_type = t;
    s.granularity = g;
    s.group_size = gs;
    s.symmetric = sym;
    s.act_order = act;
    s.activations = a;
    return s;
  };
  using G = QuantGranularity;
  const auto kN = ActivationQuant::kNone;
  return {
      {"int4 g32 sym", spec(DType::kI4, G::kGroup, 32, true, false, kN), 20, 128},
      {"int4 g32 asym", spec(DType::kI4, G::kGroup, 32, false, false, kN), 13, 96},
      {"int4 g128 sym", spec(DType::kI4, G::kGroup, 128, true, false, kN), 9, 256},
      {"int4 g128 asym", spec(DType::kI4, G::kGroup, 128, false, false, kN), 24, 384},
      {"int4 g32 act-order", spec(DType::kI4, G::kGroup, 32, true, true, kN), 16, 128},
      {"int4 g32 asym act-order", spec(DType::kI4, G::kGroup, 32, false, true, kN), 7, 64},
      {"int4 channel (cols not a multiple of 8)", spec(DType::kI4, G::kChannel, 0, true, false, kN),
       11, 42},
      {"int4 channel asym", spec(DType::kI4, G::kChannel, 0, false, false, kN), 11, 42},
      {"int4 tensor", spec(DType::kI4, G::kTensor, 0, true, false, kN), 5, 18},
      {"int8 channel sym", spec(DType::kI8, G::kChannel, 0, true, false, kN), 20, 66},
      {"int8 channel asym", spec(DType::kI8, G::kChannel, 0, false, false, kN), 21, 64},
      {"int8 g64 asym", spec(DType::kI8, G::kGroup, 64, false, false, kN), 6, 128},
      {"int8 tensor", spec(DType::kI8, G::kTensor, 0, true, false, kN), 4, 8},
      {"fp8 tensor static",
       spec(DType::kF8E4M3, G::kTensor, 0, true, false, ActivationQuant::kStatic), 20, 64},
      {"fp8 channel dynamic",
       spec(DType::kF8E4M3, G::kChannel, 0, true, false, ActivationQuant::kDynamic), 20, 64},
      {"fp8 channel weight-only", spec(DType::kF8E4M3, G::kChannel, 0, true, false, kN), 3, 10},
      {"fp8 group 32", spec(DType::kF8E4M3, G::kGroup, 32, true, false, ActivationQuant::kDynamic),
       4, 64},
      {"fp8 block128 ragged",
       spec(DType::kF8E4M3, G::kBlock, 128, true, false, ActivationQuant::kDynamic), 130, 300},
  };
}

TEST(CompressedTensorsTest, RoundTripEveryScheme) {
  uint32_t seed = 1;
  for (const RoundTripCase& c : RoundTripCases()) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(ValidateCtConfigSpec(c.spec).ok()) << ValidateCtConfigSpec(c.spec);
    const QuantizedMatrix m = RandomMatrix(c.spec, c.rows, c.cols, seed++);
    ASSERT_TRUE(ValidateQuantizedMatrix(m, c.name).ok()) << ValidateQuantizedMatrix(m, c.name);
    auto qc = ParseQuantizationConfig(
        json{{"quantization_config", CompressedTensorsConfig(c.spec)}}, c.name);
    ASSERT_TRUE(qc.ok()) << qc.status();
    for (DType scale_dtype : {DType::kBF16, DType::kF32, DType::kF16}) {
      std::optional<float> input_scale;
      if (c.spec.activations == ActivationQuant::kStatic) input_scale = 0.25f;
      auto packed = PackCompressedTensors("layers.3.mlp.up_proj", m, scale_dtype, input_scale);
      ASSERT_TRUE(packed.ok()) << packed.status();
      const auto tensors = ToMap(*packed);
      auto back = ReadQuantizedLinear(*qc, "layers.3.mlp.up_proj", MapLookup(tensors));
      ASSERT_TRUE(back.ok()) << back.status();
      ASSERT_TRUE(back->has_value());
      if (scale_dtype == DType::kF16) {  // bf16-exact scales are not all f16-exact
        EXPECT_TRUE(SameBytes(m.values, (*back)->values));
      } else {
        ExpectSameMatrix(m, **back);
      }
      auto is = ReadInputScale("layers.3.mlp.up_proj", MapLookup(tensors));
      ASSERT_TRUE(is.ok());
      EXPECT_EQ(is->has_value(), input_scale.has_value());
    }
  }
}

TEST(CompressedTensorsTest, RoundTripThroughSafetensorsFile) {
  testing_util::ScratchDir dir;
  CtConfigSpec spec;
  spec.group_size = 32;
  spec.symmetric = false;
  const QuantizedMatrix m = RandomMatrix(spec, 12, 64, 77);
  auto packed = PackCompressedTensors("model.layers.1.self_attn.o_proj", m);
  ASSERT_TRUE(packed.ok()) << packed.status();
  ASSERT_TRUE(WriteSafetensors(dir.File("model.safetensors"), *packed).ok());
  auto file = OpenOrDie(dir.File("model.safetensors"));
  ASSERT_TRUE(file);
  auto qc =
      ParseQuantizationConfig(json{{"quantization_config", CompressedTensorsConfig(spec)}}, "x");
  ASSERT_TRUE(qc.ok());
  auto back = ReadQuantizedLinear(*qc, "model.layers.1.self_attn.o_proj",
                                  [&](const std::string& n) -> std::optional<Tensor> {
                                    if (!file->Has(n)) return std::nullopt;
                                    return *file->Get(n);
                                  });
  ASSERT_TRUE(back.ok() && back->has_value()) << back.status();
  ExpectSameMatrix(m, **back);
}

// ------------------------------------------------ GPTQ / AWQ / DeepSeek --

void CheckExternalFixture(const std::string& name) {
  SCOPED_TRACE(name);
  auto qc = ParseQuantizationConfig(ReadJson(Fixture(name + ".json")), name + ".json");
  ASSERT_TRUE(qc.ok()) << qc.status();
  auto file = LoadAll(Fixture(name + ".safetensors"));
  auto m = ReadQuantizedLinear(*qc, kGptqModule, MapLookup(file));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->has_value());
  auto ref = LoadAll(Fixture(name + ".ref.safetensors"));
  ExpectMatchesRef(**m, ref);
  // The reference was computed from the unsigned stored values: equal in f32.
  EXPECT_EQ(AsF32(Dequantize(**m)), AsF32(ref.at("dequantized")));
}

TEST(ExternalFormatsTest, GptqFixtures) {
  for (const char* name : {"gptq_4bit_g32_sym", "gptq_4bit_g32_actorder", "gptq_8bit_g32_sym",
                           "gptq_4bit_channel_sym", "gptq_v2_4bit_g32_asym"}) {
    CheckExternalFixture(name);
  }
  auto qc = ParseQuantizationConfig(ReadJson(Fixture("gptq_4bit_g32_actorder.json")), "x");
  ASSERT_TRUE(qc.ok());
  EXPECT_EQ(qc->kind, QuantizationConfig::Kind::kGptq);
  EXPECT_EQ(qc->format, "gptq");
  EXPECT_EQ(qc->bits, 4);
  EXPECT_EQ(qc->group_size, 32);
  EXPECT_TRUE(qc->desc_act);
  EXPECT_TRUE(qc->sym);
}

TEST(ExternalFormatsTest, AwqFixture) {
  CheckExternalFixture("awq_4bit_g32");
  auto qc = ParseQuantizationConfig(ReadJson(Fixture("awq_4bit_g32.json")), "x");
  ASSERT_TRUE(qc.ok());
  EXPECT_EQ(qc->kind, QuantizationConfig::Kind::kAwq);
  EXPECT_FALSE(qc->sym);
}

TEST(ExternalFormatsTest, DeepSeekFp8Fixture) {
  CheckExternalFixture("deepseek_fp8_block");
  auto qc = ParseQuantizationConfig(ReadJson(Fixture("deepseek_fp8_block.json")), "x");
  ASSERT_TRUE(qc.ok());
  EXPECT_EQ(qc->kind, QuantizationConfig::Kind::kFp8Block);
  EXPECT_EQ(qc->weight_block_size, (std::array<int64_t, 2>{128, 128}));
  auto file = LoadAll(Fixture("deepseek_fp8_block.safetensors"));
  auto ref = LoadAll(Fixture("deepseek_fp8_block.ref.safetensors"));
  auto bf16 =
      DequantizeFp8BlockToBf16(file.at(std::string(kGptqModule) + ".weight"),
                               file.at(std::string(kGptqModule) + ".weight_scale_inv"), "w");
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_TRUE(SameBytes(*bf16, ref.at("dequantized_bf16")));
}

TEST(ExternalFormatsTest, UnquantizedModulesGiveNullopt) {
  std::map<std::string, Tensor> plain = {{"lm_head.weight", Tensor::Zeros(DType::kBF16, {4, 8})}};
  for (const char* cfg :
       {"gptq_4bit_g32_sym.json", "awq_4bit_g32.json", "deepseek_fp8_block.json"}) {
    auto qc = ParseQuantizationConfig(ReadJson(Fixture(cfg)), cfg);
    ASSERT_TRUE(qc.ok());
    auto m = ReadQuantizedLinear(*qc, "lm_head", MapLookup(plain));
    ASSERT_TRUE(m.ok()) << cfg << " " << m.status();
    EXPECT_FALSE(m->has_value());
  }
  const QuantizationConfig ct = CtConfigOf("fp8_tensor");
  auto m = ReadQuantizedLinear(ct, "lm_head", MapLookup(plain));
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value());
  auto none = ReadQuantizedLinear(QuantizationConfig(), "lm_head", MapLookup(plain));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

// ---------------------------------------------------------- bad input --

absl::Status ReadWith(const QuantizationConfig& qc, const std::string& module,
                      const std::map<std::string, Tensor>& tensors) {
  auto m = ReadQuantizedLinear(qc, module, MapLookup(tensors));
  return m.status();
}

TEST(CompressedTensorsBadInputTest, CompressedTensorsTensors) {
  const QuantizationConfig qc = CtConfigOf("int4_g32_asym");
  const auto good = LoadAll(Fixture("int4_g32_asym.safetensors"));
  const std::string p = std::string(kCtModule) + ".";
  ASSERT_TRUE(ReadWith(qc, kCtModule, good).ok());

  auto with = [&](const std::string& suffix, std::optional<Tensor> t) {
    auto m = good;
    if (t) {
      m[p + suffix] = *t;
    } else {
      m.erase(p + suffix);
    }
    return ReadWith(qc, kCtModule, m);
  };
  absl::Status s = with("weight_scale", std::nullopt);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(p + "weight_scale"));
  EXPECT_THAT(with("weight_zero_point", std::nullopt).message(), HasSubstr("weight_zero_point"));
  EXPECT_THAT(with("weight_shape", std::nullopt).message(), HasSubstr("weight_shape"));
  EXPECT_THAT(with("weight_scale", Tensor::Zeros(DType::kI32, {20, 8})).message(),
              HasSubstr("weight_scale"));
  EXPECT_THAT(with("weight_scale", Tensor::Zeros(DType::kBF16, {20, 4})).message(),
              HasSubstr("[20, 8]"));
  EXPECT_THAT(with("weight_zero_point", Tensor::Zeros(DType::kI32, {20, 8})).message(),
              HasSubstr("weight_zero_point"));
  EXPECT_THAT(with("weight_packed", Tensor::Zeros(DType::kI64, {20, 32})).message(),
              HasSubstr("weight_packed"));
  // Packed size that does not match weight_shape.
  Tensor shape = Tensor::Zeros(DType::kI64, {2});
  shape.mutable_data<int64_t>()[0] = 20;
  shape.mutable_data<int64_t>()[1] = 512;
  EXPECT_THAT(with("weight_shape", shape).message(), HasSubstr("weight_packed"));
  shape.mutable_data<int64_t>()[1] = -256;
  EXPECT_THAT(with("weight_shape", shape).message(), HasSubstr("weight_shape"));
  // A group size that does not divide the columns.
  shape.mutable_data<int64_t>()[1] = 250;
  EXPECT_THAT(with("weight_shape", shape).message(), HasSubstr("does not divide"));
  // Zero scales (a dead group) and NaN scales are refused by validation.
  Tensor zero_scales = Tensor::Zeros(DType::kBF16, {20, 8});
  EXPECT_THAT(with("weight_scale", zero_scales).message(), HasSubstr("scale"));
  // g_idx outside the groups.
  Tensor g = Tensor::Zeros(DType::kI32, {256});
  g.mutable_data<int32_t>()[5] = 8;
  EXPECT_THAT(with("weight_g_idx", g).message(), HasSubstr("weight_g_idx"));
  EXPECT_THAT(with("weight_g_idx", Tensor::Zeros(DType::kF32, {256})).message(),
              HasSubstr("weight_g_idx"));
  // Nothing at all for the module.
  std::map<std::string, Tensor> empty;
  EXPECT_EQ(ReadWith(qc, kCtModule, empty).code(), absl::StatusCode::kNotFound);

  // Act-order scheme without g_idx.
  const QuantizationConfig act = CtConfigOf("int4_g32_actorder");
  auto ao = LoadAll(Fixture("int4_g32_actorder.safetensors"));
  ao.erase(p + "weight_g_idx");
  EXPECT_THAT(ReadWith(act, kCtModule, ao).message(), HasSubstr("weight_g_idx"));

  // fp8: wrong scale shape, missing scale, e5m2 weight.
  const QuantizationConfig fp8 = CtConfigOf("fp8_block128");
  auto blk = LoadAll(Fixture("fp8_block128.safetensors"));
  auto b2 = blk;
  b2[p + "weight_scale"] = Tensor::Zeros(DType::kBF16, {2, 2});
  EXPECT_THAT(ReadWith(fp8, kCtModule, b2).message(), HasSubstr("[2, 3]"));
  b2.erase(p + "weight_scale");
  EXPECT_THAT(ReadWith(fp8, kCtModule, b2).message(), HasSubstr("weight_scale"));
  b2 = blk;
  b2[p + "weight"] = Tensor::Zeros(DType::kF8E5M2, {144, 320});
  EXPECT_THAT(ReadWith(fp8, kCtModule, b2).message(), HasSubstr("F8_E5M2"));
}

TEST(CompressedTensorsBadInputTest, ExternalTensors) {
  const std::string p = std::string(kGptqModule) + ".";
  auto check = [&](const std::string& cfg, const std::string& fixture, const std::string& suffix,
                   std::optional<Tensor> t, const std::string& expect) {
    auto qc = ParseQuantizationConfig(ReadJson(Fixture(cfg)), cfg);
    ASSERT_TRUE(qc.ok());
    auto m = LoadAll(Fixture(fixture));
    if (t) {
      m[p + suffix] = *t;
    } else {
      m.erase(p + suffix);
    }
    absl::Status s = ReadWith(*qc, kGptqModule, m);
    EXPECT_FALSE(s.ok()) << fixture << " " << suffix;
    EXPECT_THAT(s.message(), HasSubstr(expect)) << fixture << " " << suffix;
    EXPECT_THAT(s.message(), HasSubstr(kGptqModule));
  };
  check("gptq_4bit_g32_sym.json", "gptq_4bit_g32_sym.safetensors", "scales", std::nullopt,
        "scales");
  check("gptq_4bit_g32_sym.json", "gptq_4bit_g32_sym.safetensors", "qzeros", std::nullopt,
        "qzeros");
  check("gptq_4bit_g32_sym.json", "gptq_4bit_g32_sym.safetensors", "qzeros",
        Tensor::Zeros(DType::kI32, {2, 4}), "qzeros");
  check("gptq_4bit_g32_sym.json", "gptq_4bit_g32_sym.safetensors", "scales",
        Tensor::Zeros(DType::kF16, {3, 24}), "scales");
  check("gptq_4bit_g32_sym.json", "gptq_4bit_g32_sym.safetensors", "qweight",
        Tensor::Zeros(DType::kI32, {5, 24}), "does not divide");
  check("gptq_4bit_g32_sym.json", "gptq_4bit_g32_sym.safetensors", "qweight",
        Tensor::Zeros(DType::kF16, {8, 24}), "qweight");
  check("gptq_4bit_g32_actorder.json", "gptq_4bit_g32_actorder.safetensors", "g_idx", std::nullopt,
        "g_idx");
  check("gptq_4bit_g32_actorder.json", "gptq_4bit_g32_actorder.safetensors", "g_idx",
        Tensor::Zeros(DType::kI32, {63}), "g_idx");
  check("awq_4bit_g32.json", "awq_4bit_g32.safetensors", "qzeros",
        Tensor::Zeros(DType::kI32, {2, 4}), "qzeros");
  check("awq_4bit_g32.json", "awq_4bit_g32.safetensors", "scales",
        Tensor::Zeros(DType::kF32, {24, 2}), "scales");
  check("deepseek_fp8_block.json", "deepseek_fp8_block.safetensors", "weight_scale_inv",
        std::nullopt, "weight_scale_inv");
  check("deepseek_fp8_block.json", "deepseek_fp8_block.safetensors", "weight_scale_inv",
        Tensor::Zeros(DType::kF32, {2, 2}), "weight_scale_inv");

  // v1 GPTQ zero stored as 15 means 16: outside 4 bits.
  auto qc = ParseQuantizationConfig(ReadJson(Fixture("gptq_4bit_g32_sym.json")), "x");
  auto m = LoadAll(Fixture("gptq_4bit_g32_sym.safetensors"));
  Tensor z = Tensor::Zeros(DType::kI32, {2, 3});
  for (int i = 0; i < 6; ++i) z.mutable_data<int32_t>()[i] = -1;
  m[p + "qzeros"] = z;
  EXPECT_THAT(ReadWith(*qc, kGptqModule, m).message(), HasSubstr("qzeros"));

  EXPECT_FALSE(DequantizeFp8BlockToBf16(Tensor::Zeros(DType::kBF16, {4, 4}),
                                        Tensor::Zeros(DType::kF32, {1, 1}), "w")
                   .ok());
  EXPECT_THAT(DequantizeFp8BlockToBf16(Tensor::Zeros(DType::kF8E4M3, {200, 4}),
                                       Tensor::Zeros(DType::kF32, {1, 1}), "w.x")
                  .status()
                  .message(),
              HasSubstr("w.x"));
}

// Every tensor of every fixture dropped, retyped or reshaped: an error or a
// valid matrix, never a crash.
TEST(CompressedTensorsBadInputTest, MutatedTensorsNeverCrash) {
  std::vector<std::pair<QuantizationConfig, std::string>> cases;
  std::vector<std::string> modules;
  for (const char* name : kCtCases) {
    cases.emplace_back(CtConfigOf(name), std::string(name) + ".safetensors");
    modules.push_back(kCtModule);
  }
  for (const char* name :
       {"gptq_4bit_g32_actorder", "gptq_8bit_g32_sym", "awq_4bit_g32", "deepseek_fp8_block"}) {
    cases.emplace_back(
        *ParseQuantizationConfig(ReadJson(Fixture(std::string(name) + ".json")), name),
        std::string(name) + ".safetensors");
    modules.push_back(kGptqModule);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto good = LoadAll(Fixture(cases[i].second));
    for (const auto& [name, t] : good) {
      for (int mutation = 0; mutation < 5; ++mutation) {
        auto m = good;
        switch (mutation) {
          case 0:
            m.erase(name);
            break;
          case 1:
            m[name] = Tensor::Zeros(DType::kU8, t.shape());
            break;
          case 2:
            m[name] = Tensor::Zeros(t.dtype(), {t.numel()});
            break;
          case 3:
            m[name] = Tensor::Zeros(t.dtype(), {1, 1});
            break;
          case 4:
            m[name] = Tensor::Zeros(DType::kI32, {t.rank() > 0 ? t.dim(0) + 1 : 1, 3});
            break;
        }
        auto r = ReadQuantizedLinear(cases[i].first, modules[i], MapLookup(m));
        if (r.ok() && r->has_value()) {
          EXPECT_TRUE(ValidateQuantizedMatrix(**r, "x").ok());
        }
      }
    }
  }
}

TEST(CompressedTensorsBadInputTest, ConfigErrorsNameTheField) {
  auto err = [](const json& q) {
    auto r = ParseQuantizationConfig(json{{"quantization_config", q}}, "model/config.json");
    EXPECT_FALSE(r.ok()) << q.dump();
    return std::string(r.status().message());
  };
  json ct = CompressedTensorsConfig(CtConfigSpec{});
  EXPECT_THAT(err(json{{"quant_method", "bitsandbytes"}}),
              HasSubstr("quantization_config.quant_method"));
  EXPECT_THAT(err(json{{"bits", 4}}), HasSubstr("quant_method"));
  json bad = ct;
  bad["config_groups"]["group_0"]["weights"]["num_bits"] = 3;
  EXPECT_THAT(err(bad), HasSubstr("config_groups.group_0.weights.num_bits"));
  EXPECT_THAT(err(bad), HasSubstr("model/config.json"));
  bad = ct;
  bad["config_groups"]["group_0"]["weights"]["strategy"] = "token";
  EXPECT_THAT(err(bad), HasSubstr("weights.strategy"));
  bad = ct;
  bad["config_groups"]["group_0"]["weights"]["group_size"] = "128";
  EXPECT_THAT(err(bad), HasSubstr("weights.group_size"));
  bad = ct;
  bad["format"] = "nvfp4-pack-quantized";
  bad["config_groups"]["group_0"].erase("format");
  EXPECT_THAT(err(bad), HasSubstr("quantization_config.format"));
  bad = ct;
  bad["config_groups"]["group_0"]["weights"]["dynamic"] = true;
  EXPECT_THAT(err(bad), HasSubstr("weights.dynamic"));
  bad = ct;
  bad["config_groups"]["group_0"] = json::array({"Linear"});
  EXPECT_THAT(err(bad), HasSubstr("group_0"));
  bad = CompressedTensorsConfig(SpecOf("fp8_block128"));
  bad["config_groups"]["group_0"]["weights"]["block_structure"] = json::array({128, 64});
  EXPECT_THAT(err(bad), HasSubstr("block_structure"));
  bad = ct;
  bad["sparsity_config"] = json{{"format", "sparse-24-bitmask"}};
  EXPECT_THAT(err(bad), HasSubstr("sparsity_config"));

  EXPECT_THAT(err(json{{"quant_method", "gptq"}, {"bits", 3}, {"group_size", 128}}),
              HasSubstr("quantization_config.bits"));
  EXPECT_THAT(err(json{{"quant_method", "gptq"}, {"bits", 4}, {"checkpoint_format", "marlin"}}),
              HasSubstr("checkpoint_format"));
  EXPECT_THAT(err(json{{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 0}}),
              HasSubstr("group_size"));
  EXPECT_THAT(
      err(json{{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"version", "gemv"}}),
      HasSubstr("version"));
  EXPECT_THAT(err(json{{"quant_method", "awq"}, {"bits", 4}}), HasSubstr("group_size"));
  EXPECT_THAT(err(json{{"quant_method", "fp8"}, {"fmt", "e4m3"}}), HasSubstr("weight_block_size"));
  EXPECT_THAT(err(json{{"quant_method", "fp8"}, {"weight_block_size", {128, 64}}}),
              HasSubstr("weight_block_size"));
  EXPECT_THAT(
      err(json{{"quant_method", "fp8"}, {"fmt", "e5m2"}, {"weight_block_size", {128, 128}}}),
      HasSubstr("fmt"));
  EXPECT_THAT(err(json::array()), HasSubstr("quantization_config"));
  EXPECT_FALSE(ParseQuantizationConfig(json::array(), "c").ok());
}

TEST(CompressedTensorsBadInputTest, WriterRejectsWhatTheFormatCannotHold) {
  CtConfigSpec s;
  s.value_type = DType::kF8E5M2;
  EXPECT_FALSE(ValidateCtConfigSpec(s).ok());
  s = CtConfigSpec{};
  s.granularity = QuantGranularity::kBlock;
  EXPECT_FALSE(ValidateCtConfigSpec(s).ok());
  s = CtConfigSpec{};
  s.activations = ActivationQuant::kDynamic;
  EXPECT_FALSE(ValidateCtConfigSpec(s).ok());
  s = CtConfigSpec{};
  s.granularity = QuantGranularity::kTensor;
  s.symmetric = false;
  EXPECT_FALSE(ValidateCtConfigSpec(s).ok());

  CtConfigSpec e5;
  e5.value_type = DType::kF8E5M2;
  e5.granularity = QuantGranularity::kChannel;
  QuantizedMatrix m = RandomMatrix(e5, 4, 8, 3);
  EXPECT_THAT(PackCompressedTensors("a.b", m).status().message(), HasSubstr("e5m2"));
  QuantizedMatrix broken = RandomMatrix(CtConfigSpec{}, 4, 256, 3);
  broken.scales.mutable_data<float>()[1] = NAN;
  EXPECT_THAT(PackCompressedTensors("a.b", broken).status().message(), HasSubstr("a.b"));
  QuantizedMatrix ok = RandomMatrix(CtConfigSpec{}, 4, 256, 3);
  EXPECT_FALSE(PackCompressedTensors("a.b", ok, DType::kI8).ok());
  EXPECT_FALSE(PackCompressedTensors("a.b", ok, DType::kBF16, 0.5f).ok());
}

}  // namespace
}  // namespace retort
