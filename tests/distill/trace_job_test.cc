// distill/trace_job: prompts file errors, seeds, the output folder's commit
// protocol and its recovery from every torn state a kill can leave, and
// RunTraceJob (verification, --keep correct, resume, summary) with a scripted
// teacher.
#include "distill/trace_job.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/file.h"
#include "core/status.h"
#include "gtest/gtest.h"

namespace retort {
namespace {

namespace fs = std::filesystem;

class TraceJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("trace_job_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string p = (root_ / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  fs::path root_;
};

TEST_F(TraceJobTest, ReadsPromptsAndNamesBadLines) {
  std::string ok = Write("ok.jsonl",
                         "{\"id\": \"a\", \"prompt\": \"1+1?\", \"answer\": 2}\n\n"
                         "{\"id\": 7, \"messages\": [{\"role\": \"system\", \"content\": \"s\"}, "
                         "{\"role\": \"user\", \"content\": \"u\"}]}\r\n");
  auto p = ReadTracePrompts(ok);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].id, "a");
  EXPECT_EQ((*p)[0].answer.value(), "2");
  EXPECT_EQ((*p)[0].messages[0]["content"], "1+1?");
  EXPECT_EQ((*p)[1].id, "7");
  EXPECT_EQ((*p)[1].line, 3);
  EXPECT_FALSE((*p)[1].answer.has_value());
  EXPECT_EQ((*p)[1].messages.size(), 2u);

  struct Case {
    std::string text, expect;
  } cases[] = {
      {"{\"id\": \"a\", \"prompt\": \"x\"}\n{bad json\n", ":2: bad JSON"},
      {"{\"prompt\": \"x\"}\n", ":1: id: missing"},
      {"{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"a\", \"prompt\": \"y\"}\n",
       ":2: duplicate id \"a\" (first on line 1)"},
      {"{\"id\": \"a\"}\n", "exactly one of"},
      {"{\"id\": \"a\", \"prompt\": \"x\", \"messages\": []}\n", "exactly one of"},
      {"{\"id\": \"a\", \"messages\": [{\"role\": \"user\"}]}\n", "messages[0]"},
      {"{\"id\": \"a\", \"prompt\": 5}\n", "prompt: expected a string"},
      {"{\"id\": \"a\", \"prompt\": \"x\", \"answer\": [1]}\n", "answer: expected"},
      {"\n\n", "no prompts"},
  };
  for (const Case& c : cases) {
    auto r = ReadTracePrompts(Write("bad.jsonl", c.text));
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos)
        << r.status() << " for " << c.text;
    EXPECT_NE(std::string(r.status().message()).find("bad.jsonl"), std::string::npos);
  }
  EXPECT_FALSE(ReadTracePrompts((root_ / "missing.jsonl").string()).ok());
}

TEST_F(TraceJobTest, SeedsDependOnSeedIdAndSampleOnly) {
  EXPECT_EQ(TraceSampleSeed(1, "a", 0), TraceSampleSeed(1, "a", 0));
  EXPECT_NE(TraceSampleSeed(1, "a", 0), TraceSampleSeed(1, "a", 1));
  EXPECT_NE(TraceSampleSeed(1, "a", 0), TraceSampleSeed(2, "a", 0));
  EXPECT_NE(TraceSampleSeed(1, "a", 0), TraceSampleSeed(1, "b", 0));
  // Pinned (computed by the documented formula in Python): changing the hash
  // would silently change the samples of every resumed job.
  EXPECT_EQ(TraceSampleSeed(0, "", 0), 0x10fd34d2c79eb17aull);
  EXPECT_EQ(TraceSampleSeed(42, "arith-00", 1), 0x022f641dc6894a9aull);
}

TraceOutputDir::Pending MakePending(const std::string& id, int64_t sample, bool kept) {
  TraceOutputDir::Pending p;
  p.entry.id = id;
  p.entry.sample = sample;
  p.entry.kept = kept;
  p.entry.correct = kept;
  p.entry.finish_reason = "stop";
  p.entry.completion_tokens = 3;
  TraceSample t;
  t.id = id;
  t.sample = sample;
  t.messages = {{"user", "q", "", {}}, {"assistant", "a" + id, "r", {}}};
  p.jsonl_line = TraceSampleToJsonLine(t);
  p.tokens.id = id;
  p.tokens.sample = static_cast<int32_t>(sample);
  p.tokens.prompt_ids = {1, 2};
  p.tokens.completion_ids = {3, 4, 5};
  p.tokens.top_k = 2;
  p.tokens.topk_ids = {3, 9, 4, 8, 5, 7};
  p.tokens.topk_logprobs = {-0.5f, -1.5f, -0.25f, -2.f, -0.125f, -3.f};
  p.tokens.sampled_logprobs = {-0.5f, -0.25f, -0.125f};
  return p;
}

