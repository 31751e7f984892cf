// `retort convert --to hf` of quantized HF checkpoints (a DeepSeek-V3/R1
// style FP8 block checkpoint made here), and the refusals of
// `retort quantize --to gguf` for quantized input and an existing OUT.
#include <cstring>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/quant_matrix.h"
#include "formats/hf_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "quantize/scheme.h"
#include "tests/cli/cli_harness.h"

namespace retort {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class ConvertQuantizedTest : public ::testing::Test {
 protected:
  ConvertQuantizedTest() : cli_("retort_convert_quantized") {}

  // A 1-layer llama of width 512 (so 128x128 blocks are real blocks), bf16.
  std::string Base() {
    const std::string dir = (cli_.root() / "base").string();
    if (!fs::exists(dir)) {
      auto r =
          cli_.Exec(absl::StrCat("init ", dir, " --family llama --size 30m --layers 1 --seed 5"));
      EXPECT_EQ(r.code, 0) << r.err;
    }
    return dir;
  }

  testing::CliHarness cli_;
};

TEST_F(ConvertQuantizedTest, DeepSeekFp8BlocksDequantizeToBf16) {
  const std::string base = Base();
  auto model = Transformer::Load(base);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  auto scheme = quant::ParseQuantScheme("fp8-block128");
  ASSERT_TRUE(scheme.ok());

  // DeepSeek's layout: <m>.weight F8_E4M3 + <m>.weight_scale_inv F32 blocks.
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, Tensor> expected;  // dequantized, bf16
  for (const auto& [name, t] : (*model)->NamedWeights()) {
    const bool linear = name.find("_proj.weight") != std::string::npos;
    if (!linear) {
      tensors.emplace_back(name, t);
      continue;
    }
    Tensor f = t.To(DType::kF32);
    auto q = quant::QuantizeRtn(f.data<float>(), f.dim(0), f.dim(1), *scheme, name);
    ASSERT_TRUE(q.ok()) << q.status();
    const std::string module = name.substr(0, name.size() - 7);
    tensors.emplace_back(name, q->values);
    tensors.emplace_back(module + ".weight_scale_inv", q->scales);
    expected[name] = Dequantize(*q, DType::kBF16);
  }
  nlohmann::json config = c.ToJson();
  config["quantization_config"] = {{"quant_method", "fp8"},
                                   {"fmt", "e4m3"},
                                   {"activation_scheme", "dynamic"},
                                   {"weight_block_size", {128, 128}}};
  const std::string fp8 = (cli_.root() / "fp8").string();
  ASSERT_TRUE(WriteHfDirectory(fp8, config, tensors).ok());
  fs::copy_file(fs::path(base) / "tokenizer.json", fs::path(fp8) / "tokenizer.json");

  // The engine runs it quantized ...
  auto loaded = Transformer::Load(fp8);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->QuantizedWeights().size(), 7u);

  // ... and convert writes the bf16 weights DeepSeek's fp8_cast_bf16 computes.
  const std::string out = (cli_.root() / "bf16").string();
  auto r = cli_.Exec(absl::StrCat("convert ", fp8, " ", out, " --to hf --dtype bf16"));
  ASSERT_EQ(r.code, 0) << r.err;
  auto dir = HfDirectory::Open(out);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_FALSE(dir->get()->config().contains("quantization_config"));
  for (const auto& [name, want] : expected) {
    auto got = (*dir)->Get(name);
    ASSERT_TRUE(got.ok()) << name;
    ASSERT_EQ(got->dtype(), DType::kBF16);
    ASSERT_EQ(got->nbytes(), want.nbytes());
    EXPECT_EQ(0, std::memcmp(got->raw(), want.raw(), want.nbytes())) << name;
  }
  EXPECT_TRUE(fs::exists(fs::path(out) / "tokenizer.json"));

  // A plain checkpoint has nothing to dequantize.
  r = cli_.Exec(absl::StrCat("convert ", base, " ", (cli_.root() / "x").string(), " --to hf"));
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("not a quantized checkpoint"));
}

TEST_F(ConvertQuantizedTest, GgufExportRefusesQuantizedInputAndExistingOutput) {
  const std::string base = Base();
  const std::string q = (cli_.root() / "int4").string();
  auto r = cli_.Exec(absl::StrCat("quantize ", base, " ", q, " --scheme int4-g64"));
  ASSERT_EQ(r.code, 0) << r.err;

  const std::string gguf = (cli_.root() / "q.gguf").string();
  r = cli_.Exec(absl::StrCat("quantize ", q, " ", gguf, " --type q8_0"));
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("already quantized"));
  EXPECT_FALSE(fs::exists(gguf));

  // Explicitly allowed: the int4 linears are dequantized and re-encoded.
  r = cli_.Exec(absl::StrCat("quantize ", q, " ", gguf, " --type q8_0 --allow-requantize"));
  ASSERT_EQ(r.code, 0) << r.err;
  auto engine = cli_.Exec(absl::StrCat("inspect ", gguf));
  EXPECT_EQ(engine.code, 0) << engine.err;

  // An existing OUT is never overwritten.
  const auto size = fs::file_size(gguf);
  r = cli_.Exec(absl::StrCat("quantize ", base, " ", gguf, " --type q4_0"));
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("already exists"));
  EXPECT_EQ(fs::file_size(gguf), size);
}

}  // namespace
}  // namespace retort
