// End-to-end tests of `retort generate --prompts` (trace jobs), run as a user
// runs them:
//   * a job killed with SIGKILL several times mid-run and rerun ends with the
//     same files (sample set, texts, tokens, log-probs) as an uninterrupted
//     run, rejected samples included (tiny random model, fast);
//   * --endpoint against a real `retort serve` process gives the same traces,
//     token ids and log-probs as the local engine (greedy, real SmolLM2);
//   * the real SmolLM2 over data/arith_word_problems.jsonl with top-8
//     log-probs: files, summary, shard == JSONL, `traces stats`;
//   * one-line errors for bad input; traces import/export round trips.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "core/file.h"
#include "formats/traces.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"
#include "tests/cli/serve_process.h"

namespace retort {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliHarness;
using testing::CliRun;
using testing::ServeProcess;

std::string SourceDir() {
  const char* s = std::getenv("RETORT_SOURCE_DIR");
  return s ? s : ".";
}
std::string SmolLM2() { return SourceDir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }
std::string ArithPrompts() { return SourceDir() + "/data/arith_word_problems.jsonl"; }

int CountLines(const std::string& path) {
  std::string s = ReadFileToString(path).value_or("");
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

using Key = std::pair<std::string, int64_t>;

std::map<Key, TraceSample> LoadTraces(const std::string& dir) {
  std::map<Key, TraceSample> out;
  auto samples = ReadTraceJsonl(dir + "/traces.jsonl");
  EXPECT_TRUE(samples.ok()) << samples.status();
  if (!samples.ok()) return out;
  for (TraceSample& s : *samples) {
    Key k{s.id, s.sample};
    EXPECT_FALSE(out.count(k)) << "duplicate sample " << s.id << " " << s.sample;
    out.emplace(k, std::move(s));
  }
  return out;
}

std::vector<TraceTokens> LoadShard(const std::string& path) {
  std::vector<TraceTokens> out;
  auto r = TraceShardReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return out;
  TraceTokens t;
  while (true) {
    auto more = r->Next(&t);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    out.push_back(t);
  }
  return out;
}

// The JSONL and the shard of a folder agree: same samples in the same order,
// completion_tokens == the shard's completion ids.
void ExpectShardMatchesJsonl(const std::string& dir) {
  auto samples = ReadTraceJsonl(dir + "/traces.jsonl");
  ASSERT_TRUE(samples.ok()) << samples.status();
  std::vector<TraceTokens> shard = LoadShard(dir + "/tokens.shard");
  ASSERT_EQ(shard.size(), samples->size());
  for (size_t i = 0; i < shard.size(); ++i) {
    EXPECT_EQ(shard[i].id, (*samples)[i].id);
    EXPECT_EQ(shard[i].sample, (*samples)[i].sample);
    EXPECT_EQ(static_cast<int64_t>(shard[i].completion_ids.size()),
              (*samples)[i].completion_tokens);
    EXPECT_EQ(static_cast<int64_t>(shard[i].prompt_ids.size()), (*samples)[i].prompt_tokens);
  }
}

class GenerateTracesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new CliHarness("generate_traces_test");
    tiny_ = (harness_->root() / "tiny").string();
    CliRun r = harness_->Exec("init " + tiny_ + " --family llama --size tiny --dtype f32 --seed 3");
    ASSERT_EQ(r.code, 0) << r.err;
    // 16 prompts; the reference answers only matter to the regex verifier.
    std::string text;
    for (int i = 0; i < 16; ++i) {
      text += json{{"id", "q" + std::to_string(i)},
                   {"prompt", "Say something about the number " + std::to_string(i)},
                   {"answer", std::to_string(i)}}
                  .dump() +
              "\n";
    }
    prompts_ = (harness_->root() / "prompts.jsonl").string();
    ASSERT_TRUE(WriteFileAtomically(prompts_, text).ok());
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  static CliHarness* harness_;
  static std::string tiny_, prompts_;
};
CliHarness* GenerateTracesTest::harness_ = nullptr;
std::string GenerateTracesTest::tiny_, GenerateTracesTest::prompts_;

// Arguments of the kill test's job: a verifier that rejects some samples
// (answers containing a vowel are "correct"), so rejected samples must be
// remembered too; --max-batch 1 keeps every forward pass on the same path,
// so an interrupted run must be bit-identical.
std::string KillJobArgs(const std::string& model, const std::string& prompts,
                        const std::string& out) {
  return model + " --prompts " + prompts + " --output " + out +
         " --samples 4 --max-tokens 64 --top-logprobs 4 --seed 11 --max-batch 1 --threads 1"
         " --verifier 'regex:[aeiou]' --keep correct";
}

TEST_F(GenerateTracesTest, KillNineAndResumeEqualsUninterrupted) {
  const std::string ref = (harness_->root() / "ref").string();
  CliRun r = harness_->Exec("generate " + KillJobArgs(tiny_, prompts_, ref));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(CountLines(ref + "/done.jsonl"), 64);
  const int kept = CountLines(ref + "/traces.jsonl");
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 64) << "the verifier should reject some samples";

