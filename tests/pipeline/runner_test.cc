// RunRecipe with a fake command runner: which stages run, which are skipped,
// what RUN_DIR holds afterwards. The real commands are exercised by
// tests/cli/run_cli_test.cc.
#include "pipeline/runner.h"

#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/recipe.h"
#include "pipeline/sha256.h"
#include "pipeline/stage_job.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// init -> sft (distill on data.jsonl) -> gguf (convert) -> eval.
const char kRecipe[] = R"pb(
  name: "fake"
  stage {
    name: "init"
    init { size: "tiny" }
  }
  stage {
    name: "sft"
    label: "student, SFT"
    distill { student: "@init" data: "data.jsonl" lr: 0.001 }
  }
  stage {
    name: "gguf"
    convert { model: "@sft" }
  }
  stage {
    name: "eval"
    eval { model: "@sft" prompts: "heldout.jsonl" }
  }
)pb";

// Stands in for the stages' jobs: writes what each would, as a deterministic
// function of its inputs' bytes and its settings.
class FakeCommands {
 public:
  absl::Status Run(const proto::Stage& stage, const StageContext& context,
                   const std::string& log_path) {
    const std::string command = StageCommandName(stage);
    calls.push_back(command);
    RETURN_IF_ERROR(WriteFileAtomically(
        log_path, absl::StrCat("device ", context.device, "\n", stage.ShortDebugString(), "\n")));
    for (const std::string& a : stage.extra_args()) {
      if (a == "--fail") return absl::UnknownError(absl::StrCat("retort ", command, ": boom"));
    }
    // The inputs' bytes and the settings decide the bytes written.
    const proto::Stage keyed = ResolveStageInputs(
        stage, [](const std::string& path) { return fs::exists(path) ? HashOf(path) : path; });
    const std::string digest = Sha256Hex(context.device + keyed.SerializeAsString());
    const fs::path dir = context.dir;
    if (stage.has_init()) {
      fs::create_directories(dir / "final");
      return WriteFileAtomically((dir / "final/model.safetensors").string(), digest);
    }
    if (stage.has_convert()) return WriteFileAtomically((dir / "out.gguf").string(), digest);
    if (stage.has_distill()) {
      fs::create_directories(dir / "final");
      fs::create_directories(dir / "checkpoint-0000004");
      RETURN_IF_ERROR(
          WriteFileAtomically((dir / "checkpoint-0000004/optimizer.bin").string(), "x"));
      RETURN_IF_ERROR(WriteFileAtomically((dir / "final/model.safetensors").string(), digest));
      return WriteFileAtomically((dir / "metrics.jsonl").string(),
                                 "{\"step\":1,\"loss\":2.5,\"tokens\":100,\"tokens_per_s\":50}\n"
                                 "{\"step\":2,\"loss\":1.5,\"tokens\":100,\"tokens_per_s\":60}\n"
                                 "{\"step\":2,\"eval_loss\":1.75}\n");
    }
    if (stage.has_eval()) {
      const fs::path out = dir / "gen";
      fs::create_directories(out);
      return WriteFileAtomically((out / "summary.json").string(), R"({"prompts": 5,
          "verification": {"samples": 5, "correct": 3, "accuracy": 0.6},
          "this_run": {"tokens_per_second": 100.0}})");
    }
    return absl::InvalidArgumentError(absl::StrCat("fake: no command ", command));
  }

  static std::string HashOf(const std::string& path) {
    absl::StatusOr<PathDigest> d = HashPath(path);
    return d.ok() ? d->sha256 : "";
  }

  std::vector<std::string> calls;
};

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            absl::StrCat("pipeline_runner_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "recipes");
    WriteRecipe(kRecipe);
    Write("recipes/data.jsonl", "{\"text\": \"one\"}\n");
    Write("recipes/heldout.jsonl", "{\"id\": \"1\", \"prompt\": \"1+1\", \"answer\": \"2\"}\n");
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& rel, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomically((root_ / rel).string(), text).ok());
  }
  void WriteRecipe(const std::string& text) { Write("recipes/r.textproto", text); }
  std::string run_dir() const { return (root_ / "run").string(); }

  absl::StatusOr<RunSummary> Run(const std::string& from = "", const std::string& only = "",
                                 bool force = false, bool dry_run = false) {
    fake_.calls.clear();
    progress_.str("");
    RunOptions o;
    o.recipe_path = (root_ / "recipes/r.textproto").string();
    o.run_dir = run_dir();
    o.from = from;
    o.only = only;
    o.force = force;
    o.dry_run = dry_run;
    o.retort_version = "test";
    o.progress = &progress_;
    o.run_stage = [this](const proto::Stage& stage, const StageContext& context,
                         const std::string& log) { return fake_.Run(stage, context, log); };
    o.check_device = check_device_;
    return RunRecipe(o);
  }

  Json ReadJson(const std::string& rel) {
    return Json::parse(ReadFileToString((root_ / rel).string()).value_or("null"));
  }
  std::vector<std::string> Statuses() {
    std::vector<std::string> s;
    const Json manifest = ReadJson("run/manifest.json");
    for (const Json& st : manifest["stages"]) {
      s.push_back(st["name"].get<std::string>() + ":" + st["status"].get<std::string>());
    }
    return s;
  }

  fs::path root_;
  FakeCommands fake_;
  std::ostringstream progress_;
  DeviceChecker check_device_;
};

