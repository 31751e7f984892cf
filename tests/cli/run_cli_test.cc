// `retort run RECIPE` end to end on a tiny model: init -> distill -> convert
// -> eval; a second run skips everything; a changed data file reruns only
// the stages that depend on it; bad recipes and failing stages fail cleanly.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli_harness.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "serve_process.h"

namespace retort {
namespace {
namespace fs = std::filesystem;
using testing::CliHarness;
using testing::CliRun;
using ::testing::HasSubstr;
using ::testing::Not;

const char kRecipe[] = R"pb(# A small end-to-end recipe for the CLI test.
                            name: "tiny-run"
                            stage {
                              name: "init"
                              init { family: "llama" size: "tiny" seed: 1 dtype: "f32" }
                            }
                            stage {
                              name: "sft"
                              label: "student, SFT"
                              distill {
                                student: "@init"
                                data: "train.jsonl"
                                max_steps: 3
                                seq_len: 64
                                batch_rows: 2
                                lr: 0.003
                              }
                              extra_args: "--quiet"
                            }
                            stage {
                              name: "gguf"
                              convert { model: "@sft" type: "f16" }
                            }
                            stage {
                              name: "eval_sft"
                              label: "student after SFT"
                              eval { model: "@sft" prompts: "heldout.jsonl" max_tokens: 6 }
                            }
)pb";

class RunCliTest : public ::testing::Test {
 protected:
  RunCliTest() : h_("run_cli") {
    std::string train;
    for (int i = 0; i < 24; ++i) {
      nlohmann::json chat = {
          {"messages",
           {{{"role", "user"}, {"content", std::to_string(i) + "+" + std::to_string(i)}},
            {{"role", "assistant"}, {"content", std::to_string(2 * i)}}}}};
      train += chat.dump() + "\n";
    }
    Write("train.jsonl", train);
    std::string heldout;
    for (int i = 0; i < 5; ++i) {
      heldout += nlohmann::json({{"id", "h" + std::to_string(i)},
                                 {"prompt", std::to_string(i + 30) + "+1"},
                                 {"answer", std::to_string(i + 31)}})
                     .dump() +
                 "\n";
    }
    Write("heldout.jsonl", heldout);
    Write("recipe.textproto", kRecipe);
  }
  void Write(const std::string& rel, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomically((h_.root() / rel).string(), text).ok());
  }
  std::string Path(const std::string& rel) const { return (h_.root() / rel).string(); }
  CliRun Run(const std::string& extra = "", const std::string& recipe = "recipe.textproto",
             const std::string& run_dir = "run") {
    return h_.Exec("run " + Path(recipe) + " -o " + Path(run_dir) + " --threads 2 " + extra);
  }
  nlohmann::json Manifest() {
    return nlohmann::json::parse(ReadFileToString(Path("run/manifest.json")).value_or("null"));
  }
  std::vector<std::string> Statuses() {
    std::vector<std::string> s;
    const nlohmann::json manifest = Manifest();
    for (const auto& st : manifest["stages"]) {
      s.push_back(st["name"].get<std::string>() + ":" + st["status"].get<std::string>());
    }
    return s;
  }

  CliHarness h_;
};