std::vector<std::pair<std::string, int>> ShardKeys(const std::string& path) {
  std::vector<std::pair<std::string, int>> keys;
  auto r = TraceShardReader::Open(path);
  if (!r.ok()) return keys;
  TraceTokens t;
  while (true) {
    auto more = r->Next(&t);
    if (!more.ok() || !*more) break;
    keys.emplace_back(t.id, t.sample);
  }
  return keys;
}

int CountLines(const std::string& path) {
  std::string s = ReadFileToString(path).value_or("");
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

TEST_F(TraceJobTest, CommitsAndRecoversEveryTornState) {
  const std::string dir = (root_ / "out").string();
  nlohmann::ordered_json job = {{"samples", 2}};
  {
    auto out = TraceOutputDir::Open(dir, job, /*write_shard=*/true);
    ASSERT_TRUE(out.ok()) << out.status();
    std::vector<TraceOutputDir::Pending> g1;
    g1.push_back(MakePending("a", 0, true));
    g1.push_back(MakePending("a", 1, false));
    ASSERT_TRUE((*out)->Commit(std::move(g1)).ok());
    std::vector<TraceOutputDir::Pending> g2;
    g2.push_back(MakePending("b", 0, true));
    g2.push_back(MakePending("b", 1, true));
    ASSERT_TRUE((*out)->Commit(std::move(g2)).ok());
    EXPECT_TRUE((*out)->IsDone("a", 1));
    EXPECT_FALSE((*out)->IsDone("c", 0));
    // Committing a done sample again is a bug, refused.
    std::vector<TraceOutputDir::Pending> again;
    again.push_back(MakePending("a", 0, true));
    EXPECT_FALSE((*out)->Commit(std::move(again)).ok());
  }
  const std::string done = dir + "/done.jsonl", jsonl = dir + "/traces.jsonl",
                    shard = dir + "/tokens.shard";
  EXPECT_EQ(CountLines(done), 4);
  EXPECT_EQ(CountLines(jsonl), 3);
  EXPECT_EQ(ShardKeys(shard).size(), 3u);

  // Another job's parameters are refused.
  auto other = TraceOutputDir::Open(dir, {{"samples", 3}}, true);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(std::string(other.status().message()).find("samples was 2, now 3"), std::string::npos)
      << other.status();

  // Torn states: a kill after the shard frame and the JSONL line but before
  // done.jsonl ("c" 0), plus half a done line; reopening drops them.
  {
    auto w = TraceShardWriter::Open(shard, true);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Append(MakePending("c", 0, true).tokens).ok());
    ASSERT_TRUE(w->Commit().ok());
    std::ofstream(jsonl, std::ios::app)
        << MakePending("c", 0, true).jsonl_line << "\n{\"id\": \"c\", \"sam";
    std::ofstream(done, std::ios::app) << "{\"id\": \"c\", \"sample\": 0, \"ke";
  }
  {
    auto out = TraceOutputDir::Open(dir, job, true);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ((*out)->recovery().done, 4);
    EXPECT_EQ((*out)->recovery().kept, 3);
    EXPECT_GT((*out)->recovery().done_log_cut_bytes, 0);
    EXPECT_GT((*out)->recovery().jsonl_cut_bytes, 0);
    EXPECT_EQ((*out)->recovery().shard_dropped_records, 1);
    EXPECT_FALSE((*out)->IsDone("c", 0));
  }
  EXPECT_EQ(CountLines(done), 4);
  EXPECT_EQ(CountLines(jsonl), 3);
  auto keys = ShardKeys(shard);
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[2], std::make_pair(std::string("b"), 1));

  // A kill in the middle of group 2's done lines: "b" 1 shares its shard frame
  // with the committed "b" 0, so the shard is rewritten to the first 2 records.
  {
    std::string d = ReadFileToString(done).value();
    size_t last = d.rfind('\n', d.size() - 2);
    fs::resize_file(done, last + 1 + 5);  // half of the last line left
  }
  {
    auto out = TraceOutputDir::Open(dir, job, true);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ((*out)->recovery().done, 3);
    EXPECT_EQ((*out)->recovery().kept, 2);
    EXPECT_FALSE((*out)->IsDone("b", 1));
    EXPECT_TRUE((*out)->IsDone("b", 0));
    // Resume: generate "b" 1 again.
    std::vector<TraceOutputDir::Pending> g;
    g.push_back(MakePending("b", 1, true));
    ASSERT_TRUE((*out)->Commit(std::move(g)).ok());
  }
  keys = ShardKeys(shard);
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[1], std::make_pair(std::string("b"), 0));
  EXPECT_EQ(keys[2], std::make_pair(std::string("b"), 1));
  EXPECT_EQ(CountLines(jsonl), 3);
  auto samples = ReadTraceJsonl(jsonl);
  ASSERT_TRUE(samples.ok()) << samples.status();
  EXPECT_EQ((*samples)[2].id, "b");
  EXPECT_EQ((*samples)[2].sample, 1);
  auto r = TraceShardReader::Open(shard);
  TraceTokens t;
  ASSERT_TRUE(r->Next(&t).value());
  EXPECT_EQ(t.completion_ids, (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(t.topk_ids, (std::vector<int32_t>{3, 9, 4, 8, 5, 7}));

  // A damaged shard tail is cut too.
  std::ofstream(shard, std::ios::app) << "garbage";
  {
    auto out = TraceOutputDir::Open(dir, job, true);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ((*out)->recovery().shard_cut_bytes, 7);
  }
  EXPECT_EQ(ShardKeys(shard).size(), 3u);

  // A JSONL that lost committed lines is damage, reported, not papered over.
  fs::resize_file(jsonl, 10);
  auto bad = TraceOutputDir::Open(dir, job, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("traces.jsonl"), std::string::npos);
}

// A teacher whose answers are scripted: the content of sample i of prompt p is
// "\boxed{<answer>}" when (i + p) is even, else "\boxed{-1}".
class ScriptedTeacher : public TraceTeacher {
 public:
  std::string Describe() const override { return "scripted"; }
  absl::Status Run(const std::vector<TraceWorkItem>& items, const TraceDoneFn& on_done) override {
    for (const TraceWorkItem& item : items) {
      ++calls;
      seen.emplace_back(item.prompt->id, item.sample);
      if (stop_after >= 0 && calls > stop_after) return absl::AbortedError("killed");
      TraceCompletion c;
      c.item = &item;
      if (item.prompt->id == "long") {
        c.status = absl::FailedPreconditionError("prompt \"long\" too long");
        std::vector<TraceCompletion> g;
        g.push_back(std::move(c));
        RETURN_IF_ERROR(on_done(std::move(g)));
        continue;
      }
      int p = std::stoi(item.prompt->id.substr(1));
      bool right = (item.sample + p) % 2 == 0;
      c.reasoning = "think " + std::to_string(item.seed);
      c.content = "\\boxed{" + (right ? item.prompt->answer.value() : std::string("-1")) + "}";
      c.finish_reason = "stop";
      c.has_tokens = true;
      c.prompt_ids = {1, 2, 3};
      c.completion_ids = {static_cast<int32_t>(item.sample), 7};
      c.completion_tokens = 2;
      c.prompt_tokens = 3;
      std::vector<TraceCompletion> g;
      g.push_back(std::move(c));
      RETURN_IF_ERROR(on_done(std::move(g)));
      generated += 2;
    }
    return absl::OkStatus();
  }
  int64_t generated_tokens() const override { return generated; }
  int calls = 0;
  int stop_after = -1;
  int64_t generated = 0;
  std::vector<std::pair<std::string, int64_t>> seen;
};

TEST_F(TraceJobTest, RunsVerifiesKeepsCorrectAndResumes) {
  std::vector<TracePrompt> prompts;
  for (int p = 0; p < 4; ++p) {
    TracePrompt t;
    t.id = "p" + std::to_string(p);
    t.messages = nlohmann::ordered_json::array({{{"role", "user"}, {"content", "q"}}});
    t.answer = std::to_string(10 + p);
    prompts.push_back(t);
  }
  TracePrompt long_prompt;
  long_prompt.id = "long";
  long_prompt.messages = prompts[0].messages;
  prompts.push_back(long_prompt);
  auto verifier = MakeVerifier("math");
  ASSERT_TRUE(verifier.ok());
  TraceJobOptions o;
  o.sampling.samples = 3;
  o.sampling.seed = 5;
  o.keep = KeepPolicy::kCorrect;
  o.verifier = verifier->get();
  o.progress = &NullProgress();
  const std::string dir = (root_ / "job").string();
  auto params = TraceJobParams(o.sampling, o.keep, "math", "scripted", true, "prompts.jsonl");

  // First run dies after 5 samples.
  {
    auto out = TraceOutputDir::Open(dir, params, true);
    ASSERT_TRUE(out.ok());
    ScriptedTeacher teacher;
    teacher.stop_after = 5;
    auto r = RunTraceJob(prompts, teacher, **out, o);
    EXPECT_FALSE(r.ok());
  }
  ScriptedTeacher teacher;
  {
    auto out = TraceOutputDir::Open(dir, params, true);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ((*out)->recovery().done, 5);
    auto r = RunTraceJob(prompts, teacher, **out, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->samples_resumed, 5);
    EXPECT_EQ(r->samples_generated, 7);
    EXPECT_EQ(r->prompts_skipped, 1);
    const auto& s = r->summary;
    EXPECT_EQ(s["samples"], 12);
    // (sample + p) even: p0 {0,2}, p1 {1}, p2 {0,2}, p3 {1} -> 6 of 12.
    EXPECT_EQ(s["kept"], 6);
    EXPECT_EQ(s["rejected"], 6);
    EXPECT_EQ(s["prompts_skipped"], 1);
    EXPECT_DOUBLE_EQ(s["verification"]["accuracy"].get<double>(), 0.5);
    EXPECT_DOUBLE_EQ(s["verification"]["pass@k"]["3"].get<double>(), 1.0);
  }
  // Nothing done was generated again: the rejected samples were remembered.
  std::set<std::pair<std::string, int64_t>> seen(teacher.seen.begin(), teacher.seen.end());
  EXPECT_EQ(seen.size(), teacher.seen.size());
  int regenerated = 0;
  for (const auto& k : seen) regenerated += k.first == "long" ? 0 : 1;
  EXPECT_EQ(regenerated, 7);

  auto samples = ReadTraceJsonl(dir + "/traces.jsonl");
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 6u);
  auto keys = ShardKeys(dir + "/tokens.shard");
  ASSERT_EQ(keys.size(), 6u);
  for (size_t i = 0; i < samples->size(); ++i) {
    const TraceSample& t = (*samples)[i];
    EXPECT_EQ(keys[i], std::make_pair(t.id, static_cast<int>(t.sample)));
    EXPECT_TRUE(t.correct.value_or(false));
    EXPECT_EQ(t.verifier, "math");
    EXPECT_EQ(t.extra["extracted_answer"], t.answer.value());
    EXPECT_EQ(t.extra["seed"].get<uint64_t>(), TraceSampleSeed(5, t.id, t.sample));
    ASSERT_NE(t.Completion(), nullptr);
    EXPECT_EQ(t.Completion()->reasoning_content,
              "think " + std::to_string(TraceSampleSeed(5, t.id, t.sample)));
  }
  auto summary = ReadFileToString(dir + "/summary.json");
  ASSERT_TRUE(summary.ok());
  EXPECT_NE(summary->find("\"pass@k\""), std::string::npos);

  // A rerun of a finished job generates nothing.
  ScriptedTeacher idle;
  auto out = TraceOutputDir::Open(dir, params, true);
  ASSERT_TRUE(out.ok());
  auto r = RunTraceJob(prompts, idle, **out, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(idle.calls, 3);  // only the too-long prompt is tried again
  EXPECT_EQ(r->samples_generated, 0);
}

TEST_F(TraceJobTest, EndpointChoiceToCompletion) {
  ChatChoice choice;
  choice.content = "<think>\nhmm\n</think>\n\n \\boxed{4}";
  choice.finish_reason = "length";
  choice.has_logprobs = true;
  for (int i = 0; i < 2; ++i) {
    GeneratedTokenLogprobs g;
    g.chosen = {"x", -0.5 - i, 10 + i, {}};
    g.top = {{"y", -2.0, 20, {}}, {"x", -0.5 - i, 10 + i, {}}};  // unsorted on purpose
    choice.logprobs.push_back(g);
  }
  TraceCompletion c;
  ASSERT_TRUE(EndpointTraceTeacher::FillFromChoice(choice, true, &c).ok());
  EXPECT_EQ(c.reasoning, "hmm");
  EXPECT_EQ(c.content, "\\boxed{4}");
  EXPECT_EQ(c.finish_reason, "length");
  ASSERT_TRUE(c.has_tokens);
  EXPECT_EQ(c.completion_ids, (std::vector<int32_t>{10, 11}));
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.topk_ids, (std::vector<int32_t>{10, 20, 11, 20}));
  EXPECT_FLOAT_EQ(c.topk_logprobs[0], -0.5f);

  // Server-side reasoning_content wins; token strings without ids cannot
  // fill a shard.
  choice.reasoning_content = " r ";
  choice.content = " a ";
  choice.logprobs[1].chosen.token_id = -1;
  TraceCompletion d;
  absl::Status s = EndpointTraceTeacher::FillFromChoice(choice, true, &d);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("--no-shard"), std::string::npos);
  TraceCompletion e;
  ASSERT_TRUE(EndpointTraceTeacher::FillFromChoice(choice, false, &e).ok());
  EXPECT_EQ(e.reasoning, "r");
  EXPECT_EQ(e.content, "a");
  EXPECT_FALSE(e.has_tokens);
}

}  // namespace
}  // namespace retort