TEST_F(RunnerTest, RunsEveryStageThenSkipsThemAll) {
  absl::StatusOr<RunSummary> first = Run();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->ran, 4);
  EXPECT_THAT(fake_.calls, ElementsAre("init", "distill", "convert", "generate"));
  EXPECT_THAT(Statuses(), ElementsAre("init:done", "sft:done", "gguf:done", "eval:done"));

  // RUN_DIR per the contract.
  EXPECT_EQ(*ReadFileToString(run_dir() + "/recipe.textproto"), kRecipe);
  Json m = ReadJson("run/manifest.json");
  EXPECT_EQ(m["recipe"]["name"], "fake");
  EXPECT_EQ(m["recipe"]["sha256"], Sha256Hex(kRecipe));
  EXPECT_EQ(m["retort_version"], "test");
  // The machine that ran it: the CPU and the kernel paths (SIMD).
  EXPECT_EQ(m["machine"], MachineDescription());
  EXPECT_NE(m["machine"].get<std::string>().find(" | cpu ("), std::string::npos) << m["machine"];
  EXPECT_EQ(m["status"], "done");
  const Json& sft = m["stages"][1];
  EXPECT_EQ(sft["kind"], "distill");
  EXPECT_EQ(sft["label"], "student, SFT");
  EXPECT_EQ(m["stages"][0]["label"], "init");
  EXPECT_EQ(sft["settings"]["distill"]["student"], "@init");
  ASSERT_EQ(sft["inputs"].size(), 2u);
  EXPECT_EQ(sft["inputs"][0]["path"], "init/final");
  EXPECT_EQ(sft["inputs"][0]["sha256"], FakeCommands::HashOf(run_dir() + "/init/final"));
  EXPECT_EQ(sft["inputs"][1]["path"], (root_ / "recipes/data.jsonl").string());
  // Checkpoints are dropped; log.txt and provenance.json are not outputs.
  EXPECT_FALSE(fs::exists(run_dir() + "/sft/checkpoint-0000004"));
  EXPECT_TRUE(fs::exists(run_dir() + "/sft/log.txt"));
  std::vector<std::string> outputs;
  for (const Json& o : sft["outputs"]) outputs.push_back(o["path"]);
  EXPECT_THAT(outputs, ElementsAre("sft/final", "sft/metrics.jsonl"));
  EXPECT_EQ(sft["outputs"][0]["sha256"], FakeCommands::HashOf(run_dir() + "/sft/final"));
  EXPECT_EQ(sft["metrics"]["final_loss"], 1.5);
  EXPECT_EQ(sft["metrics"]["eval_loss"], 1.75);
  EXPECT_EQ(sft["metrics"]["steps"], 2);
  EXPECT_EQ(sft["metrics"]["tokens"], 200);
  EXPECT_EQ(sft["metrics"]["model_bytes"], 64);
  EXPECT_EQ(ReadJson("run/sft/provenance.json"), sft);
  EXPECT_EQ(ReadJson("run/gguf/provenance.json")["outputs"][0]["path"], "gguf/out.gguf");

  Json result = ReadJson("run/eval/result.json");
  EXPECT_EQ(result["accuracy"], 0.6);
  EXPECT_EQ(result["correct"], 3);
  EXPECT_EQ(result["total"], 5);
  EXPECT_EQ(result["tokens_per_s"], 100.0);
  EXPECT_EQ(result["model_bytes"], 64);
  EXPECT_EQ(result["model"], "sft");
  EXPECT_EQ(m["stages"][3]["metrics"]["accuracy"], 0.6);
  EXPECT_FALSE(m["stages"][3]["metrics"].contains("model"));  // numbers only

  // No partial folders left behind.
  for (const auto& e : fs::directory_iterator(run_dir())) {
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  }
  EXPECT_THAT(progress_.str(), HasSubstr("4/4 eval: done in"));

  absl::StatusOr<RunSummary> second = Run();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(fake_.calls.empty());
  EXPECT_EQ(second->skipped, 4);
  EXPECT_THAT(Statuses(),
              ElementsAre("init:skipped", "sft:skipped", "gguf:skipped", "eval:skipped"));
  EXPECT_THAT(progress_.str(), HasSubstr("2/4 sft: skipped (up to date"));
  // A skipped stage keeps the record of the run that made its outputs.
  EXPECT_EQ(ReadJson("run/manifest.json")["stages"][1]["started"], sft["started"]);
  EXPECT_EQ(ReadJson("run/sft/provenance.json")["status"], "skipped");
}

