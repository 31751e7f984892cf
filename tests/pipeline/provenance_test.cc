#include "pipeline/provenance.h"

#include <unistd.h>

#include <filesystem>
#include <regex>

#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/recipe.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

StageRecord SampleRecord() {
  StageRecord r;
  r.name = "distill_traces";
  r.kind = "distill";
  r.status = "done";
  r.fingerprint = std::string(64, 'a');
  r.started = "2026-11-23T21:00:00Z";
  r.seconds = 93.25;
  r.settings = Json::parse(R"({"name":"distill_traces","distill":{"student":"@init","lr":0.001}})");
  r.inputs = {{"generate/traces.jsonl", std::string(64, 'b'), -1},
              {"/abs/student", std::string(64, 'c'), -1}};
  r.outputs = {{"distill_traces/final", std::string(64, 'd'), 3456789},
               {"distill_traces/metrics.jsonl", std::string(64, 'e'), 120}};
  r.metrics = Json::parse(R"({"final_loss":0.41,"eval_loss":0.45,"tokens_per_s":15000})");
  r.label = "student, distilled on traces";
  return r;
}

TEST(ProvenanceTest, StageRecordJsonHasTheContractFields) {
  Json j = SampleRecord().ToJson();
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_THAT(keys,
              ::testing::ElementsAre("name", "kind", "status", "fingerprint", "started", "seconds",
                                     "settings", "inputs", "outputs", "metrics", "label"));
  EXPECT_EQ(j["inputs"][0].dump(),
            R"({"path":"generate/traces.jsonl","sha256":")" + std::string(64, 'b') + R"("})");
  EXPECT_EQ(j["outputs"][0]["bytes"], 3456789);
  StageRecord failed = SampleRecord();
  failed.status = "failed";
  failed.error = "retort distill: boom";
  EXPECT_EQ(failed.ToJson()["error"], "retort distill: boom");
}

TEST(ProvenanceTest, ManifestRoundTripsThroughAFile) {
  Manifest m;
  m.recipe_name = "arith-r1-mini";
  m.recipe_path = "recipes/arith.textproto";
  m.recipe_sha256 = std::string(64, 'f');
  m.retort_version = "0.1.0 (git abc)";
  m.machine = "AMD EPYC 7B13 | cpu (avx2 sgemm, avx2 integer dots, 2 threads)";
  m.status = "done";
  m.stages = {SampleRecord(), SampleRecord()};
  m.stages[1].name = "second";
  m.stages[1].status = "failed";
  m.stages[1].error = "boom";
  const std::string path =
      (fs::temp_directory_path() / ("manifest_" + std::to_string(::getpid()) + ".json")).string();
  ASSERT_TRUE(WriteManifest(path, m).ok());
  absl::StatusOr<Manifest> back = ReadManifest(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), m.ToJson().dump());
  Json j = Json::parse(*ReadFileToString(path));
  EXPECT_EQ(j["recipe"]["name"], "arith-r1-mini");
  EXPECT_EQ(j["machine"], m.machine);
  EXPECT_EQ(j["stages"][0]["label"], "student, distilled on traces");
  fs::remove(path);

  ASSERT_TRUE(WriteProvenance(path, m.stages[0]).ok());
  absl::StatusOr<StageRecord> one = ReadProvenance(path);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->ToJson().dump(), m.stages[0].ToJson().dump());
  fs::remove(path);
}

TEST(ProvenanceTest, ReadingRefusesMalformedFilesWithTheirName) {
  const std::string path =
      (fs::temp_directory_path() / ("bad_" + std::to_string(::getpid()) + ".json")).string();
  ASSERT_TRUE(WriteFileAtomically(path, "[1,2]").ok());
  EXPECT_THAT(std::string(ReadManifest(path).status().message()), HasSubstr(path));
  ASSERT_TRUE(WriteFileAtomically(path, R"({"name": "x", "seconds": "slow"})").ok());
  EXPECT_THAT(std::string(ReadProvenance(path).status().message()),
              HasSubstr("\"seconds\" has the wrong type"));
  ASSERT_TRUE(WriteFileAtomically(path, R"({"stages": [{"name": "x", "inputs": 3}]})").ok());
  EXPECT_THAT(std::string(ReadManifest(path).status().message()), HasSubstr("stages[0]"));
  ASSERT_TRUE(WriteFileAtomically(path, "{not json").ok());
  EXPECT_FALSE(ReadManifest(path).ok());
  fs::remove(path);
  EXPECT_FALSE(ReadManifest(path).ok());
}

TEST(FingerprintTest, StableAndSensitiveToSettingsInputsAndVersion) {
  auto recipe = ParseRecipe(R"pb(
                              stage {
                                name: "i"
                                init {}
                              }
                              stage {
                                name: "d"
                                label: "one"
                                distill { student: "@i" data: "x.jsonl" lr: 0.001 }
                              }
                            )pb",
                            "r", RecipeSyntax::kText);
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  proto::Stage stage = recipe->stage(1);
  const std::vector<FileRecord> inputs = {{"i/final", std::string(64, '1'), -1},
                                          {"/x.jsonl", std::string(64, '2'), -1}};
  const std::string base = StageFingerprint("0.1.0", StageSettingsJson(stage, "cpu"), inputs);
  EXPECT_TRUE(std::regex_match(base, std::regex("[0-9a-f]{64}")));
  EXPECT_EQ(StageFingerprint("0.1.0", StageSettingsJson(stage, "cpu"), inputs), base);

  // The label is only a name for tables: it does not make a stage stale.
  proto::Stage relabeled = stage;
  relabeled.set_label("two");
  EXPECT_EQ(StageFingerprint("0.1.0", StageSettingsJson(relabeled, "cpu"), inputs), base);

  proto::Stage other_lr = stage;
  other_lr.mutable_distill()->set_lr(0.002f);
  EXPECT_NE(StageFingerprint("0.1.0", StageSettingsJson(other_lr, "cpu"), inputs), base);
  proto::Stage explicit_default = stage;
  explicit_default.mutable_distill()->set_max_steps(0);  // set, even to 0, is a setting
  EXPECT_NE(StageFingerprint("0.1.0", StageSettingsJson(explicit_default, "cpu"), inputs), base);
  proto::Stage extra = stage;
  extra.add_extra_args("--quiet");
  EXPECT_NE(StageFingerprint("0.1.0", StageSettingsJson(extra, "cpu"), inputs), base);

  std::vector<FileRecord> changed = inputs;
  changed[1].sha256[5] = '3';
  EXPECT_NE(StageFingerprint("0.1.0", StageSettingsJson(stage, "cpu"), changed), base);
  // Where an input lives is not part of it; what it holds is.
  std::vector<FileRecord> moved = inputs;
  moved[1].path = "/elsewhere/x.jsonl";
  EXPECT_EQ(StageFingerprint("0.1.0", StageSettingsJson(stage, "cpu"), moved), base);
  EXPECT_NE(StageFingerprint("0.2.0", StageSettingsJson(stage, "cpu"), inputs), base);
}

TEST(ProvenanceTest, UtcNowIsIso8601) {
  EXPECT_TRUE(std::regex_match(UtcNow(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
}

}  // namespace
}  // namespace retort::pipeline
