// `retort distill --on-policy` as users run it, on the bundled arithmetic
// teacher and a small student with its tokenizer: the student samples, the
// teacher scores, the metrics say what happened; SIGKILL + --resume gives the
// weights of the uninterrupted run; GKD's lambda mixes on- and off-policy
// batches (lambda 0 is plain SFT); the same teacher behind `retort serve`
// scores the samples as the in-process one does; bad input gets one-line
// errors.
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
#include "core/file.h"
#include "core/tensor.h"
#include "formats/hf_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/model_files.h"
#include "model/train_model.h"
#include "nlohmann/json.hpp"
#include "serve_process.h"

extern char** environ;

namespace retort {
namespace {
namespace fs = std::filesystem;
using testing::CliHarness;
using testing::CliRun;
using ::testing::HasSubstr;

constexpr char kTeacher[] = "models/arith-teacher";
constexpr char kPrompts[] = "data/arith/demo_prompts.jsonl";

std::vector<nlohmann::json> Steps(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j);
  }
  return out;
}

std::string Bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class OnPolicyCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    h_ = new CliHarness("on_policy_cli");
    // The recipe's student, smaller: the teacher's byte tokenizer and template.
    CliRun init =
        h_->Exec("init " + Student() + " --family llama --size tiny --tokenizer " + kTeacher +
                 " --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 "
                 "--context 512 --dtype f32 --seed 1");
    ASSERT_EQ(init.code, 0) << init.err;
    // Off-policy data for the lambda mix: short chats with the answers.
    std::ofstream chats(Chats());
    for (int i = 0; i < 24; ++i) {
      const int a = 1000 + 37 * i, b = 2000 + 91 * i;
      chats << nlohmann::json{{"id", "c" + std::to_string(i)},
                              {"messages",
                               {{{"role", "user"},
                                 {"content", "What is " + std::to_string(a) + " + " +
                                                 std::to_string(b) + "?"}},
                                {{"role", "assistant"}, {"content", std::to_string(a + b)}}}}}
                   .dump()
            << "\n";
    }
  }
  static void TearDownTestSuite() { delete h_; }
  static std::string Student() { return (h_->root() / "student").string(); }
  static std::string Chats() { return (h_->root() / "chats.jsonl").string(); }
  static std::string Out(const std::string& name) { return (h_->root() / name).string(); }
  // One thread: the same SIMD path and summation order in every run.
  static std::string OnPolicyArgs(const std::string& out) {
    return "distill " + Student() + " " + out + " --teacher " + kTeacher +
           " --on-policy --prompts " + kPrompts +
           " --prompts-per-batch 3 --max-new-tokens 24 --verifier math --lr 3e-3 --seed 2"
           " --threads 1 -q";
  }
  static CliHarness* h_;
};
CliHarness* OnPolicyCliTest::h_ = nullptr;