  // The same job, SIGKILLed at different points, then rerun to the end.
  const std::string out = (harness_->root() / "killed").string();
  std::string cmd = harness_->binary() + " generate " + KillJobArgs(tiny_, prompts_, out);
  int kills = 0;
  for (int round = 0; round < 4; ++round) {
    const int start = CountLines(out + "/done.jsonl");
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Kill once a few more samples are done (a different amount each round,
    // and with no pause, so the kill lands anywhere in the commit sequence).
    const int target = start + 3 + 4 * round;
    bool exited = false;
    int status = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (CountLines(out + "/done.jsonl") >= target) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (!exited) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ++kills;
      // Truly mid-run: the killed process had not finished the job.
      EXPECT_LT(CountLines(out + "/done.jsonl"), 64);
    } else {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      break;
    }
  }
  EXPECT_GE(kills, 2) << "the job finished before it could be killed twice";
  r = harness_->Exec("generate " + KillJobArgs(tiny_, prompts_, out));
  ASSERT_EQ(r.code, 0) << r.err;
  if (kills > 0) {
    EXPECT_NE(r.err.find("resuming:"), std::string::npos) << r.err;
  }

  // Nothing lost, nothing doubled: the done log has each sample once.
  EXPECT_EQ(CountLines(out + "/done.jsonl"), 64);
  std::set<Key> done_keys;
  for (const std::string& dir : {out}) {
    std::ifstream in(dir + "/done.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line);
      EXPECT_TRUE(done_keys.insert({j["id"], j["sample"].get<int64_t>()}).second) << line;
    }
  }
  EXPECT_EQ(done_keys.size(), 64u);
  // Rejected samples are kept apart, with the reason, once each: kept and
  // rejected together are exactly the done samples.
  for (const std::string& dir : {ref, out}) {
    std::set<Key> seen;
    for (const char* file : {"/traces.jsonl", "/rejected.jsonl"}) {
      std::ifstream in(dir + file);
      std::string line;
      while (std::getline(in, line)) {
        json j = json::parse(line);
        EXPECT_TRUE(seen.insert({j["id"], j["sample"].get<int64_t>()}).second) << line;
        if (std::string(file) == "/rejected.jsonl") {
          EXPECT_EQ(j["reject_reason"], "wrong_answer") << line;
          EXPECT_EQ(j["correct"], false) << line;
        } else {
          EXPECT_FALSE(j.contains("reject_reason")) << line;
        }
      }
    }
    EXPECT_EQ(seen, done_keys) << dir;
    EXPECT_EQ(CountLines(dir + "/rejected.jsonl"), 64 - kept) << dir;
  }

