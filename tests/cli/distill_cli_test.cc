// `retort distill` as users run it: from `retort init` to a saved model,
// OpenMPI data parallelism, Ctrl-C + --resume, offline and online logit
// distillation, and one-line errors for bad input.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli_harness.h"
#include "formats/traces.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace retort {
namespace {
namespace fs = std::filesystem;
using testing::CliHarness;
using testing::CliRun;
using ::testing::HasSubstr;

constexpr char kText[] = "/usr/share/common-licenses/GPL-3";

std::vector<nlohmann::json> Metrics(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::vector<double> StepLosses(const fs::path& dir) {
  std::vector<double> out;
  for (const auto& m : Metrics(dir)) {
    if (m.contains("loss")) out.push_back(m["loss"].get<double>());
  }
  return out;
}

class DistillCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    h_ = new CliHarness("distill_cli");
    CliRun init = h_->Exec("init " + Model() + " --size tiny --dtype f32 --seed 1");
    ASSERT_EQ(init.code, 0) << init.err;
  }
  static void TearDownTestSuite() { delete h_; }
  static std::string Model() { return (h_->root() / "student").string(); }
  static std::string Out(const std::string& name) { return (h_->root() / name).string(); }
  static std::string Common() {
    return absl_free_join({"--data", kText, "--seq-len 128 --batch-rows 2 --lr 3e-3 --threads 1"});
  }
  static std::string absl_free_join(std::initializer_list<std::string> parts) {
    std::string s;
    for (const auto& p : parts) s += (s.empty() ? "" : " ") + p;
    return s;
  }
  static CliHarness* h_;
};
CliHarness* DistillCliTest::h_ = nullptr;

TEST_F(DistillCliTest, TrainsAndSavesAnHfDirectoryThatTheOtherCommandsLoad) {
  const std::string out = Out("sft");
  CliRun r =
      h_->Exec("distill " + Model() + " " + Common() + " --max-steps 30 --eval-every 10 -o " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("tok/s"));
  EXPECT_THAT(r.err, HasSubstr("peak RSS"));
  const std::vector<double> losses = StepLosses(out);
  ASSERT_EQ(losses.size(), 30u);
  EXPECT_LT(losses.back(), losses.front() - 1.0);
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(out) / "final" / f)) << f;
  }
  EXPECT_TRUE(fs::exists(fs::path(out) / "run.json"));
  // `retort eval` reads the saved directory; the trained model beats the
  // untrained one on the same text.
  auto perplexity = [&](const std::string& model) {
    CliRun p = h_->Exec("eval " + model + " --perplexity " + std::string(kText) +
                        " --context 128 --max-tokens 4096 --json");
    EXPECT_EQ(p.code, 0) << p.err;
    return nlohmann::json::parse(p.out.empty() ? "{}" : p.out).value("perplexity", 0.0);
  };
  const double before = perplexity(Model()), after = perplexity(out + "/final");
  EXPECT_GT(before, 100.0);
  EXPECT_LT(after, 0.5 * before);
  auto config = [](const std::string& dir) {
    return nlohmann::json::parse(ReadFileToString(dir + "/config.json").value_or("{}"));
  };
  EXPECT_EQ(config(out + "/final")["torch_dtype"], "float32");

  // --save-dtype bf16: the config names the dtype the weights are stored in.
  const std::string bf16 = Out("sft_bf16");
  r = h_->Exec("distill " + Model() + " " + Common() + " --max-steps 2 --save-dtype bf16 -q -o " +
               bf16);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(config(bf16 + "/final")["torch_dtype"], "bfloat16");
  CliRun inspect = h_->Exec("inspect " + bf16 + "/final");
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_THAT(inspect.out, HasSubstr("BF16"));
}

TEST_F(DistillCliTest, TwoMpiRanksFollowOneRankWithTwiceTheAccumulation) {
  const std::string one = Out("rank1"), two = Out("rank2");
  CliRun a = h_->Exec("distill " + Model() + " " + Common() +
                      " --max-steps 6 --grad-accum 2 -q -o " + one);
  ASSERT_EQ(a.code, 0) << a.err;
  // mpirun runs the same binary twice; as root OpenMPI needs its consent.
  const std::string mpirun =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_rmaps_base_oversubscribe=1 "
      "mpirun -np 2 ";
  CliRun b = h_->ExecWithPrefix(
      mpirun, "distill " + Model() + " " + Common() + " --max-steps 6 --grad-accum 1 -q -o " + two);
  ASSERT_EQ(b.code, 0) << b.err << b.out;
  auto ma = Metrics(one), mb = Metrics(two);
  ASSERT_EQ(ma.size(), mb.size());
  ASSERT_GE(ma.size(), 6u);
  for (size_t i = 0; i < ma.size(); ++i) {
    for (const char* key : {"loss", "grad_norm", "eval_loss"}) {
      if (!ma[i].contains(key)) continue;
      const double x = ma[i][key].get<double>(), y = mb[i][key].get<double>();
      EXPECT_NEAR(x, y, 1e-5 * std::abs(x)) << "line " << i << " " << key;
    }
    if (ma[i].contains("tokens")) {
      EXPECT_EQ(ma[i]["tokens"], mb[i]["tokens"]) << i;
    }
  }
}