TEST_F(OnPolicyCliTest, TrainsOnItsOwnSamplesAndKillNineResumesBitExactly) {
  const std::string ref = Out("ref");
  CliRun r = h_->Exec(OnPolicyArgs(ref) + " --max-steps 6 --save-every 1");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<nlohmann::json> steps = Steps(ref);
  ASSERT_EQ(steps.size(), 6u);
  for (const nlohmann::json& m : steps) {
    SCOPED_TRACE(m.dump());
    EXPECT_EQ(m["on_policy_batches"], 1);
    EXPECT_TRUE(std::isfinite(m["reverse_kl"].get<double>()));
    EXPECT_GT(m["sample_tokens"].get<double>(), 0);
    EXPECT_LE(m["sample_tokens"].get<double>(), 24);
    EXPECT_EQ(m["finish_stop"].get<int>() + m["finish_length"].get<int>(), 3);
    EXPECT_GE(m["sampled_accuracy"].get<double>(), 0);
    EXPECT_LE(m["sampled_accuracy"].get<double>(), 1);
    EXPECT_GT(m["generate_s"].get<double>(), 0);
    EXPECT_GT(m["teacher_s"].get<double>(), 0);
    EXPECT_GE(m["train_s"].get<double>(), 0);
    EXPECT_GT(m["generate_tok_s"].get<double>(), 0);
    // The student's tokens are the targets: ce is not trained (weight 0) and
    // the loss is the sampled reverse KL.
    EXPECT_DOUBLE_EQ(m["loss"].get<double>(), m["reverse_kl"].get<double>());
  }
  const nlohmann::json state =
      nlohmann::json::parse(Bytes(fs::path(ref) / "checkpoint-0000006" / "trainer_state.json"));
  EXPECT_EQ(state["on_policy"]["next_sample"], 18);
  EXPECT_EQ(state["settings"]["on_policy_loss"], "sampled_reverse_kl");

  // The same run, SIGKILLed once checkpoint 3 exists, then resumed.
  const std::string out = Out("killed");
  const std::string cmd = h_->binary() + " " + OnPolicyArgs(out) + " --max-steps 6 --save-every 1";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd + " 2>/dev/null").c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const fs::path third = fs::path(out) / "checkpoint-0000003" / "trainer_state.json";
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 6000 && !fs::exists(third); ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(exited) << "the run ended before the kill";
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  ASSERT_FALSE(fs::exists(fs::path(out) / "final"));
  CliRun resumed = h_->Exec(OnPolicyArgs(out) + " --max-steps 6 --save-every 1 --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_EQ(Bytes(fs::path(out) / "final" / "model.safetensors"),
            Bytes(fs::path(ref) / "final" / "model.safetensors"));
  const std::vector<nlohmann::json> again = Steps(out);
  ASSERT_EQ(again.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(again[i]["loss"], steps[i]["loss"]) << i;
}

TEST_F(OnPolicyCliTest, LambdaZeroIsSftAndLambdaHalfMixesBothKinds) {
  const std::string data = " --data " + Chats() + " --seq-len 64 --batch-rows 2 --eval-fraction 0";
  const std::string sft = Out("sft"), lambda0 = Out("lambda0"), half = Out("half");
  CliRun a = h_->Exec("distill " + Student() + " " + sft + data +
                      " --max-steps 4 --lr 3e-3 --seed 2 --threads 1 -q");
  ASSERT_EQ(a.code, 0) << a.err;
  CliRun b = h_->Exec(OnPolicyArgs(lambda0) + data + " --max-steps 4 --lambda 0");
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(Bytes(fs::path(lambda0) / "final" / "model.safetensors"),
            Bytes(fs::path(sft) / "final" / "model.safetensors"));
  for (const nlohmann::json& m : Steps(lambda0)) EXPECT_EQ(m["on_policy_batches"], 0);

  CliRun c = h_->Exec(OnPolicyArgs(half) + data +
                      " --max-steps 8 --lambda 0.5 --on-policy-loss jsd --jsd-beta 0.5");
  ASSERT_EQ(c.code, 0) << c.err;
  int on = 0, off = 0;
  for (const nlohmann::json& m : Steps(half)) {
    if (m["on_policy_batches"] == 1) {
      ++on;
      EXPECT_TRUE(m.contains("jsd"));
      EXPECT_DOUBLE_EQ(m["loss"].get<double>(), m["jsd"].get<double>());
    } else {
      ++off;
      EXPECT_FALSE(m.contains("jsd"));
    }
  }
  EXPECT_GT(on, 0);
  EXPECT_GT(off, 0);

  CliRun rkl = h_->Exec(OnPolicyArgs(Out("rkl")) + " --max-steps 2 --on-policy-loss reverse_kl");
  ASSERT_EQ(rkl.code, 0) << rkl.err;
  for (const nlohmann::json& m : Steps(Out("rkl"))) EXPECT_GE(m["reverse_kl"].get<double>(), 0);
}

