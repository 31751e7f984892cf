// A model directory, recipe or chat is untrusted input: hostile files give
// exit 1, one line on stderr naming the file and the limit, and no output
// left behind; never a crash.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"

namespace retort {
namespace {
namespace fs = std::filesystem;
using testing::CliRun;
using ::testing::HasSubstr;
using ::testing::Not;

class HostileInputCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new testing::CliHarness("retort_hostile_cli_test");
    root_ = harness_->root();
    CliRun r = Exec("init " + Path("tiny") + " --family llama --size tiny --dtype f32 --seed 3");
    ASSERT_EQ(r.code, 0) << r.err;
    std::ofstream(Path("text.txt")) << "the quick brown fox jumps over the lazy dog, twice over.\n";
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  static CliRun Exec(const std::string& args) { return harness_->Exec(args); }
  static std::string Path(const std::string& rel) { return (root_ / rel).string(); }
  static std::string CopyModel(const std::string& name) {
    fs::remove_all(root_ / name);
    fs::copy(root_ / "tiny", root_ / name, fs::copy_options::recursive);
    return Path(name);
  }
  static void Write(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }
  static nlohmann::json ReadJson(const std::string& path) {
    return nlohmann::json::parse(ReadFileToString(path).value());
  }
  static void ExpectOneLineError(const CliRun& r, const std::string& what) {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(what));
  }
  // No file or folder under the scratch root whose name holds `part`
  // (outputs and their temporary names alike).
  static void ExpectNothingNamed(const std::string& part) {
    for (const auto& e : fs::recursive_directory_iterator(root_)) {
      EXPECT_EQ(e.path().filename().string().find(part), std::string::npos) << e.path();
    }
  }

  static testing::CliHarness* harness_;
  static fs::path root_;
};
testing::CliHarness* HostileInputCliTest::harness_ = nullptr;
fs::path HostileInputCliTest::root_;