TEST_F(RunCliTest, RunsSkipsAndRerunsWhatAnInputChangeAffects) {
  CliRun first = Run();
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_THAT(Statuses(),
              ::testing::ElementsAre("init:done", "sft:done", "gguf:done", "eval_sft:done"));
  EXPECT_THAT(first.err, HasSubstr("[run] 2/4 sft (distill): running"));
  EXPECT_THAT(first.err, HasSubstr("[run] 4/4 eval_sft: done in"));
  EXPECT_THAT(first.out, HasSubstr("4 stage(s) run, 0 up to date"));

  // The run directory contract.
  EXPECT_EQ(*ReadFileToString(Path("run/recipe.textproto")), kRecipe);
  for (const char* f :
       {"init/final/config.json", "init/final/model.safetensors", "sft/final/model.safetensors",
        "sft/metrics.jsonl", "gguf/out.gguf", "eval_sft/result.json", "eval_sft/gen/summary.json",
        "sft/provenance.json", "sft/log.txt"}) {
    EXPECT_TRUE(fs::exists(Path("run/") + f)) << f;
  }
  nlohmann::json m = Manifest();
  EXPECT_EQ(m["recipe"]["name"], "tiny-run");
  EXPECT_EQ(m["status"], "done");
  EXPECT_THAT(m["retort_version"].get<std::string>(), HasSubstr("0."));
  const nlohmann::json& sft = m["stages"][1];
  EXPECT_EQ(sft["label"], "student, SFT");
  EXPECT_EQ(sft["settings"]["distill"]["max_steps"], 3);
  EXPECT_EQ(sft["metrics"]["steps"], 3);
  EXPECT_GT(sft["metrics"]["final_loss"].get<double>(), 0);
  EXPECT_GT(sft["metrics"]["model_bytes"].get<double>(), 0);
  EXPECT_EQ(sft["inputs"][0]["path"], "init/final");
  EXPECT_EQ(sft["outputs"][0]["path"], "sft/final");
  EXPECT_EQ(nlohmann::json::parse(*ReadFileToString(Path("run/sft/provenance.json"))), sft);
  EXPECT_THAT(*ReadFileToString(Path("run/sft/log.txt")), HasSubstr("retort distill"));

  nlohmann::json result =
      nlohmann::json::parse(*ReadFileToString(Path("run/eval_sft/result.json")));
  EXPECT_EQ(result["total"], 5);
  EXPECT_GE(result["accuracy"].get<double>(), 0.0);
  EXPECT_LE(result["accuracy"].get<double>(), 1.0);
  EXPECT_EQ(result["model"], "sft");
  EXPECT_EQ(result["model_bytes"], sft["metrics"]["model_bytes"]);
  EXPECT_GT(result["tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(m["stages"][3]["metrics"]["total"], 5);

  CliRun second = Run();
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_THAT(Statuses(), ::testing::ElementsAre("init:skipped", "sft:skipped", "gguf:skipped",
                                                 "eval_sft:skipped"));
  EXPECT_THAT(second.err, Not(HasSubstr("running")));
  EXPECT_THAT(second.out, HasSubstr("0 stage(s) run, 4 up to date"));

  // One more training example: the distill stage and everything after it
  // rerun, the init stage does not.
  std::string train = *ReadFileToString(Path("train.jsonl"));
  Write("train.jsonl", train +
                           R"({"messages":[{"role":"user","content":"7+8"},)"
                           R"({"role":"assistant","content":"15"}]})" +
                           "\n");
  CliRun third = Run();
  ASSERT_EQ(third.code, 0) << third.err;
  EXPECT_THAT(Statuses(),
              ::testing::ElementsAre("init:skipped", "sft:done", "gguf:done", "eval_sft:done"));
}

// A distill stage with ranks: 2 runs as an mpirun process group of this
// binary (`retort stage-job`, reading the stage from a file beside its
// folder); its output is the same kind of model directory.
TEST_F(RunCliTest, DistillStageWithRanksRunsUnderMpirun) {
  Write("mpi.textproto", R"pb(
    stage {
      name: "init"
      init { family: "llama" size: "tiny" seed: 1 }
    }
    stage {
      name: "sft"
      distill {
        student: "@init"
        data: "train.jsonl"
        max_steps: 2
        seq_len: 64
        batch_rows: 1
        ranks: 2
      }
    }
  )pb");
  CliRun r =
      h_.ExecWithPrefix("OMPI_MCA_rmaps_base_oversubscribe=1 ",
                        "run " + Path("mpi.textproto") + " -o " + Path("mpi") + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("[run] mpirun -np 2 retort stage-job "));
  EXPECT_TRUE(fs::exists(Path("mpi/sft/final/config.json")));
  EXPECT_FALSE(fs::exists(Path("mpi/.sft.partial.job.json")));  // removed once the ranks are done
  // The trainer ran as two MPI ranks.
  EXPECT_THAT(ReadFileToString(Path("mpi/sft/log.txt")).value_or(""), HasSubstr("mpi (2 ranks)"));
}

// The scale-out path in small: a generate stage whose teacher is an
// OpenAI-compatible endpoint (here `retort serve` with the bundled teacher)
// writes verified traces like a local one, and a rerun is up to date.
TEST_F(RunCliTest, GenerateStageWithAnEndpointTeacher) {
  const std::string teacher = std::string(RETORT_SOURCE_DIR_PATH) + "/models/arith-teacher";
  testing::ServeProcess server;
  std::string error;
  ASSERT_TRUE(server.Start({teacher, "--threads", "1"}, Path("serve.err"), &error)) << error;
  const std::string url = "http://" + server.host() + ":" + std::to_string(server.port()) + "/v1";
  std::string prompts;
  for (int i = 0; i < 4; ++i) {
    const int a = 12345 + 1111 * i, b = 54321 + 2222 * i;
    prompts += nlohmann::json(
                   {{"id", "p" + std::to_string(i)},
                    {"prompt", "What is " + std::to_string(a) + " + " + std::to_string(b) + "?"},
                    {"answer", std::to_string(a + b)}})
                   .dump() +
               "\n";
  }
  Write("arith.jsonl", prompts);
  // The recipe stays laid out as a user writes it.
  // clang-format off
  Write("endpoint.textproto", R"pb(
    stage {
      name: "traces"
      generate {
        model: ")pb" + teacher + R"pb("
        prompts: "arith.jsonl"
        endpoint: ")pb" + url + R"pb("
        temperature: 0
        max_tokens: 400
        verifier: "math"
        keep: "all"
      }
    }
  )pb");
  // clang-format on
  CliRun r = Run("", "endpoint.textproto", "endpoint");
  ASSERT_EQ(r.code, 0) << r.err << "\nserver: " << server.Stderr();
  const nlohmann::json summary =
      nlohmann::json::parse(ReadFileToString(Path("endpoint/traces/summary.json")).value_or("{}"));
  EXPECT_EQ(summary["verification"]["samples"], 4) << summary.dump();
  EXPECT_GE(summary["verification"]["correct"].get<int>(), 3) << summary.dump();  // 99.5% teacher
  r = Run("", "endpoint.textproto", "endpoint");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("0 stage(s) run, 1 up to date"));
}

TEST_F(RunCliTest, BadRecipeFailsWithTheLineAndWritesNothing) {
  Write("recipe.textproto",
        "name: \"bad\"\nstage {\n  name: \"init\"\n  init { sise: \"tiny\" }\n}\n");
  CliRun r = Run();
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("retort run: error: "));
  EXPECT_THAT(r.err, HasSubstr("recipe.textproto:4:"));
  EXPECT_THAT(r.err, HasSubstr("sise"));
  EXPECT_FALSE(fs::exists(Path("run")));

  Write("recipe.textproto",
        "stage { name: \"a\" convert { model: \"@b\" } }\nstage { name: \"b\" init {} }\n");
  r = Run();
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("does not run before it"));
  EXPECT_FALSE(fs::exists(Path("run")));

  CliRun usage = h_.Exec("run " + Path("recipe.textproto"));
  EXPECT_EQ(usage.code, 2);
}

