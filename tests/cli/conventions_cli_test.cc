// The conventions every `retort` command that writes an output keeps (issue
// 21, item 9), over one table of the commands on a tiny model:
//   * OUT is positional (after the inputs) and -o/--output alike;
//   * an existing OUT is refused unless --force, which replaces it (nothing
//     left beside it); a resumable job's folder is continued instead;
//   * `-o -` writes a text stream to stdout and is refused for a folder or a
//     binary file;
//   * prune reads a quantized GGUF (dequantized to f32, said in one line);
//   * logs that go to a file or a pipe hold no carriage return.
#include <filesystem>
#include <string>
#include <vector>

#include "cli_harness.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {
namespace fs = std::filesystem;
using testing::CliHarness;
using testing::CliRun;
using ::testing::HasSubstr;
using ::testing::Not;

// A recipe of two quick stages: a model and two SFT steps on it.
constexpr char kRecipe[] =
    R"pb(name: "conventions"
         stage {
           name: "init"
           init { family: "llama" size: "tiny" layers: 1 seed: 1 }
         }
         stage {
           name: "sft"
           distill { student: "@init" data: "train.jsonl" max_steps: 2 seq_len: 32 batch_rows: 2 }
         }
    )pb";

enum class Out { kFolder, kFile, kStream };
enum class Existing { kRefused, kResumed };

struct Command {
  std::string name;
  // The command line with {OUT} where OUT goes, positional and as -o.
  std::string positional, flag;
  Out out;
  Existing existing;
  std::string suffix;  // of OUT's name (".gguf", ".jsonl")
};

std::string Replace(std::string s, const std::string& out) {
  const std::string key = "{OUT}";
  for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + out.size())) {
    s.replace(at, key.size(), out);
  }
  return s;
}

bool HasCarriageReturn(const CliRun& r) {
  return r.out.find('\r') != std::string::npos || r.err.find('\r') != std::string::npos;
}

class ConventionsCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    h_ = new CliHarness("conventions_cli");
    Ok("init " + P("m") + " --size tiny --layers 1 --seed 1");
    Ok("convert " + P("m") + " " + P("m.gguf") + " --type f16");
    Ok("convert " + P("m") + " " + P("q8.gguf") + " --type q8_0");
    std::string text, train, prompts;
    for (int i = 0; i < 24; ++i) {
      text += "The quick brown fox jumps over the lazy dog, number " + std::to_string(i) + ".\n";
      train += nlohmann::json({{"messages",
                                {{{"role", "user"}, {"content", std::to_string(i) + "+1"}},
                                 {{"role", "assistant"},
                                  {"reasoning_content", "add one"},
                                  {"content", std::to_string(i + 1)}}}}})
                   .dump() +
               "\n";
    }
    for (int i = 0; i < 2; ++i) {
      prompts += nlohmann::json({{"id", "p" + std::to_string(i)}, {"prompt", "1+1"}}).dump() + "\n";
    }
    Write("text.txt", text);
    Write("train.jsonl", train);
    Write("prompts.jsonl", prompts);
    Write("recipe.textproto", kRecipe);
    Ok("run " + P("recipe.textproto") + " " + P("run") + " --threads 1");
  }
  static void TearDownTestSuite() { delete h_; }

  static std::string P(const std::string& name) { return (h_->root() / name).string(); }
  static void Write(const std::string& name, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomically(P(name), text).ok());
  }
  static void Ok(const std::string& args) {
    CliRun r = h_->Exec(args);
    ASSERT_EQ(r.code, 0) << args << "\n" << r.err;
  }
  // What the table's command lines refer to.
  static std::string Fill(std::string s) {
    for (const char* name : {"m.gguf", "q8.gguf", "m", "text.txt", "train.jsonl", "prompts.jsonl",
                             "recipe.textproto", "run"}) {
      const std::string key = std::string("{") + name + "}";
      for (size_t at = s.find(key); at != std::string::npos; at = s.find(key)) {
        s.replace(at, key.size(), P(name));
      }
    }
    return s;
  }
  // Names in the scratch folder that start with ".": what a replacement or a
  // staged write left behind.
  static std::vector<std::string> Leftovers() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(h_->root())) {
      const std::string name = e.path().filename().string();
      if (name[0] == '.') out.push_back(name);
    }
    return out;
  }

  static CliHarness* h_;
};
CliHarness* ConventionsCliTest::h_ = nullptr;

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"init", "init {OUT} --size tiny --layers 1", "init -o {OUT} --size tiny --layers 1",
       Out::kFolder, Existing::kRefused, ""},
      {"convert to gguf", "convert {m} {OUT}", "convert {m} -o {OUT}", Out::kFile,
       Existing::kRefused, ".gguf"},
      {"convert to hf", "convert {m.gguf} {OUT}", "convert {m.gguf} --output {OUT}", Out::kFolder,
       Existing::kRefused, ""},
      {"prune", "prune {m} {OUT} --sparsity 0.5 --threads 1",
       "prune {m} -o {OUT} --sparsity 0.5 --threads 1", Out::kFolder, Existing::kRefused, ""},
      {"quantize to compressed-tensors", "quantize {m} {OUT} --scheme int8-channel --threads 1",
       "quantize {m} -o {OUT} --scheme int8-channel --threads 1", Out::kFolder, Existing::kRefused,
       ""},
      {"quantize to gguf", "quantize {m} {OUT} --type q8_0 --threads 1",
       "quantize {m} --output {OUT} --type q8_0 --threads 1", Out::kFile, Existing::kRefused,
       ".gguf"},
      {"calibrate",
       "calibrate {m} {OUT} --calib {text.txt} --calib-samples 4 --calib-seq-len 16 --threads 1",
       "calibrate {m} -o {OUT} --calib {text.txt} --calib-samples 4 --calib-seq-len 16 "
       "--threads 1",
       Out::kFile, Existing::kRefused, ".gguf"},
      {"distill",
       "distill {m} {OUT} --data {text.txt} --max-steps 2 --seq-len 32 --batch-rows 2 --threads 1",
       "distill {m} -o {OUT} --data {text.txt} --max-steps 2 --seq-len 32 --batch-rows 2 "
       "--threads 1",
       Out::kFolder, Existing::kRefused, ""},
      {"generate --prompts",
       "generate {m} --prompts {prompts.jsonl} {OUT} --max-tokens 4 --keep all --threads 1",
       "generate {m} --prompts {prompts.jsonl} -o {OUT} --max-tokens 4 --keep all --threads 1",
       Out::kFolder, Existing::kResumed, ""},
      {"traces import", "traces import {train.jsonl} {OUT}", "traces import {train.jsonl} -o {OUT}",
       Out::kStream, Existing::kRefused, ".jsonl"},
      {"traces export", "traces export {train.jsonl} {OUT} --format openai",
       "traces export {train.jsonl} -o {OUT} --format openai", Out::kStream, Existing::kRefused,
       ".jsonl"},
      {"run", "run {recipe.textproto} {OUT} --threads 1", "run {recipe.textproto} -o {OUT}",
       Out::kFolder, Existing::kResumed, ""},
      {"report", "report {run} {OUT}", "report {run} -o {OUT}", Out::kStream, Existing::kRefused,
       ".html"},
      // eval's OUT is its --dump-logits option.
      {"eval --dump-logits", "eval {m} --token-ids 1,2,3 --dump-logits {OUT}",
       "eval {m} --token-ids 1,2,3 --dump-logits {OUT}", Out::kFile, Existing::kRefused,
       ".safetensors"},
  };
  return *commands;
}