TEST_F(HostileInputCliTest, DeeplyNestedJsonIsRefusedNotACrash) {
  const std::string m = CopyModel("deep");
  Write(m + "/config.json", std::string(1'000'000, '['));
  ExpectOneLineError(Exec("inspect " + m),
                     m + "/config.json: JSON nests deeper than 64 levels (at byte 64)");

  const std::string t = CopyModel("deep_tok");
  Write(t + "/tokenizer.json", std::string(500'000, '{') + "\"a\":" + std::string(500'000, '['));
  ExpectOneLineError(Exec("convert " + t + " " + Path("deep_tok_out.gguf") + " --type f32"),
                     t + "/tokenizer.json: JSON nests deeper than 64 levels");
  ExpectNothingNamed("deep_tok_out");

  // A chat given inline.
  ExpectOneLineError(
      Exec("tokenize " + Path("tiny") + " --chat '" + std::string(100'000, '[') + "'"),
      "JSON nests deeper than 64 levels");
}

TEST_F(HostileInputCliTest, ImplausibleSizesAreRefusedBeforeAllocating) {
  struct Case {
    const char* field;
    int64_t value;
  } cases[] = {{"num_hidden_layers", 1000000000},
               {"hidden_size", int64_t{1} << 40},
               {"vocab_size", int64_t{1} << 40},
               {"max_position_embeddings", 1000000000000}};
  for (const Case& c : cases) {
    const std::string m = CopyModel("huge");
    nlohmann::json config = ReadJson(m + "/config.json");
    config[c.field] = c.value;
    Write(m + "/config.json", config.dump());
    for (const std::string cmd : {"inspect " + m, "eval " + m + " --perplexity " + Path("text.txt"),
                                  "convert " + m + " " + Path("huge_out.gguf")}) {
      SCOPED_TRACE(cmd);
      ExpectOneLineError(Exec(cmd), m + "/config.json: field \"" + std::string(c.field) + "\" is " +
                                        std::to_string(c.value) + ", above the plausible maximum");
    }
  }
  ExpectNothingNamed("huge_out");
}

TEST_F(HostileInputCliTest, OutOfMemoryIsOneLineNotAnAbort) {
  // Plausible sizes (18 GB of f32 weights) that do not fit a 3 GB address space.
  CliRun r = harness_->ExecWithPrefix("ulimit -v 3000000; ",
                                      "init " + Path("oom") +
                                          " --size tiny --hidden 32768 --heads 256 --kv-heads 256 "
                                          "--intermediate 65536 --layers 2 --dtype f32");
  ExpectOneLineError(r, "retort init: error: out of memory while running init");
  ExpectNothingNamed("oom");
}

TEST_F(HostileInputCliTest, MistypedTokenizerJsonInConvertIsAnError) {
  const std::string m = CopyModel("mistyped");
  nlohmann::json tok = ReadJson(m + "/tokenizer.json");
  ASSERT_TRUE(tok["added_tokens"].is_array() && !tok["added_tokens"].empty());
  tok["added_tokens"][0]["special"] = "yes";
  Write(m + "/tokenizer.json", tok.dump());
  ExpectOneLineError(Exec("convert " + m + " " + Path("mistyped_out.gguf") + " --type f32"),
                     m + "/tokenizer.json: added_tokens[0].special: expected true/false");
  tok["added_tokens"][0]["special"] = true;
  tok["model"]["type"] = nlohmann::json::array({"BPE"});
  Write(m + "/tokenizer.json", tok.dump());
  ExpectOneLineError(Exec("convert " + m + " " + Path("mistyped_out.gguf") + " --type f32"),
                     m + "/tokenizer.json: model.type: expected a string");
  ExpectNothingNamed("mistyped_out");
}

// Overwrites the first `count` values of f32 tensor `name` in the model's
// safetensors file with `value`.
void Poison(const std::string& file, const std::string& name, float value, int count) {
  std::string bytes = ReadFileToString(file).value();
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_len));
  ASSERT_EQ(header.at(name).at("dtype"), "F32");
  const uint64_t begin = 8 + header_len + header.at(name).at("data_offsets")[0].get<uint64_t>();
  for (int i = 0; i < count; ++i) std::memcpy(&bytes[begin + 4 * i], &value, 4);
  std::ofstream(file, std::ios::binary) << bytes;
}

TEST_F(HostileInputCliTest, NonFiniteWeightsAreReportedAndRefused) {
  CliRun clean = Exec("inspect " + Path("tiny") + " --check-values");
  EXPECT_EQ(clean.code, 0) << clean.err;
  EXPECT_THAT(clean.out, HasSubstr("values         all finite ("));
  CliRun clean_json = Exec("inspect " + Path("tiny") + " --check-values --json");
  ASSERT_EQ(clean_json.code, 0) << clean_json.err;
  EXPECT_EQ(nlohmann::json::parse(clean_json.out)["non_finite_tensors"], nlohmann::json::array());

  const std::string m = CopyModel("nan");
  Poison(m + "/model.safetensors", "model.embed_tokens.weight",
         std::numeric_limits<float>::quiet_NaN(), 3);
  Poison(m + "/model.safetensors", "model.norm.weight", std::numeric_limits<float>::infinity(), 1);
  // Without the flag inspect reads headers only and says nothing of values.
  EXPECT_EQ(Exec("inspect " + m).code, 0);
  CliRun r = Exec("inspect " + m + " --check-values");
  ExpectOneLineError(r, m + ": 2 tensor(s) hold NaN or Inf values (model.embed_tokens.weight, "
                            "model.norm.weight)");
  EXPECT_THAT(r.out, HasSubstr("values         2 of "));
  EXPECT_THAT(r.out, HasSubstr("model.embed_tokens.weight"));
  r = Exec("inspect " + m + " --check-values --json");
  EXPECT_EQ(r.code, 1);
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["non_finite_tensors"].size(), 2u);
  EXPECT_EQ(j["non_finite_tensors"][0]["name"], "model.embed_tokens.weight");
  EXPECT_EQ(j["non_finite_tensors"][0]["non_finite"], 3);
  EXPECT_EQ(j["non_finite_tensors"][1]["non_finite"], 1);

  // The same check on a GGUF (f32 tensors; block-quantized ones are decoded).
  ASSERT_EQ(Exec("convert " + m + " " + Path("nan.gguf") + " --type f32").code, 0);
  ExpectOneLineError(Exec("inspect " + Path("nan.gguf") + " --check-values"),
                     Path("nan.gguf") +
                         ": 2 tensor(s) hold NaN or Inf values (token_embd.weight, "
                         "output_norm.weight)");
  ASSERT_EQ(Exec("convert " + Path("tiny") + " " + Path("tiny_q8.gguf") + " --type q8_0").code, 0);
  r = Exec("inspect " + Path("tiny_q8.gguf") + " --check-values");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("values         all finite ("));

  // Perplexity through NaN weights is refused, not printed as nan.
  EXPECT_EQ(Exec("eval " + Path("tiny") + " --perplexity " + Path("text.txt")).code, 0);
  r = Exec("eval " + m + " --perplexity " + Path("text.txt"));
  ExpectOneLineError(r, "is nan, not a finite number");
  EXPECT_THAT(r.err, HasSubstr(m));
  EXPECT_EQ(r.out, "");
  r = Exec("eval " + m + " --perplexity " + Path("text.txt") + " --json");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, Not(HasSubstr("nan")));
}

TEST_F(HostileInputCliTest, NonUtf8RecipeStringIsRefusedAtLoad) {
  const std::string recipe = Path("bad_utf8.textproto");
  Write(recipe,
        "name: \"r\"\n"
        "stage {\n"
        "  name: \"init\"\n"
        "  label: \"caf\xE9 au lait\"\n"
        "  init { family: \"llama\" size: \"tiny\" seed: 1 dtype: \"f32\" }\n"
        "}\n");
  CliRun r = Exec("run " + recipe + " -o " + Path("utf8_run"));
  ExpectOneLineError(r, recipe + ":4: stage[0].label is not valid UTF-8 (byte 3)");
  EXPECT_FALSE(fs::exists(Path("utf8_run")));
  // The same recipe as JSON, a bad byte in the recipe's own field.
  const std::string json_recipe = Path("bad_utf8.json");
  Write(json_recipe,
        "{\"name\": \"r\\u00e9\", \"device\": \"cpu\", \"description\": \"x\xFFy\", "
        "\"stage\": [{\"name\": \"init\", \"init\": {\"family\": \"llama\"}}]}");
  r = Exec("run " + json_recipe + " -o " + Path("utf8_json_run"));
  ExpectOneLineError(r, json_recipe + ":1:55: not valid UTF-8 (recipe strings must be UTF-8)");
  for (unsigned char c : r.err) EXPECT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << int{c};
  EXPECT_FALSE(fs::exists(Path("utf8_json_run")));
}

}  // namespace
}  // namespace retort