// A distill stage that asks for checkpoints (save_every) keeps their models,
// without the resume-only state, and a later stage can evaluate one.
TEST_F(RunnerTest, SaveEveryKeepsTheCheckpointModelsForLaterStages) {
  WriteRecipe(R"pb(
    name: "fake"
    stage {
      name: "init"
      init { size: "tiny" }
    }
    stage {
      name: "sft"
      distill { student: "@init" data: "data.jsonl" save_every: 4 }
    }
    stage {
      name: "eval_4"
      eval { model: "@sft/checkpoint-0000004" prompts: "heldout.jsonl" }
    }
  )pb");
  absl::StatusOr<RunSummary> r = Run();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(fs::is_directory(run_dir() + "/sft/checkpoint-0000004"));
  EXPECT_FALSE(fs::exists(run_dir() + "/sft/checkpoint-0000004/optimizer.bin"));
  EXPECT_EQ(ReadJson("run/eval_4/result.json")["model"], "sft/checkpoint-0000004");
  EXPECT_THAT(Statuses(), ElementsAre("init:done", "sft:done", "eval_4:done"));
}

TEST_F(RunnerTest, ChangedInputFileRerunsTheStagesThatDependOnIt) {
  ASSERT_TRUE(Run().ok());
  Write("recipes/data.jsonl", "{\"text\": \"two\"}\n");
  ASSERT_TRUE(Run().ok());
  EXPECT_THAT(fake_.calls, ElementsAre("distill", "convert", "generate"));
  EXPECT_THAT(Statuses(), ElementsAre("init:skipped", "sft:done", "gguf:done", "eval:done"));

  Write("recipes/heldout.jsonl", "{\"id\": \"1\", \"prompt\": \"1+2\", \"answer\": \"3\"}\n");
  ASSERT_TRUE(Run().ok());
  EXPECT_THAT(fake_.calls, ElementsAre("generate"));
}

TEST_F(RunnerTest, ChangedSettingsRerunTheStageAndOnlyChangedOutputsPropagate) {
  ASSERT_TRUE(Run().ok());
  std::string text = kRecipe;
  text.replace(text.find("lr: 0.001"), 9, "lr: 0.002");
  WriteRecipe(text);
  ASSERT_TRUE(Run().ok());
  EXPECT_THAT(fake_.calls, ElementsAre("distill", "convert", "generate"));

  // A label is cosmetic.
  text.replace(text.find("student, SFT"), 12, "student SFT");
  WriteRecipe(text);
  ASSERT_TRUE(Run().ok());
  EXPECT_TRUE(fake_.calls.empty());
  EXPECT_EQ(ReadJson("run/manifest.json")["stages"][1]["label"], "student SFT");

  // A forced rerun that writes the same bytes leaves later stages up to date.
  ASSERT_TRUE(Run("", "init", /*force=*/true).ok());
  EXPECT_THAT(fake_.calls, ElementsAre("init"));
  ASSERT_TRUE(Run().ok());
  EXPECT_TRUE(fake_.calls.empty());
}

TEST_F(RunnerTest, DamagedOutputsRerunTheStage) {
  ASSERT_TRUE(Run().ok());
  Write("run/gguf/out.gguf", "tampered");
  ASSERT_TRUE(Run().ok());
  EXPECT_THAT(fake_.calls, ElementsAre("convert"));
  fs::remove_all(run_dir() + "/sft/final");
  ASSERT_TRUE(Run().ok());
  // The same bytes come back, so convert and eval are still up to date.
  EXPECT_THAT(fake_.calls, ElementsAre("distill"));
  fs::remove(run_dir() + "/init/provenance.json");
  ASSERT_TRUE(Run().ok());
  EXPECT_THAT(fake_.calls, ElementsAre("init"));
}

