// RunStageJob: a recipe stage's typed fields and extra_args reach the job
// (checked in what the real jobs write for a tiny model), a setting given
// both ways is refused, and a multi-rank stage round-trips through its job
// file. The whole recipe through the CLI is tests/cli/run_cli_test.cc.
#include "pipeline/stage_job.h"

#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/substitute.h"
#include "core/file.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

proto::Stage StageOf(const std::string& text) {
  proto::Stage stage;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &stage)) << text;
  return stage;
}

class StageJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            absl::StrCat("stage_job_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  absl::Status Run(const proto::Stage& stage, const std::string& dir, int threads = 0) {
    out_.str("");
    fs::create_directories(root_ / dir);  // as the runner does
    absl::Status s = RunStageJob(stage, {(root_ / dir).string(), threads, "cpu"},
                                 {&out_, &err_, &NullProgress(), "test"});
    if (!s.ok()) err_ << s;
    return s;
  }
  nlohmann::json Json(const std::string& rel) {
    return nlohmann::json::parse(ReadFileToString((root_ / rel).string()).value_or("null"));
  }
  std::string Path(const std::string& rel) { return (root_ / rel).string(); }

  // A tiny llama written by an init stage: typed fields and extra_args both land.
  void Init() {
    ASSERT_TRUE(Run(StageOf(R"pb(name: "init"
                                 init { size: "tiny" seed: 3 rope_theta: 10000 layers: 2 }
                                 extra_args: "--dtype"
                                 extra_args: "f32")pb"),
                    "init")
                    .ok());
  }

  fs::path root_;
  std::ostringstream out_, err_;
};

TEST_F(StageJobTest, InitTakesTypedFieldsAndExtraArgs) {
  Init();
  EXPECT_THAT(out_.str(), HasSubstr("wrote " + Path("init/final") + ": LlamaForCausalLM"));
  EXPECT_THAT(out_.str(), HasSubstr("F32"));
  const nlohmann::json config = Json("init/final/config.json");
  EXPECT_EQ(config["rope_theta"], 10000);
  EXPECT_EQ(config["num_hidden_layers"], 2);
  EXPECT_EQ(config["torch_dtype"], "float32");
}

TEST_F(StageJobTest, ConvertQuantizeAndPruneWriteWhatTheStageSays) {
  Init();
  const std::string model = Path("init/final");
  ASSERT_TRUE(
      Run(StageOf(absl::Substitute("name: 'g' convert { model: '$0' type: 'q8_0' }", model)),
          "gguf")
          .ok());
  EXPECT_THAT(out_.str(), HasSubstr("wrote " + Path("gguf/out.gguf")));
  EXPECT_TRUE(fs::is_regular_file(Path("gguf/out.gguf")));

  ASSERT_TRUE(
      Run(StageOf(absl::Substitute("name: 'q' quantize { model: '$0' scheme: 'int4-g32' }", model)),
          "q")
          .ok());
  EXPECT_THAT(out_.str(), HasSubstr("int4-g32 rtn (compressed-tensors)"));
  const nlohmann::json q = Json("q/final/config.json")["quantization_config"];
  EXPECT_EQ(q["config_groups"]["group_0"]["weights"]["group_size"], 32);

  ASSERT_TRUE(
      Run(StageOf(absl::Substitute("name: 'p' prune { model: '$0' pattern: '2:4' }", model)), "p")
          .ok());
  EXPECT_THAT(out_.str(), HasSubstr("magnitude 2:4"));
  EXPECT_THAT(out_.str(), HasSubstr("2:4 holds"));
}

TEST_F(StageJobTest, SettingGivenTwiceOrUnknownIsAnOptionError) {
  absl::Status twice = Run(StageOf(R"pb(name: "i"
                                        init { size: "tiny" }
                                        extra_args: "--size"
                                        extra_args: "20m")pb"),
                           "twice");
  EXPECT_TRUE(IsOptionError(twice)) << twice;
  EXPECT_THAT(twice.message(), HasSubstr("--size is set by the stage and again in its extra_args"));
  absl::Status unknown = Run(StageOf(R"pb(name: "i"
                                          init { size: "tiny" }
                                          extra_args: "--no-such-option")pb"),
                             "unknown");
  EXPECT_TRUE(IsOptionError(unknown)) << unknown;
  EXPECT_THAT(unknown.message(), HasSubstr("no-such-option"));
  // A setting the job checks is refused before anything is written.
  absl::Status bad =
      Run(StageOf(R"pb(name: "q"
                       quantize { model: "m" scheme: "int4-g32" method: "gptq" })pb"),
          "bad");
  EXPECT_TRUE(IsOptionError(bad)) << bad;
  EXPECT_THAT(bad.message(), HasSubstr("gptq needs calibration data: --calib FILE"));
  EXPECT_TRUE(fs::is_empty(Path("bad")));
}

TEST_F(StageJobTest, DistillTrainsForTheStagesSteps) {
  Init();
  ASSERT_TRUE(WriteFileAtomically(Path("data.txt"),
                                  "one two three four five six seven eight\n\n"
                                  "nine ten eleven twelve thirteen fourteen\n")
                  .ok());
  ASSERT_TRUE(Run(StageOf(absl::Substitute(
                      "name: 'd' distill { student: '$0' data: '$1' max_steps: 2 seq_len: 16 "
                      "batch_rows: 1 eval_fraction: 0 } extra_args: '--quiet'",
                      Path("init/final"), Path("data.txt"))),
                  "d", /*threads=*/1)
                  .ok());
  EXPECT_TRUE(fs::is_directory(Path("d/final")));
  const std::string metrics = ReadFileToString(Path("d/metrics.jsonl")).value_or("");
  EXPECT_THAT(metrics, HasSubstr("\"step\":2"));
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("\"step\":3")));
}

TEST_F(StageJobTest, MultiRankStageRoundTripsThroughItsJobFile) {
  const proto::Stage stage = StageOf(R"pb(name: "d"
                                          distill { student: "/m" data: "/x.jsonl" ranks: 2 }
                                          extra_args: "--quiet")pb");
  const std::string file = Path("d.job.json");
  absl::StatusOr<std::vector<std::string>> launcher =
      StageLauncher(stage, {Path("d"), 3, "cpu"}, file);
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  EXPECT_THAT(*launcher, ElementsAre("mpirun", "-np", "2", "retort", "stage-job", file));
  auto back = ReadStageJobFile(file);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(back->first, stage));
  EXPECT_EQ(back->second.dir, Path("d"));
  EXPECT_EQ(back->second.threads, 3);
  // One rank, or another kind of stage: runs in this process.
  auto one = StageLauncher(StageOf(R"pb(name: "d"
                                        distill { student: "/m" data: "/x" })pb"),
                           {Path("d"), 0, "cpu"}, file);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(one->empty());
  ASSERT_TRUE(WriteFileAtomically(file, "{\"stage\": 1}").ok());
  EXPECT_FALSE(ReadStageJobFile(file).ok());
}

}  // namespace
}  // namespace retort::pipeline