  // Same kept samples with the same texts and verdicts.
  auto a = LoadTraces(ref), b = LoadTraces(out);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, s] : a) {
    ASSERT_TRUE(b.count(k)) << k.first << " " << k.second;
    const TraceSample& t = b.at(k);
    EXPECT_EQ(t.Completion()->content, s.Completion()->content);
    EXPECT_EQ(t.Completion()->reasoning_content, s.Completion()->reasoning_content);
    EXPECT_EQ(t.correct, s.correct);
    EXPECT_EQ(t.finish_reason, s.finish_reason);
    EXPECT_EQ(t.completion_tokens, s.completion_tokens);
    EXPECT_EQ(t.extra["seed"], s.extra["seed"]);
  }
  // Same token records, bit for bit.
  ExpectShardMatchesJsonl(ref);
  ExpectShardMatchesJsonl(out);
  std::map<Key, TraceTokens> ra, rb;
  for (TraceTokens& t : LoadShard(ref + "/tokens.shard")) ra[{t.id, t.sample}] = t;
  for (TraceTokens& t : LoadShard(out + "/tokens.shard")) rb[{t.id, t.sample}] = t;
  ASSERT_EQ(ra.size(), rb.size());
  for (const auto& [k, t] : ra) {
    ASSERT_TRUE(rb.count(k));
    const TraceTokens& u = rb.at(k);
    EXPECT_EQ(u.prompt_ids, t.prompt_ids);
    EXPECT_EQ(u.completion_ids, t.completion_ids);
    EXPECT_EQ(u.top_k, 4);
    EXPECT_EQ(u.topk_ids, t.topk_ids);
    EXPECT_EQ(u.topk_logprobs, t.topk_logprobs);
    EXPECT_EQ(u.sampled_logprobs, t.sampled_logprobs);
  }

  // A rerun of the finished job generates nothing and changes nothing.
  std::string before = ReadFileToString(out + "/traces.jsonl").value();
  r = harness_->Exec("generate " + KillJobArgs(tiny_, prompts_, out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(ReadFileToString(out + "/traces.jsonl").value(), before);
  // Other parameters in the same folder are refused.
  r = harness_->Exec("generate " + KillJobArgs(tiny_, prompts_, out) + " --temperature 0.9");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("temperature was 0.6"), std::string::npos) << r.err;
}

