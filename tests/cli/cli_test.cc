// End-to-end tests of the `retort` binary: what a user types, what they see.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/file.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"

namespace retort {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

using testing::CliRun;

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new testing::CliHarness("retort_cli_test");
    root_ = harness_->root();
    // One small model shared by the tests (f32 so logits are exact).
    CliRun r = Exec("init " + (root_ / "tiny").string() +
                    " --family llama --size tiny --dtype f32 --seed 7");
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }

  static CliRun Exec(const std::string& args) { return harness_->Exec(args); }
  // A copy of the shared model that a test may damage.
  static std::string CopyModel(const std::string& name) {
    fs::path dst = root_ / name;
    fs::remove_all(dst);
    fs::copy(root_ / "tiny", dst, fs::copy_options::recursive);
    return dst.string();
  }
  static std::string Write(const std::string& name, const std::string& contents) {
    fs::path p = root_ / name;
    std::ofstream(p, std::ios::binary) << contents;
    return p.string();
  }
  static int Lines(const std::string& s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    return n;
  }
  // The promise for bad input: exit 1, exactly one line on stderr naming `what`.
  static void ExpectOneLineError(const CliRun& r, const std::string& what) {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(what));
  }

  static testing::CliHarness* harness_;
  static fs::path root_;
};
testing::CliHarness* CliTest::harness_ = nullptr;
fs::path CliTest::root_;

TEST_F(CliTest, HelpOnEveryCommand) {
  for (const char* cmd : {"init", "inspect", "tokenize", "generate", "eval"}) {
    CliRun r = Exec(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr(std::string("usage: retort ") + cmd));
  }
  EXPECT_EQ(Exec("").code, 2);
  EXPECT_EQ(Exec("frobnicate").code, 2);
}

// The conventions every command shares: --version, help defaults as written
// (no float noise), trace mode's options under `generate --help`.
TEST_F(CliTest, VersionAndCleanHelpOnEveryCommand) {
  const CliRun top = Exec("--version");
  ASSERT_EQ(top.code, 0);
  ASSERT_THAT(top.out, ::testing::StartsWith("retort "));
  for (const char* cmd :
       {"init", "inspect", "tokenize", "generate", "eval", "convert", "serve", "distill",
        "traces export", "quantize", "calibrate", "prune", "run", "report"}) {
    SCOPED_TRACE(cmd);
    const CliRun v = Exec(std::string(cmd) + " --version");
    EXPECT_EQ(v.code, 0) << v.err;
    EXPECT_EQ(v.out, top.out);
    const CliRun h = Exec(std::string(cmd) + " --help");
    EXPECT_EQ(h.code, 0);
    EXPECT_THAT(h.out, ::testing::Not(::testing::ContainsRegex("\\(=[-0-9.e]*0000[0-9]\\)")));
    EXPECT_THAT(h.out, ::testing::Not(::testing::ContainsRegex("\\(=[-0-9.e]*9999[0-9]*\\)")));
  }
  const CliRun distill = Exec("distill --help");
  EXPECT_THAT(distill.out, HasSubstr("--lr arg (=0.0003)"));
  EXPECT_THAT(distill.out, HasSubstr("--adam-beta1 arg (=0.9)"));
  EXPECT_THAT(distill.out, HasSubstr("--eval-fraction arg (=0.05)"));
  const CliRun generate = Exec("generate --help");
  EXPECT_THAT(generate.out, HasSubstr("trace mode (with --prompts PROMPTS.jsonl OUT)"));
  EXPECT_THAT(generate.out, HasSubstr("--keep"));
  EXPECT_THAT(generate.out, HasSubstr("--verifier"));
}

// `distill` trains the model it is given, never the bundled teacher by default.
TEST_F(CliTest, DistillWithoutAStudentIsAUsageError) {
  const CliRun r = Exec("distill --data x.txt -o " + (root_ / "no_student").string());
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("student"));
  EXPECT_FALSE(fs::exists(root_ / "no_student"));
  EXPECT_EQ(Exec("generate " + (root_ / "tiny").string() + " --bogus-flag").code, 2);
}

TEST_F(CliTest, InitInspectGenerateEndToEnd) {
  CliRun r = Exec("inspect " + (root_ / "tiny").string() + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(j["vocab_size"], 259);
  EXPECT_GT(j["parameters"].get<int64_t>(), 0);

  std::string gen =
      "generate " + (root_ / "tiny").string() + " --prompt 'The answer is' --max-tokens 12 --json";
  CliRun a = Exec(gen + " --seed 3"), b = Exec(gen + " --seed 3"), g1 = Exec(gen + " --greedy"),
         g2 = Exec(gen + " --greedy");
  ASSERT_EQ(a.code, 0) << a.err;
  auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["token_ids"], jb["token_ids"]) << "same seed, same tokens";
  EXPECT_EQ(ja["prompt_tokens"], 13);
  EXPECT_GT(ja["decode_tokens_per_second"].get<double>(), 0);
  EXPECT_EQ(nlohmann::json::parse(g1.out)["token_ids"], nlohmann::json::parse(g2.out)["token_ids"]);

  // Streaming mode prints the text and the speeds line.
  CliRun s = Exec("generate " + (root_ / "tiny").string() +
                  " --chat '[{\"role\":\"user\",\"content\":\"hi\"}]' --max-tokens 5");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_THAT(s.err, HasSubstr("decode"));
  EXPECT_THAT(s.err, HasSubstr("tok/s"));
}