// --gradient-checkpointing recomputes activations in the backward pass: the
// same losses bit for bit, and the memory plan says so.
TEST_F(DistillCliTest, GradientCheckpointingTrainsTheSameSteps) {
  const std::string plain = Out("ckpt_off"), ckpt = Out("ckpt_on");
  CliRun a = h_->Exec("distill " + Model() + " " + Common() + " --max-steps 4 -o " + plain);
  ASSERT_EQ(a.code, 0) << a.err;
  CliRun b = h_->Exec("distill " + Model() + " " + Common() +
                      " --max-steps 4 --gradient-checkpointing -o " + ckpt);
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_THAT(b.err, HasSubstr("(gradient checkpointing)"));
  const std::vector<double> la = StepLosses(plain), lb = StepLosses(ckpt);
  ASSERT_EQ(la.size(), 4u);
  EXPECT_EQ(la, lb);
}

// stderr that is not a terminal (here a pipe) gets a status line at most every
// few seconds, the last state always, and no carriage returns.
TEST_F(DistillCliTest, ProgressOffATerminalIsThrottled) {
  CliRun r =
      h_->Exec("distill " + Model() + " " + Common() + " --max-steps 60 -o " + Out("throttled"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(StepLosses(Out("throttled")).size(), 60u);
  int status_lines = 0;
  for (size_t pos = 0; (pos = r.err.find("step ", pos)) != std::string::npos; ++pos) {
    if (pos == 0 || r.err[pos - 1] == '\n') ++status_lines;
  }
  EXPECT_GE(status_lines, 1) << r.err;
  EXPECT_LE(status_lines, 6) << r.err;  // 60 steps in well under 25 s
  EXPECT_THAT(r.err, HasSubstr("step 60/60"));
  EXPECT_EQ(r.err.find('\r'), std::string::npos);
}

TEST_F(DistillCliTest, CtrlCSavesACheckpointAndResumeFinishesTheRun) {
  const std::string out = Out("interrupted");
  std::vector<std::string> args = {
      h_->binary(), "distill",   Model(), "--data",      kText,  "--seq-len", "64", "--batch-rows",
      "1",          "--threads", "1",     "--max-steps", "3000", "-q",        "-o", out};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  // Wait for a few steps, then Ctrl-C.
  for (int i = 0; i < 600 && Metrics(out).size() < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(Metrics(out).size(), 5u) << "the run did not start";
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  const size_t done = StepLosses(out).size();
  ASSERT_LT(done, 3000u) << "finished before the interrupt; make the run longer";
  char name[32];
  std::snprintf(name, sizeof name, "checkpoint-%07zu", done);
  EXPECT_TRUE(fs::exists(fs::path(out) / name / "master.safetensors")) << name;
  EXPECT_FALSE(fs::exists(fs::path(out) / "final"));

  CliRun again = h_->Exec("distill " + Model() + " --data " + kText +
                          " --seq-len 64 --batch-rows 1 --threads 1 --max-steps 3000 -q -o " + out);
  EXPECT_NE(again.code, 0);
  EXPECT_THAT(again.err, HasSubstr("--resume"));
  // Other data (here: other packing) would make the saved data position
  // meaningless: refused, naming the checkpoint.
  CliRun other =
      h_->Exec("distill " + Model() + " --data " + kText +
               " --seq-len 32 --batch-rows 1 --threads 1 --max-steps 3000 -q --resume -o " + out);
  EXPECT_NE(other.code, 0);
  EXPECT_THAT(other.err, HasSubstr("the checkpoint was trained on other data"));
  EXPECT_THAT(other.err, HasSubstr(name));
  // Another learning rate is allowed, and said loudly.
  CliRun resumed = h_->Exec("distill " + Model() + " --data " + kText +
                            " --seq-len 64 --batch-rows 1 --threads 1 --max-steps 3000 --lr 0.0005 "
                            "-q --resume -o " +
                            out);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_THAT(resumed.err, HasSubstr("with changed settings: lr 0.0003"));
  EXPECT_THAT(resumed.err, HasSubstr("-> 0.0005"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "final" / "model.safetensors"));
  EXPECT_EQ(StepLosses(out).size(), 3000u);
}

TEST_F(DistillCliTest, LogitDistillationFromAnOnlineTeacherAndFromTraceShards) {
  // Teacher: the student after some SFT.
  const std::string teacher_run = Out("teacher");
  ASSERT_EQ(
      h_->Exec("distill " + Model() + " " + Common() + " --max-steps 40 -q -o " + teacher_run).code,
      0);
  const std::string teacher = teacher_run + "/final";

  // Online: KL to the teacher only.
  const std::string online = Out("kd_online");
  CliRun r = h_->Exec("distill " + Model() + " " + Common() + " --teacher " + teacher +
                      " --ce-weight 0 --kd-weight 1 --max-steps 15 -q -o " + online);
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<double> kd = StepLosses(online);
  ASSERT_EQ(kd.size(), 15u);
  EXPECT_LT(kd.back(), 0.5 * kd.front());

  // Offline: a shard with the teacher's top-16 per completion token.
  auto engine = Transformer::Load(teacher);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int64_t vocab = (*engine)->config().vocab_size;
  const std::string shard = Out("traces.shard");
  {
    auto w = TraceShardWriter::Open(shard, /*append=*/false);
    ASSERT_TRUE(w.ok()) << w.status();
    std::ifstream in(kText);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (int rec = 0; rec < 24; ++rec) {
      TraceTokens t;
      t.id = "p" + std::to_string(rec);
      t.top_k = 16;
      // Byte tokenizer: id = byte + 3.
      for (int i = 0; i < 40; ++i) {
        const int32_t id = static_cast<unsigned char>(text[rec * 97 + i]) + 3;
        (i < 10 ? t.prompt_ids : t.completion_ids).push_back(id);
      }
      std::vector<int32_t> all = t.prompt_ids;
      all.insert(all.end(), t.completion_ids.begin(), t.completion_ids.end());
      auto logits = (*engine)->Logits(all);
      ASSERT_TRUE(logits.ok());
      for (size_t c = 0; c < t.completion_ids.size(); ++c) {
        // The distribution over completion token c comes from the position before it.
        const float* z = logits->data() + (t.prompt_ids.size() + c - 1) * vocab;
        double m = z[0], sum = 0;
        for (int64_t j = 0; j < vocab; ++j) m = std::max(m, double(z[j]));
        for (int64_t j = 0; j < vocab; ++j) sum += std::exp(z[j] - m);
        std::vector<int32_t> order(vocab);
        for (int64_t j = 0; j < vocab; ++j) order[j] = j;
        std::partial_sort(order.begin(), order.begin() + 16, order.end(),
                          [&](int a, int b) { return z[a] > z[b]; });
        for (int j = 0; j < 16; ++j) {
          t.topk_ids.push_back(order[j]);
          t.topk_logprobs.push_back(static_cast<float>(z[order[j]] - m - std::log(sum)));
        }
      }
      ASSERT_TRUE(w->Append(t).ok());
    }
    ASSERT_TRUE(w->Commit().ok());
  }
  const std::string offline = Out("kd_offline");
  r = h_->Exec("distill " + Model() + " --data " + shard +
               " --seq-len 128 --batch-rows 2 --lr 3e-3 --threads 1 --eval-fraction 0"
               " --ce-weight 0 --kd-weight 1 --max-steps 15 -o " +
               offline);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("24 with teacher top-k"));
  kd = StepLosses(offline);
  ASSERT_EQ(kd.size(), 15u);
  EXPECT_LT(kd.back(), 0.5 * kd.front());
}

TEST_F(DistillCliTest, BadInputGivesOneLineErrors) {
  struct Case {
    std::string args, expect;
  } cases[] = {
      {Model() + " --data /nonexistent.txt -o " + Out("e1"), "/nonexistent.txt"},
      {Model() + " " + Common() + " --kd-weight 1 -o " + Out("e2"), "needs a teacher"},
      {Model() + " --data " + kText + " --seq-len 100000 -o " + Out("e3"),
       "max_position_embeddings"},
      {Model() + " " + Common() + " --schedule wobbly -o " + Out("e4"), "wobbly"},
      {Model() + " " + Common() + " --divergence kl2 -o " + Out("e5"), "kl2"},
      {Model() + " --data " + std::string(kText) +
           " --seq-len 64 --lr 1e30 --clip-grad-norm 0 --save-every 1 --max-steps 5 "
           "--schedule constant -o " +
           Out("e6"),
       "stopped without saving"},
      {"/nonexistent-model " + Common() + " -o " + Out("e7"), "/nonexistent-model"},
  };
  for (const Case& c : cases) {
    CliRun r = h_->Exec("distill " + c.args + " -q");
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.expect)) << c.args;
    EXPECT_THAT(r.err, HasSubstr("retort distill: error: ")) << c.args;
  }
  // Chat JSONL with a broken line names the file and line.
  const std::string bad = Out("bad.jsonl");
  std::ofstream(bad) << "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                        "{\"role\": \"assistant\", \"content\": \"yo\"}]}\n{\"messages\": 3}\n";
  CliRun r = h_->Exec("distill " + Model() + " --data " + bad + " -q -o " + Out("e8"));
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("bad.jsonl:2"));
}

}  // namespace
}  // namespace retort