TEST_F(GenerateTracesTest, BadInputGivesOneLineErrors) {
  auto write = [&](const std::string& name, const std::string& text) {
    std::string p = (harness_->root() / name).string();
    EXPECT_TRUE(WriteFileAtomically(p, text).ok());
    return p;
  };
  const std::string out = (harness_->root() / "bad_out").string();
  struct Case {
    std::string args, expect;
  } cases[] = {
      {tiny_ + " --prompts " + write("b1.jsonl", "{\"id\":\"a\",\"prompt\":\"x\"}\nnot json\n") +
           " --output " + out,
       "b1.jsonl:2: bad JSON"},
      {tiny_ + " --prompts " +
           write("b2.jsonl", "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}\n") +
           " --output " + out,
       "b2.jsonl:2: duplicate id \"a\""},
      {tiny_ + " --prompts " + write("b3.jsonl", "{\"id\":\"a\"}\n") + " --output " + out,
       "b3.jsonl:1: expected exactly one of"},
      {tiny_ + " --prompts " + prompts_ + " --output " + out + " --verifier nope", "nope"},
      {"--endpoint http://127.0.0.1:1/v1 --retries 1 --timeout 2 --prompts " + prompts_ +
           " --output " + out,
       "127.0.0.1:1"},
      {tiny_ + " --prompts " + prompts_ + " --output " + out + " --keep maybe",
       "--keep must be correct or all"},
  };
  for (const Case& c : cases) {
    CliRun r = harness_->Exec("generate " + c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_FALSE(fs::exists(out + "/traces.jsonl"));

  // A prompt longer than the context is skipped and counted, not fatal.
  std::string long_prompt(5000, 'x');
  const std::string lp =
      write("long.jsonl", json{{"id", "long"}, {"prompt", long_prompt}}.dump() + "\n" +
                              json{{"id", "ok"}, {"prompt", "hi"}}.dump() + "\n");
  const std::string lout = (harness_->root() / "long_out").string();
  CliRun r = harness_->Exec("generate " + tiny_ + " --prompts " + lp + " --output " + lout +
                            " --max-tokens 4");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("skipped: prompt \"long\""), std::string::npos) << r.err;
  json summary = json::parse(ReadFileToString(lout + "/summary.json").value());
  EXPECT_EQ(summary["prompts_skipped"], 1);
  EXPECT_EQ(summary["samples"], 1);
}

// The bundled reasoning teacher's traces carry the reasoning inline in the
// assistant content (the form every chat template renders, and so what TRL's
// SFTTrainer trains on), never in a separate "reasoning_content" key.
TEST_F(GenerateTracesTest, TracesCarryTheReasoningInline) {
  const std::string teacher = std::string(RETORT_SOURCE_DIR_PATH) + "/models/arith-teacher";
  const std::string prompts = (harness_->root() / "arith_prompts.jsonl").string();
  ASSERT_TRUE(
      WriteFileAtomically(
          prompts,
          json{{"id", "a"}, {"prompt", "What is 97657 + 24052?"}, {"answer", "121709"}}.dump() +
              "\n")
          .ok());
  const std::string out = (harness_->root() / "arith_traces").string();
  CliRun r = harness_->Exec("generate " + teacher + " --prompts " + prompts + " --output " + out +
                            " --temperature 0 --max-tokens 400 --keep all");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string line = ReadFileToString(out + "/traces.jsonl").value();
  const json j = json::parse(line);
  const json& assistant = j["messages"].back();
  EXPECT_EQ(assistant["role"], "assistant");
  EXPECT_FALSE(assistant.contains("reasoning_content")) << line;
  const std::string content = assistant["content"].get<std::string>();
  EXPECT_EQ(content.rfind("<think>\n", 0), 0u) << content;
  EXPECT_NE(content.find("\n</think>\n\n"), std::string::npos) << content;
  EXPECT_NE(content.find("121709"), std::string::npos) << content;
  EXPECT_EQ(j["correct"], true) << line;
}

TEST_F(GenerateTracesTest, ImportExportStats) {
  const std::string out = (harness_->root() / "ies").string();
  CliRun r = harness_->Exec("generate " + tiny_ + " --prompts " + prompts_ + " --output " + out +
                            " --samples 2 --max-tokens 8 --top-logprobs 64 --verifier exact");
  ASSERT_EQ(r.code, 0) << r.err;
  // With a verifier the default keeps the correct ones only; random text is
  // never exactly "3", so everything was rejected but remembered.
  EXPECT_EQ(CountLines(out + "/done.jsonl"), 32);
  EXPECT_EQ(CountLines(out + "/traces.jsonl"), 0);
  EXPECT_EQ(CountLines(out + "/rejected.jsonl"), 32);
  // ... and the run says so instead of leaving an empty file behind.
  EXPECT_NE(r.out.find("warning: 0 of 32 samples kept (--keep correct, 32 wrong_answer)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("rejected: 32 wrong_answer (kept in rejected.jsonl)"), std::string::npos)
      << r.out;
  {
    json summary = json::parse(ReadFileToString(out + "/summary.json").value());
    EXPECT_EQ(summary["rejected_reasons"]["wrong_answer"], 32);
    ASSERT_EQ(summary["warnings"].size(), 1u);
  }

  const std::string all = (harness_->root() / "ies_all").string();
  r = harness_->Exec("generate " + tiny_ + " --prompts " + prompts_ + " --output " + all +
                     " --samples 2 --max-tokens 8 --top-logprobs 64 --keep all");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("pass@"), std::string::npos) << r.out;
  r = harness_->Exec("traces stats " + all);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("samples 32, prompts 16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bytes per generated token"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("top-k 64"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("accuracy"), std::string::npos) << r.out;
  r = harness_->Exec("traces stats --json " + all + "/tokens.shard");
  ASSERT_EQ(r.code, 0) << r.err;
  json st = json::parse(r.out);
  EXPECT_EQ(st["records"], 32);
  EXPECT_GT(st["bytes_per_generated_token"].get<double>(), 0);

  // export -> import round trips the texts in every dialect.
  auto original_or = ReadTraceJsonl(all + "/traces.jsonl");
  ASSERT_TRUE(original_or.ok()) << original_or.status();
  const std::vector<TraceSample>& original = *original_or;
  for (const std::string format : {"openai", "sharegpt", "r1"}) {
    const std::string ex = (harness_->root() / ("ex_" + format + ".jsonl")).string();
    const std::string im = (harness_->root() / ("im_" + format + ".jsonl")).string();
    r = harness_->Exec("traces export " + all + "/traces.jsonl --format " + format + " --output " +
                       ex);
    ASSERT_EQ(r.code, 0) << r.err;
    r = harness_->Exec("traces import " + ex + " --output " + im);
    ASSERT_EQ(r.code, 0) << r.err;
    auto back = ReadTraceJsonl(im);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_EQ(back->size(), original.size()) << format;
    auto it = original.begin();
    for (const TraceSample& s : *back) {
      EXPECT_EQ(s.PromptText(), it->PromptText()) << format;
      EXPECT_EQ(s.Completion()->content, it->Completion()->content) << format;
      EXPECT_EQ(s.Completion()->reasoning_content, it->Completion()->reasoning_content);
      ++it;
    }
  }
  r = harness_->Exec("traces export " + all + "/traces.jsonl --format xml --output x");
  EXPECT_EQ(r.code, 2);
  r = harness_->Exec("traces frobnicate");
  EXPECT_EQ(r.code, 2);
}

// ---- the real model -------------------------------------------------------

class SmolLM2TracesTest : public GenerateTracesTest {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(SmolLM2()))
        << SmolLM2() << " is missing: run scripts/fetch-models before the tests";
  }
};

TEST_F(SmolLM2TracesTest, ArithmeticProblemsWithLogprobs) {
  const std::string out = (harness_->root() / "smol").string();
  auto t0 = std::chrono::steady_clock::now();
  CliRun r =
      harness_->Exec("generate " + SmolLM2() + " --prompts " + ArithPrompts() + " --output " + out +
                     " --samples 2 --max-tokens 64 --top-logprobs 8 --max-batch 16");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.code, 0) << r.err;
  std::cerr << r.out << "(" << secs << " s)\n";
  json job = json::parse(ReadFileToString(out + "/job.json").value());
  EXPECT_EQ(job["verifier"], "math");  // answers present -> math, keep correct
  EXPECT_EQ(job["keep"], "correct");
  json summary = json::parse(ReadFileToString(out + "/summary.json").value());
  EXPECT_EQ(summary["prompts"], 30);
  EXPECT_EQ(summary["samples"], 60);
  EXPECT_EQ(CountLines(out + "/done.jsonl"), 60);
  const int64_t kept = summary["kept"];
  EXPECT_EQ(kept + summary["rejected"].get<int64_t>(), 60);
  EXPECT_EQ(CountLines(out + "/traces.jsonl"), kept);
  EXPECT_EQ(summary["verification"]["samples"], 60);
  EXPECT_TRUE(summary["verification"]["pass@k"].contains("2"));
  EXPECT_NE(r.out.find("pass@2"), std::string::npos) << r.out;
  ExpectShardMatchesJsonl(out);
  for (const TraceTokens& t : LoadShard(out + "/tokens.shard")) {
    EXPECT_EQ(t.top_k, 8);
    EXPECT_EQ(t.topk_ids.size(), t.completion_ids.size() * 8);
    EXPECT_EQ(t.sampled_logprobs.size(), t.completion_ids.size());
  }
  for (const auto& [k, s] : LoadTraces(out)) {
    EXPECT_EQ(s.correct, true);
    EXPECT_EQ(s.verifier, "math");
    EXPECT_EQ(s.messages.size(), 2u);
  }
  r = harness_->Exec("traces stats " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  std::cerr << r.out;
  EXPECT_NE(r.out.find("bytes per generated token"), std::string::npos);
  EXPECT_NE(r.out.find("top-k 8"), std::string::npos);
}

TEST_F(SmolLM2TracesTest, EndpointAgainstServeEqualsLocal) {
  // Greedy; both sides run one sequence at a time (same kernels), so the
  // results must agree token for token.
  std::string prompts;
  {
    std::ifstream in(ArithPrompts());
    std::string line;
    for (int i = 0; i < 6 && std::getline(in, line); ++i) prompts += line + "\n";
  }
  const std::string pfile = (harness_->root() / "six.jsonl").string();
  ASSERT_TRUE(WriteFileAtomically(pfile, prompts).ok());
  const std::string common =
      " --prompts " + pfile + " --greedy --max-tokens 40 --top-logprobs 5 --keep all --threads 2";
  const std::string local = (harness_->root() / "local").string();
  CliRun r = harness_->Exec("generate " + SmolLM2() + common + " --max-batch 1 --output " + local);
  ASSERT_EQ(r.code, 0) << r.err;

  ServeProcess server;
  std::string error;
  ASSERT_TRUE(server.Start({SmolLM2(), "--max-batch", "1", "--threads", "2"},
                           (harness_->root() / "serve.err").string(), &error))
      << error;
  const std::string remote = (harness_->root() / "remote").string();
  const std::string url = "http://" + server.host() + ":" + std::to_string(server.port()) + "/v1";
  r = harness_->Exec("generate " + SmolLM2() + " --endpoint " + url + common +
                     " --concurrency 3 --output " + remote);
  ASSERT_EQ(r.code, 0) << r.err << "\nserver: " << server.Stderr();

  auto a = LoadTraces(local), b = LoadTraces(remote);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (const auto& [k, s] : a) {
    const TraceSample& t = b.at(k);
    EXPECT_EQ(t.Completion()->content, s.Completion()->content) << k.first;
    EXPECT_EQ(t.Completion()->reasoning_content, s.Completion()->reasoning_content);
    EXPECT_EQ(t.extra["extracted_answer"], s.extra["extracted_answer"]);
    EXPECT_EQ(t.correct, s.correct);
    EXPECT_EQ(t.finish_reason, s.finish_reason);
    EXPECT_EQ(t.prompt_tokens, s.prompt_tokens);
  }
  std::map<Key, TraceTokens> ra, rb;
  for (TraceTokens& t : LoadShard(local + "/tokens.shard")) ra[{t.id, t.sample}] = t;
  for (TraceTokens& t : LoadShard(remote + "/tokens.shard")) rb[{t.id, t.sample}] = t;
  ASSERT_EQ(ra.size(), 6u);
  ASSERT_EQ(rb.size(), 6u);
  for (const auto& [k, t] : ra) {
    const TraceTokens& u = rb.at(k);
    EXPECT_EQ(u.prompt_ids, t.prompt_ids) << k.first;
    // Our engine keeps the stop token (a student learns to stop); an OpenAI
    // server never returns it.
    std::vector<int32_t> ids = t.completion_ids;
    size_t n = ids.size();
    if (a.at(k).finish_reason == "stop") --n;
    ids.resize(n);
    EXPECT_EQ(u.completion_ids, ids) << k.first;
    ASSERT_EQ(u.top_k, 5);
    ASSERT_EQ(u.sampled_logprobs.size(), n);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_NEAR(u.sampled_logprobs[i], t.sampled_logprobs[i], 1e-4);
      for (int j = 0; j < 5; ++j) {
        EXPECT_EQ(u.topk_ids[i * 5 + j], t.topk_ids[i * 5 + j]);
        EXPECT_NEAR(u.topk_logprobs[i * 5 + j], t.topk_logprobs[i * 5 + j], 1e-4);
      }
    }
  }
}

}  // namespace
}  // namespace retort