// The teacher behind `retort serve` (prompt_logprobs) gives the per-token
// log-probs of the local teacher: the same samples (the student and seeds are
// the same), the same sampled-token reverse KL per step up to the JSON round
// trip of the log-probs; and reverse KL over the teacher's top-K + tail.
TEST_F(OnPolicyCliTest, AnEndpointTeacherScoresLikeTheLocalTeacher) {
  testing::ServeProcess server;
  std::string error;
  ASSERT_TRUE(
      server.Start({kTeacher, "--threads", "1"}, (h_->root() / "serve.err").string(), &error))
      << error;
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/v1";
  for (const char* loss : {"sampled_reverse_kl", "reverse_kl"}) {
    SCOPED_TRACE(loss);
    const std::string local = Out(std::string("local_") + loss),
                      remote = Out(std::string("remote_") + loss);
    const std::string common = " --max-steps 3 --on-policy-loss " + std::string(loss);
    CliRun a = h_->Exec(OnPolicyArgs(local) + common);
    ASSERT_EQ(a.code, 0) << a.err;
    std::string args = OnPolicyArgs(remote);
    args.replace(args.find(std::string(" --teacher ") + kTeacher),
                 std::string(" --teacher ").size() + std::string(kTeacher).size(),
                 " --teacher-endpoint " + url + " --teacher-top-k 20");
    CliRun b = h_->Exec(args + common);
    ASSERT_EQ(b.code, 0) << b.err;
    const std::vector<nlohmann::json> x = Steps(local), y = Steps(remote);
    ASSERT_EQ(x.size(), 3u);
    ASSERT_EQ(y.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(x[i]["tokens"], y[i]["tokens"]) << i;  // the same samples
      const double kx = x[i]["reverse_kl"].get<double>(), ky = y[i]["reverse_kl"].get<double>();
      if (std::string(loss) == "sampled_reverse_kl") {
        // The teacher's log-prob of each sampled token, through JSON.
        EXPECT_NEAR(kx, ky, 1e-4 * std::max(1.0, std::abs(kx))) << i;
      } else {
        // Top-20 of 259 ids plus one tail bucket: merging ids can only lower
        // a KL (data processing), and the untrained student spreads its mass
        // over the tail, so the bucketed value is below the dense one.
        EXPECT_LT(ky, kx) << i;
        EXPECT_GT(ky, 0.5 * kx) << i;
      }
    }
  }
}

// `mpirun -np 2` splits the prompts: rank r of W takes stream samples
// (g * W + r) * B ..., so two ranks draw what one rank with twice the
// accumulation draws, and follow the same curve.
TEST_F(OnPolicyCliTest, TwoMpiRanksSampleWhatOneRankWithTwiceTheAccumulationSamples) {
  const std::string one = Out("op_rank1"), two = Out("op_rank2");
  CliRun a = h_->Exec(OnPolicyArgs(one) + " --max-steps 3 --grad-accum 2");
  ASSERT_EQ(a.code, 0) << a.err;
  const std::string mpirun =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_rmaps_base_oversubscribe=1 "
      "mpirun -np 2 ";
  CliRun b = h_->ExecWithPrefix(mpirun, OnPolicyArgs(two) + " --max-steps 3 --grad-accum 1");
  ASSERT_EQ(b.code, 0) << b.err << b.out;
  const std::vector<nlohmann::json> x = Steps(one), y = Steps(two);
  ASSERT_EQ(x.size(), 3u);
  ASSERT_EQ(y.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(x[i]["tokens"], y[i]["tokens"]) << i;
    EXPECT_EQ(x[i]["on_policy_batches"], 2);
    EXPECT_EQ(y[i]["on_policy_batches"], 2);
    EXPECT_EQ(x[i]["sampled_accuracy"], y[i]["sampled_accuracy"]) << i;
    for (const char* key : {"loss", "grad_norm"}) {
      const double p = x[i][key].get<double>(), q = y[i][key].get<double>();
      EXPECT_NEAR(p, q, 1e-5 * std::abs(p)) << i << " " << key;
    }
  }
}