TEST_F(CliTest, TokenizeTextAndChat) {
  std::string text = Write("t.txt", "héllo\n");
  CliRun r = Exec("tokenize " + (root_ / "tiny").string() + " --text " + text + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"], nlohmann::json::parse("[104, 195, 169, 108, 108, 111, 10]"));  // UTF-8 bytes
  CliRun c =
      Exec("tokenize " + (root_ / "tiny").string() +
           " --chat '[{\"role\":\"user\",\"content\":\"hi\"}]' --add-generation-prompt --count");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(c.out, "21\n");
}

// The CLI path (load, forward, dump) reproduces transformers' logits.
TEST_F(CliTest, DumpLogitsMatchesTransformers) {
  for (const char* family : {"llama", "qwen2", "qwen3", "mistral"}) {
    std::string dir = std::string("tests/reference/models/") + family;
    auto expected = SafetensorsReader::Open(dir + "/expected.safetensors");
    ASSERT_TRUE(expected.ok()) << expected.status();
    Tensor tokens = *(*expected)->Get("tokens");
    Tensor want = *(*expected)->Get("logits");
    std::string ids;
    for (int64_t i = 0; i < tokens.numel(); ++i)
      ids += (i ? "," : "") + std::to_string(tokens.data<int32_t>()[i]);
    std::string out = (root_ / (std::string(family) + ".logits.safetensors")).string();
    CliRun r = Exec("eval " + dir + " --token-ids " + ids + " --dump-logits " + out);
    ASSERT_EQ(r.code, 0) << r.err;
    auto got = SafetensorsReader::Open(out);
    ASSERT_TRUE(got.ok()) << got.status();
    Tensor logits = *(*got)->Get("logits");
    ASSERT_EQ(logits.shape(), want.shape());
    float max_diff = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      max_diff = std::max(max_diff, std::abs(logits.data<float>()[i] - want.data<float>()[i]));
    }
    EXPECT_LT(max_diff, 1e-4) << family;
  }
}

TEST_F(CliTest, PerplexityOnRealText) {
  // Any text works for a byte-level model; use one that ships with the test.
  std::string text =
      Write("ppl.txt", std::string(3000, 'a') + "the quick brown fox jumps over the lazy dog\n");
  CliRun r =
      Exec("eval " + (root_ / "tiny").string() + " --perplexity " + text + " --context 256 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  EXPECT_EQ(j["tokens_scored"], 3000 + 44 - 1);
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0);
}

TEST_F(CliTest, BadInputTruncatedSafetensors) {
  std::string m = CopyModel("truncated");
  fs::resize_file(m + "/model.safetensors", fs::file_size(m + "/model.safetensors") - 100);
  ExpectOneLineError(Exec("generate " + m + " --prompt hi"), "model.safetensors");
}