TEST_F(RunnerTest, FailingStageStopsTheRunAndLeavesNoFolder) {
  std::string text = kRecipe;
  text.replace(text.find("convert { model: \"@sft\" }"), 25,
               "convert { model: \"@sft\" } extra_args: \"--fail\"");
  WriteRecipe(text);
  absl::StatusOr<RunSummary> r = Run();
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("stage \"gguf\" (convert) failed: retort convert: boom"));
  EXPECT_THAT(fake_.calls, ElementsAre("init", "distill", "convert"));
  EXPECT_FALSE(fs::exists(run_dir() + "/gguf"));
  EXPECT_FALSE(fs::exists(run_dir() + "/.gguf.partial"));
  Json m = ReadJson("run/manifest.json");
  EXPECT_EQ(m["status"], "failed");
  ASSERT_EQ(m["stages"].size(), 3u);
  EXPECT_EQ(m["stages"][2]["status"], "failed");
  EXPECT_EQ(m["stages"][2]["error"], "retort convert: boom");
  EXPECT_THAT(progress_.str(), HasSubstr("3/4 gguf: failed"));

  // Fixed, the run resumes after the stages that succeeded.
  WriteRecipe(kRecipe);
  ASSERT_TRUE(Run().ok());
  EXPECT_THAT(fake_.calls, ElementsAre("convert", "generate"));
}

TEST_F(RunnerTest, BadRecipeOrMissingInputFailsBeforeTouchingRunDir) {
  WriteRecipe(
      "stage { name: \"a\" distill { student: \"@b\" data: \"x\" } }\n"
      "stage { name: \"b\" init {} }\n");
  absl::StatusOr<RunSummary> r = Run();
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("r.textproto:1: stage \"a\""));
  EXPECT_FALSE(fs::exists(run_dir()));

  std::string text = kRecipe;
  text.replace(text.find("data.jsonl"), 10, "missing.jsonl");
  WriteRecipe(text);
  r = Run();
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("missing.jsonl"));
  EXPECT_FALSE(fs::exists(run_dir()));
  EXPECT_TRUE(fake_.calls.empty());

  WriteRecipe(kRecipe);
  EXPECT_THAT(std::string(Run("nope").status().message()), HasSubstr("--from nope"));
  EXPECT_FALSE(fs::exists(run_dir()));
}

TEST_F(RunnerTest, DryRunWritesNothingAndTellsWhatWouldRun) {
  absl::StatusOr<RunSummary> r = Run("", "", false, /*dry_run=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(fs::exists(run_dir()));
  EXPECT_TRUE(fake_.calls.empty());
  EXPECT_THAT(progress_.str(), HasSubstr("1/4 init (init): would run: retort init"));
  EXPECT_THAT(progress_.str(), HasSubstr("2/4 sft (distill): would run (after init)"));
  ASSERT_TRUE(Run().ok());
  Write("recipes/data.jsonl", "changed\n");
  ASSERT_TRUE(Run("", "", false, true).ok());
  EXPECT_THAT(progress_.str(), HasSubstr("1/4 init (init): up to date"));
  EXPECT_THAT(progress_.str(), HasSubstr("2/4 sft (distill): would run: retort distill"));
  EXPECT_THAT(progress_.str(), HasSubstr("3/4 gguf (convert): would run (after sft)"));
  EXPECT_TRUE(fake_.calls.empty());
}

TEST_F(RunnerTest, FromAndOnlySelectStages) {
  ASSERT_TRUE(Run().ok());
  ASSERT_TRUE(Run("gguf", "", /*force=*/true).ok());
  EXPECT_THAT(fake_.calls, ElementsAre("convert", "generate"));
  EXPECT_THAT(Statuses(), ElementsAre("init:skipped", "sft:skipped", "gguf:done", "eval:done"));
  ASSERT_TRUE(Run("", "sft", /*force=*/true).ok());
  EXPECT_THAT(fake_.calls, ElementsAre("distill"));
  EXPECT_THAT(Statuses(), ElementsAre("init:skipped", "sft:done", "gguf:skipped", "eval:skipped"));
}