TEST_F(RunCliTest, FailingStageStopsWithTheCommandsMessage) {
  std::string recipe = kRecipe;
  recipe.replace(recipe.find("seq_len: 64"), 11, "seq_len: 99999");
  Write("recipe.textproto", recipe);
  CliRun r = Run();
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("stage \"sft\" (distill) failed: retort distill: --seq-len 99999 "
                               "exceeds the student's context"));
  EXPECT_FALSE(fs::exists(Path("run/sft")));
  EXPECT_FALSE(fs::exists(Path("run/.sft.partial")));
  EXPECT_FALSE(fs::exists(Path("run/gguf")));
  EXPECT_TRUE(fs::exists(Path("run/init/provenance.json")));
  nlohmann::json m = Manifest();
  EXPECT_EQ(m["status"], "failed");
  EXPECT_EQ(m["stages"][1]["status"], "failed");
  EXPECT_THAT(m["stages"][1]["error"].get<std::string>(), HasSubstr("exceeds the student's"));
}

// Ctrl-C while a distill stage trains: the stage keeps its folder (the
// checkpoint the trainer saved) and is recorded as interrupted; the same
// command again resumes it from that checkpoint instead of step 1.
TEST_F(RunCliTest, CtrlCKeepsTheStageCheckpointAndTheRerunResumesIt) {
  Write("long.textproto", R"pb(
    stage {
      name: "init"
      init { family: "llama" size: "tiny" seed: 1 dtype: "f32" }
    }
    stage {
      name: "sft"
      distill { student: "@init" data: "train.jsonl" max_steps: 600 seq_len: 64 batch_rows: 1 }
    }
  )pb");
  std::vector<std::string> args = {h_.binary(), "run", Path("long.textproto"), "-o", Path("long"),
                                   "--threads", "1"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  auto steps = [&](const std::string& metrics) {
    const std::string text = ReadFileToString(metrics).value_or("");
    return std::count(text.begin(), text.end(), '\n');
  };
  const std::string partial_metrics = Path("long/.sft.partial/metrics.jsonl");
  for (int i = 0; i < 1200 && steps(partial_metrics) < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(steps(partial_metrics), 3) << "the stage did not start training";
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  bool checkpoint = false;
  for (const auto& e : fs::directory_iterator(Path("long/.sft.partial"))) {
    checkpoint |= e.path().filename().string().rfind("checkpoint-", 0) == 0;
  }
  EXPECT_TRUE(checkpoint) << "the interrupted stage's checkpoint is gone";
  EXPECT_FALSE(fs::exists(Path("long/sft")));
  const nlohmann::json m =
      nlohmann::json::parse(ReadFileToString(Path("long/manifest.json")).value_or("null"));
  EXPECT_EQ(m["status"], "interrupted");
  EXPECT_EQ(m["stages"][1]["status"], "interrupted");
  EXPECT_THAT(m["stages"][1]["error"].get<std::string>(), HasSubstr("run the same"));

  CliRun again = h_.Exec("run " + Path("long.textproto") + " -o " + Path("long") + " --threads 1");
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_THAT(again.err, HasSubstr("2/2 sft: resuming the interrupted run"));
  EXPECT_THAT(ReadFileToString(Path("long/sft/log.txt")).value_or(""), HasSubstr("resuming from "));
  EXPECT_TRUE(fs::exists(Path("long/sft/final/config.json")));
  EXPECT_FALSE(fs::exists(Path("long/.sft.partial")));
  EXPECT_FALSE(fs::exists(Path("long/.sft.partial.interrupted")));
}

TEST_F(RunCliTest, DryRunPrintsTheCommands) {
  CliRun r = Run("--dry-run");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1/4 init (init): would run: retort init {"));
  EXPECT_THAT(r.err, HasSubstr("\"max_steps\":3,\"lr\":0.003,\"seq_len\":64,\"batch_rows\":2"));
  EXPECT_THAT(r.err, HasSubstr("4/4 eval_sft (eval): would run (after sft): retort generate"));
  EXPECT_FALSE(fs::exists(Path("run")));
}

// The bundled recipes parse, validate and resolve their inputs (the tests run
// in the source tree).
TEST_F(RunCliTest, BundledRecipesDryRun) {
  for (const char* recipe : {"recipes/arith.textproto", "recipes/on_policy.textproto"}) {
    CliRun r = h_.Exec(std::string("run ") + recipe + " -o " + Path("bundled") + " --dry-run");
    ASSERT_EQ(r.code, 0) << recipe << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr("would run")) << recipe;
  }
  CliRun r = h_.Exec("run recipes/on_policy.textproto -o " + Path("bundled") + " --dry-run");
  EXPECT_THAT(r.err, HasSubstr("\"on_policy\":true"));
  EXPECT_THAT(r.err, HasSubstr("@on_policy/checkpoint-0000100"));
  EXPECT_FALSE(fs::exists(Path("bundled")));
}

}  // namespace
}  // namespace retort