// A teacher whose vocabulary is the student's plus padding rows (as
// Qwen2.5's 152,064 vs 151,936) is read over the student's ids: the arith
// teacher with 61 zero rows appended to its (tied) embedding trains exactly
// as the teacher itself.
TEST_F(OnPolicyCliTest, ATeacherWithPaddingRowsTrainsAsTheUnpaddedOne) {
  auto engine = LoadEngine(kTeacher);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto model = TrainModel::FromTransformer(**engine);
  ASSERT_TRUE(model.ok()) << model.status();
  ModelConfig config = (*model)->config();
  const int64_t vocab = config.vocab_size, padded = vocab + 61, hidden = config.hidden_size;
  std::vector<std::pair<std::string, Tensor>> weights = (*model)->NamedWeights();
  for (auto& [name, t] : weights) {
    if (t.shape().size() != 2 || t.shape()[0] != vocab) continue;  // embed_tokens (tied)
    Tensor grown = Tensor::Zeros(DType::kF32, Shape{padded, hidden});
    std::copy_n(t.data<float>(), vocab * hidden, grown.mutable_data<float>());
    t = std::move(grown);
  }
  config.vocab_size = padded;
  const std::string dir = Out("padded_teacher");
  ASSERT_TRUE(WriteHfDirectory(dir, config.ToJson(), weights).ok());
  auto files = TokenizerFiles(kTeacher);
  ASSERT_TRUE(files.ok()) << files.status();
  for (const auto& [file, text] : *files) {
    ASSERT_TRUE(WriteFileAtomically(dir + "/" + file, text).ok());
  }
  std::string args = OnPolicyArgs(Out("padded")) + " --max-steps 2";
  args.replace(args.find(kTeacher), std::string(kTeacher).size(), dir);
  CliRun a = h_->Exec(args);
  ASSERT_EQ(a.code, 0) << a.err;
  CliRun b = h_->Exec(OnPolicyArgs(Out("unpadded")) + " --max-steps 2");
  ASSERT_EQ(b.code, 0) << b.err;
  const std::vector<nlohmann::json> x = Steps(Out("padded")), y = Steps(Out("unpadded"));
  ASSERT_EQ(x.size(), 2u);
  ASSERT_EQ(y.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(x[i]["loss"], y[i]["loss"]) << i;
  // The run says so (-q hides it).
  std::string loud = OnPolicyArgs(Out("padded_loud")) + " --max-steps 1";
  loud.replace(loud.find(kTeacher), std::string(kTeacher).size(), dir);
  loud.erase(loud.find(" -q"), 3);
  CliRun c = h_->Exec(loud);
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_THAT(c.err, HasSubstr("= the student's " + std::to_string(vocab) + " + 61 padding rows"));
}

TEST_F(OnPolicyCliTest, BadInputGivesOneLineErrors) {
  auto one_line = [](const CliRun& r) {
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  const std::string base = "distill " + Student() + " " + Out("bad") + " -q --max-steps 1";
  CliRun r = h_->Exec(base + " --on-policy --prompts " + kPrompts);
  one_line(r);
  EXPECT_THAT(r.err, HasSubstr("--on-policy needs --teacher MODEL or --teacher-endpoint URL"));
  r = h_->Exec(base + " --data " + Chats() + " --teacher-endpoint http://127.0.0.1:1/v1");
  one_line(r);
  EXPECT_THAT(r.err, HasSubstr("add --on-policy"));
  r = h_->Exec(OnPolicyArgs(Out("bad")) + " --max-steps 1 --on-policy-loss forward_kl");
  one_line(r);
  EXPECT_THAT(r.err, HasSubstr("expected sampled_reverse_kl, reverse_kl or jsd"));
  r = h_->Exec(OnPolicyArgs(Out("bad")) + " --max-steps 1 --lambda 0.5");
  one_line(r);
  EXPECT_THAT(r.err, HasSubstr("give --data"));
  r = h_->Exec(OnPolicyArgs(Out("bad")) + " --max-steps 1 --lambda 1.5");
  one_line(r);
  EXPECT_THAT(r.err, HasSubstr("--lambda must be in [0, 1]"));
  r = h_->Exec("distill " + Student() + " " + Out("bad") + " --teacher " + kTeacher +
               " --on-policy --prompts no/such.jsonl -q --max-steps 1");
  one_line(r);
  EXPECT_THAT(r.err, HasSubstr("no/such.jsonl"));
}

}  // namespace
}  // namespace retort