TEST_F(RunnerTest, OnlyALaterStageNeedsTheEarlierOutputs) {
  absl::StatusOr<RunSummary> r = Run("", "gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("@sft"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("has that stage run?"));
}

// The recipe's device reaches the commands that run a model as --device;
// a device this process cannot use stops the run before RUN_DIR exists.
TEST_F(RunnerTest, DeviceThatCannotBeUsedFailsBeforeAnyStageRuns) {
  std::vector<std::string> asked;
  check_device_ = [&](const std::string& device) {
    asked.push_back(device);
    return absl::FailedPreconditionError(
        "this retort was built without a cuda backend (compiled backends: cpu)");
  };
  std::string text = kRecipe;
  text.replace(text.find("name: \"fake\""), 12, "name: \"fake\"\n  device: \"cuda\"");
  WriteRecipe(text);
  absl::StatusOr<RunSummary> r = Run();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(std::string(r.status().message()),
            (root_ / "recipes/r.textproto").string() +
                ": device \"cuda\": this retort was built without a cuda backend (compiled "
                "backends: cpu)");
  EXPECT_THAT(asked, ElementsAre("cuda:0"));  // once, in DeviceName's spelling
  EXPECT_TRUE(fake_.calls.empty());
  EXPECT_FALSE(fs::exists(run_dir()));
  // A dry run is refused the same way.
  EXPECT_FALSE(Run("", "", false, /*dry_run=*/true).ok());

  // A stage's own device is named as the stage's; init and convert stages
  // run on the CPU whatever the recipe says, so --only those asks nothing.
  text = kRecipe;
  text.replace(text.find("label: \"student, SFT\""), 21,
               "label: \"student, SFT\" device: \"cuda:1\"");
  WriteRecipe(text);
  asked.clear();
  r = Run();
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("r.textproto: stage \"sft\" device \"cuda:1\": this retort was built"));
  EXPECT_THAT(asked, ElementsAre("cuda:1"));
  asked.clear();
  ASSERT_TRUE(Run("", "init").ok());
  EXPECT_TRUE(asked.empty());
  EXPECT_THAT(fake_.calls, ElementsAre("init"));
}

TEST_F(RunnerTest, CpuDeviceKeepsRunsUpToDateAndAGpuReruns) {
  std::vector<std::string> asked;
  check_device_ = [&](const std::string& device) {
    asked.push_back(device);
    return absl::OkStatus();
  };
  ASSERT_TRUE(Run().ok());
  const Json before = ReadJson("run/manifest.json");
  // Naming the CPU, for the recipe or a stage, changes no command and no
  // fingerprint: everything is up to date.
  std::string text = kRecipe;
  text.replace(text.find("name: \"fake\""), 12, "name: \"fake\"\n  device: \"cpu\"");
  text.replace(text.find("label: \"student, SFT\""), 21, "label: \"student, SFT\" device: \"cpu\"");
  WriteRecipe(text);
  ASSERT_TRUE(Run().ok());
  EXPECT_TRUE(fake_.calls.empty());
  EXPECT_TRUE(asked.empty());
  const Json after = ReadJson("run/manifest.json");
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(after["stages"][i]["fingerprint"], before["stages"][i]["fingerprint"]) << i;
    EXPECT_EQ(after["stages"][i]["settings"], before["stages"][i]["settings"]) << i;
  }

  // A GPU: the stages that run a model run on it and rerun (convert
  // reruns only because its input changed); init stays up to date.
  text = kRecipe;
  text.replace(text.find("name: \"fake\""), 12, "name: \"fake\"\n  device: \"cuda\"");
  WriteRecipe(text);
  ASSERT_TRUE(Run().ok());
  EXPECT_THAT(asked, ElementsAre("cuda:0"));
  EXPECT_THAT(fake_.calls, ElementsAre("distill", "convert", "generate"));
  const std::string sft_log = *ReadFileToString(run_dir() + "/sft/log.txt");
  EXPECT_THAT(sft_log, HasSubstr("device cuda:0"));
  EXPECT_THAT(*ReadFileToString(run_dir() + "/eval/log.txt"), HasSubstr("device cuda:0"));
  EXPECT_THAT(*ReadFileToString(run_dir() + "/gguf/log.txt"), ::testing::Not(HasSubstr("cuda")));
  const Json gpu = ReadJson("run/manifest.json");
  EXPECT_EQ(gpu["stages"][1]["settings"]["device"], "cuda:0");
  EXPECT_FALSE(gpu["stages"][2]["settings"].contains("device"));
  EXPECT_NE(gpu["stages"][1]["fingerprint"], before["stages"][1]["fingerprint"]);
  EXPECT_EQ(gpu["stages"][0]["fingerprint"], before["stages"][0]["fingerprint"]);

  // "cuda" and "cuda:0" are one device: still up to date.
  text.replace(text.find("device: \"cuda\""), 14, "device: \"cuda:0\"");
  WriteRecipe(text);
  ASSERT_TRUE(Run().ok());
  EXPECT_TRUE(fake_.calls.empty());
}

}  // namespace
}  // namespace retort::pipeline