TEST_F(ConventionsCliTest, EveryCommandKeepsTheOutputConventions) {
  int n = 0;
  for (const Command& c : Commands()) {
    SCOPED_TRACE(c.name);
    const std::string tag = "c" + std::to_string(n++);
    const std::string a = P(tag + "a" + c.suffix), b = P(tag + "b" + c.suffix);
    const std::string positional = Fill(c.positional), flag = Fill(c.flag);

    // OUT positional, and -o.
    CliRun r = h_->Exec(Replace(positional, a));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(fs::exists(a));
    r = h_->Exec(Replace(flag, b));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(fs::exists(b));

    // An existing OUT: refused (and left as it was), replaced with --force;
    // or continued.
    r = h_->Exec(Replace(positional, a));
    if (c.existing == Existing::kResumed) {
      EXPECT_EQ(r.code, 0) << r.err;
      EXPECT_THAT(r.err, Not(HasSubstr("already exists")));
    } else {
      // What is in the way is the user's own.
      fs::remove_all(a);
      const bool folder = c.out == Out::kFolder;
      if (folder) {
        fs::create_directories(a);
        Write(fs::path(a).filename().string() + "/mine.txt", "mine");
      } else {
        Write(fs::path(a).filename().string(), "mine");
      }
      const std::string mine = folder ? a + "/mine.txt" : a;
      r = h_->Exec(Replace(positional, a));
      EXPECT_EQ(r.code, 1);
      EXPECT_THAT(r.err, HasSubstr(a + " already exists (use --force to replace it"));
      EXPECT_EQ(ReadFileToString(mine).value_or(""), "mine");
      r = h_->Exec(Replace(positional, a) + " --force");
      EXPECT_EQ(r.code, 0) << r.err;
      EXPECT_TRUE(fs::exists(a));
      EXPECT_NE(ReadFileToString(mine).value_or(""), "mine");
    }

    // -o -: a text stream on stdout, or refused.
    r = h_->Exec(Replace(flag, "-"));
    if (c.out == Out::kStream) {
      EXPECT_EQ(r.code, 0) << r.err;
      EXPECT_TRUE(r.out.rfind("{", 0) == 0 || r.out.rfind("<!DOCTYPE html>", 0) == 0) << r.out;
      EXPECT_FALSE(fs::exists(P("-")));
    } else {
      EXPECT_EQ(r.code, 2);
      EXPECT_THAT(r.err, HasSubstr("stdout (-) takes only a text stream"));
      EXPECT_EQ(r.out, "");
    }
    EXPECT_FALSE(HasCarriageReturn(r));
  }
  EXPECT_THAT(Leftovers(), ::testing::IsEmpty());
}

TEST_F(ConventionsCliTest, PruneReadsAQuantizedGguf) {
  const std::string out = P("pruned-gguf");
  CliRun r = h_->Exec("prune " + P("q8.gguf") + " " + out + " --sparsity 0.5 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr(P("q8.gguf") + ": Q8_0 weights dequantized to f32 for pruning"));
  EXPECT_THAT(r.out, HasSubstr("50.00% of linear weights zero"));
  // The pruned model runs.
  r = h_->Exec("eval " + out + " --token-ids 1,2,3 --dump-logits " + P("pruned.safetensors"));
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST_F(ConventionsCliTest, LogsInAFileOrAPipeHaveNoCarriageReturn) {
  // stderr to a file (the harness's redirection).
  CliRun r = h_->Exec("distill " + P("m") + " " + P("log-distill") + " --data " + P("text.txt") +
                      " --max-steps 3 --seq-len 32 --batch-rows 2 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("step 1/3"));
  EXPECT_FALSE(HasCarriageReturn(r));
  // Through a pipe, stdout and stderr together; and the stage logs.
  r = h_->Exec("run " + P("recipe.textproto") + " " + P("log-run") + " --threads 1 2>&1 | cat");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("2 stage(s) run"));
  EXPECT_FALSE(HasCarriageReturn(r));
  for (const char* stage : {"init", "sft"}) {
    const std::string log = ReadFileToString(P("log-run") + "/" + stage + "/log.txt").value_or("");
    EXPECT_THAT(log, Not(HasSubstr("\r")));
    EXPECT_THAT(log, HasSubstr("[run] retort"));
  }
}

}  // namespace
}  // namespace retort