TEST_F(CliTest, BadInputHeaderLiesAboutSizes) {
  std::string m = CopyModel("lying");
  std::string bytes = *ReadFileToString(m + "/model.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  std::string header = bytes.substr(8, n);
  // Make the first tensor claim 4 more bytes than its shape needs.
  size_t pos = header.find("\"data_offsets\":[0,");
  ASSERT_NE(pos, std::string::npos) << header.substr(0, 200);
  size_t end = header.find(']', pos);
  size_t comma = header.find(',', pos);
  int64_t v = std::stoll(header.substr(comma + 1, end - comma - 1));
  std::string fixed = header.substr(0, comma + 1) + std::to_string(v + 4) + header.substr(end);
  fixed.resize(n, ' ');  // same header length: sizes are the only lie
  std::ofstream(m + "/model.safetensors", std::ios::binary)
      << bytes.substr(0, 8) << fixed << bytes.substr(8 + n);
  ExpectOneLineError(Exec("inspect " + m), "model.safetensors");
}

TEST_F(CliTest, BadInputUnknownArchitecture) {
  std::string m = CopyModel("arch");
  auto config = nlohmann::json::parse(*ReadFileToString(m + "/config.json"));
  config["architectures"] = {"GPT2LMHeadModel"};
  config["model_type"] = "gpt2";
  Write("arch/config.json", config.dump());
  CliRun r = Exec("generate " + m + " --prompt hi");
  ExpectOneLineError(r, "config.json");
  EXPECT_THAT(r.err, HasSubstr("GPT2LMHeadModel"));
}

TEST_F(CliTest, BadInputMissingAndMisShapedTensors) {
  auto reader = SafetensorsReader::Open((root_ / "tiny/model.safetensors").string());
  ASSERT_TRUE(reader.ok());
  std::vector<std::pair<std::string, Tensor>> all;
  for (const auto& e : (*reader)->entries()) all.push_back({e.name, *(*reader)->Get(e.name)});

  std::string missing = CopyModel("missing");
  auto fewer = all;
  std::string dropped = "model.layers.1.mlp.down_proj.weight";
  std::erase_if(fewer, [&](const auto& p) { return p.first == dropped; });
  ASSERT_EQ(fewer.size() + 1, all.size());
  ASSERT_TRUE(WriteSafetensors(missing + "/model.safetensors", fewer).ok());
  CliRun r = Exec("generate " + missing + " --prompt hi");
  ExpectOneLineError(r, dropped);

  std::string bad = CopyModel("misshaped");
  auto reshaped = all;
  for (auto& [name, t] : reshaped) {
    if (name == dropped) t = *t.Reshape({t.dim(1), t.dim(0)});
  }
  ASSERT_TRUE(WriteSafetensors(bad + "/model.safetensors", reshaped).ok());
  r = Exec("eval " + bad + " --token-ids 1,2,3 --dump-logits " +
           (root_ / "never.safetensors").string());
  ExpectOneLineError(r, dropped);
  EXPECT_FALSE(fs::exists(root_ / "never.safetensors"));
}

TEST_F(CliTest, BadInputTokenizerJson) {
  std::string m = CopyModel("badtok");
  Write("badtok/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": 5}}");
  ExpectOneLineError(Exec("generate " + m + " --prompt hi"), "tokenizer.json");
  Write("badtok/tokenizer.json", "not json at all");
  ExpectOneLineError(Exec("tokenize " + m + " --string hi"), "tokenizer.json");
}

TEST_F(CliTest, BadInputEmptyPromptAndTextFiles) {
  std::string empty = Write("empty.txt", "");
  ExpectOneLineError(Exec("generate " + (root_ / "tiny").string() + " --prompt-file " + empty),
                     "empty.txt");
  ExpectOneLineError(Exec("eval " + (root_ / "tiny").string() + " --perplexity " + empty),
                     "empty.txt");
  ExpectOneLineError(
      Exec("generate " + (root_ / "tiny").string() + " --prompt-file /nonexistent/p.txt"),
      "/nonexistent/p.txt");
}

TEST_F(CliTest, InitSizeOverrides) {
  const std::string dir = (root_ / "shaped").string();
  CliRun r = Exec("init " + dir +
                  " --size tiny --hidden 96 --heads 3 --kv-heads 1 --layers 3 --intermediate 200 "
                  "--context 256 --rope-theta 10000");
  ASSERT_EQ(r.code, 0) << r.err;
  auto text = ReadFileToString(dir + "/config.json");
  ASSERT_TRUE(text.ok());
  const nlohmann::json c = nlohmann::json::parse(*text);
  EXPECT_EQ(c["hidden_size"], 96);
  EXPECT_EQ(c["num_attention_heads"], 3);
  EXPECT_EQ(c["num_key_value_heads"], 1);
  EXPECT_EQ(c["head_dim"], 32);
  EXPECT_EQ(c["num_hidden_layers"], 3);
  EXPECT_EQ(c["intermediate_size"], 200);
  EXPECT_EQ(c["max_position_embeddings"], 256);
  EXPECT_EQ(c["rope_theta"], 10000.0);
  // The model runs.
  r = Exec("generate " + dir + " --prompt hi --max-tokens 3 --greedy");
  EXPECT_EQ(r.code, 0) << r.err;
  // An inconsistent shape is refused before anything is written.
  ExpectOneLineError(Exec("init " + (root_ / "bad-shape").string() + " --hidden 100 --heads 3"),
                     "--heads");
  EXPECT_FALSE(fs::exists(root_ / "bad-shape"));
}

TEST_F(CliTest, BadInputNoPartialOutputs) {
  std::string out = (root_ / "partial.safetensors").string();
  CliRun r =
      Exec("eval " + (root_ / "tiny").string() + " --token-ids 1,2,99999 --dump-logits " + out);
  ExpectOneLineError(r, "99999");
  EXPECT_FALSE(fs::exists(out));
  // init refuses to overwrite, and leaves no temporary folder behind.
  r = Exec("init " + (root_ / "tiny").string() + " --size tiny");
  ExpectOneLineError(r, "tiny already exists (use --force to replace it)");
  r = Exec("init " + (root_ / "fam").string() + " --family gpt2");
  ExpectOneLineError(r, "gpt2");
  EXPECT_FALSE(fs::exists(root_ / "fam"));
  for (const auto& e : fs::directory_iterator(root_))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos);
  ExpectOneLineError(Exec("inspect " + (root_ / "does-not-exist").string()), "does-not-exist");
}

}  // namespace
}  // namespace retort
