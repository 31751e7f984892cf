#include "report/report_page.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "report/run_dir.h"
#include "tests/report/run_fixture.h"

namespace retort::report {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunFixtureOptions;
using testing::WriteRunFixture;

int Count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

// The text between the element with id="ID" and the end of its section.
std::string Section(const std::string& html, const std::string& id) {
  const size_t begin = html.find("id=\"" + id + "\"");
  if (begin == std::string::npos) return "";
  const size_t end = html.find("</section>", begin);
  return html.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

class ReportPageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("report_page_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string Page(const RunFixtureOptions& opt = {}) {
    WriteRunFixture(root_ / "run", opt);
    absl::StatusOr<RunInfo> run = LoadRunDir((root_ / "run").string());
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? BuildReportPage(*run) : "";
  }

  fs::path root_;
};

TEST_F(ReportPageTest, LoadsTheContract) {
  WriteRunFixture(root_ / "run");
  absl::StatusOr<RunInfo> run = LoadRunDir((root_ / "run").string());
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->recipe_name, "arith-r1-mini");
  EXPECT_EQ(run->recipe_path, "recipes/arith.textproto");
  EXPECT_EQ(run->retort_version, "0.1.0 (test)");
  EXPECT_EQ(run->status, "done");
  ASSERT_TRUE(run->recipe_text.has_value());
  ASSERT_EQ(run->stages.size(), 10u);
  EXPECT_EQ(run->StartTime(), "2026-11-23T20:58:00Z");
  const StageInfo& traces = run->stages[2];
  EXPECT_EQ(traces.name, "distill_traces");
  EXPECT_EQ(traces.label, testing::kEvilLabel);
  ASSERT_TRUE(traces.curves.has_value());
  EXPECT_EQ(traces.curves->loss.size(), 20u);
  EXPECT_EQ(traces.curves->eval_steps, (std::vector<double>{10, 20}));
  EXPECT_EQ(traces.OutputBytes(), 3456789);
  // eval_int4 has its numbers only in result.json.
  const StageInfo& int4 = run->stages.back();
  EXPECT_EQ(int4.name, "eval_int4");
  EXPECT_EQ(int4.Metric("accuracy"), 0.78);
  EXPECT_EQ(int4.Metric("model_bytes"), 987654);
  EXPECT_EQ(int4.model, "quantize_int4");
  EXPECT_TRUE(run->notes.empty()) << run->notes.front();
}

TEST_F(ReportPageTest, AllSectionsAndCharts) {
  const std::string html = Page();
  for (const char* id : {"run", "loss", "accuracy", "tradeoff", "stages", "config"}) {
    EXPECT_THAT(html, HasSubstr(std::string("id=\"") + id + "\"")) << id;
  }
  EXPECT_THAT(html, Not(HasSubstr("id=\"notes\"")));  // nothing is missing
  EXPECT_THAT(html, HasSubstr("<h1>retort report: arith-r1-mini</h1>"));
  EXPECT_THAT(html, HasSubstr("0.1.0 (test)"));
  EXPECT_THAT(html, HasSubstr("AMD EPYC 7B13 | cpu (avx2 sgemm, 2 threads)"));
  EXPECT_THAT(html, HasSubstr("2026-11-23T20:58:00Z"));
  EXPECT_EQ(Count(html, "<svg "), 3);

  const std::string loss = Section(html, "loss");
  EXPECT_EQ(Count(loss, "<polyline class=\"series\""), testing::kFixtureDistillStages);
  EXPECT_EQ(Count(loss, "<circle class=\"point\""),
            testing::kFixtureDistillStages * testing::kFixtureEvalPointsPerStage);
  EXPECT_THAT(loss, HasSubstr("<title>student, answers only: eval loss</title>"));
  EXPECT_EQ(Count(loss, "class=\"legend-label\""), testing::kFixtureDistillStages);
  EXPECT_THAT(loss, HasSubstr("dots: eval loss"));

  const std::string acc = Section(html, "accuracy");
  EXPECT_EQ(Count(acc, "<rect class=\"bar\""), testing::kFixtureEvalStages);
  EXPECT_THAT(acc, HasSubstr(">teacher<title>"));
  EXPECT_THAT(acc, HasSubstr(">0.97</text>"));

  const std::string trade = Section(html, "tradeoff");
  EXPECT_EQ(Count(trade, "<circle class=\"point\""), testing::kFixtureEvalStages);
  EXPECT_EQ(Count(trade, "class=\"point-label\""), testing::kFixtureEvalStages);
  // 987654 .. 8.4e6 spans less than 10x: a linear size axis.
  EXPECT_THAT(trade, HasSubstr(">model size</text>"));

  const std::string stages = Section(html, "stages");
  EXPECT_EQ(Count(stages, "<tr class=\"stage\">"), 10);
  EXPECT_THAT(stages, HasSubstr("accuracy = 0.81"));
  EXPECT_THAT(stages, HasSubstr("3.46 MB"));
  EXPECT_THAT(stages, HasSubstr("class=\"status-skipped nowrap\""));

  const std::string config = Section(html, "config");
  EXPECT_THAT(config, HasSubstr("name: &quot;arith-r1-mini&quot;"));
  EXPECT_THAT(config, HasSubstr("&lt;b&gt;markup&lt;/b&gt; &amp; an ampersand"));
  EXPECT_EQ(Count(config, "<details class=\"stage-settings\""), 10);
  EXPECT_THAT(config, HasSubstr("&quot;group_size&quot;: 64"));
}

TEST_F(ReportPageTest, OnPolicyStagesGetTheirDivergenceAndAccuracyCharts) {
  EXPECT_THAT(Page(), Not(HasSubstr("id=\"on-policy\"")));  // no on-policy stage
  // An on-policy stage's lines: steps 1 and 3 on-policy (with a verifier),
  // step 2 off-policy (GKD's lambda mix).
  WriteRunFixture(root_ / "run", {});
  std::string lines;
  for (int step = 1; step <= 3; ++step) {
    lines += "{\"step\":" + std::to_string(step) + ",\"loss\":1.5,\"on_policy_batches\":" +
             (step == 2 ? "0" : "1,\"reverse_kl\":0.9,\"sampled_accuracy\":0.25") + "}\n";
  }
  ASSERT_TRUE(
      WriteFileAtomically((root_ / "run" / "distill_traces" / "metrics.jsonl").string(), lines)
          .ok());
  absl::StatusOr<RunInfo> run = LoadRunDir((root_ / "run").string());
  ASSERT_TRUE(run.ok()) << run.status();
  const std::string html = BuildReportPage(*run);
  const std::string section = Section(html, "on-policy");
  EXPECT_THAT(section, HasSubstr("on-policy-kd-chart"));
  EXPECT_THAT(section, HasSubstr("on-policy-accuracy-chart"));
  EXPECT_EQ(Count(section, "<circle class=\"point\""), 2);  // the two on-policy steps
}

TEST_F(ReportPageTest, LabelsAndSettingsCannotInjectMarkup) {
  const std::string html = Page();
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("<img")));
  EXPECT_THAT(html, Not(HasSubstr("</pre><")));
  EXPECT_THAT(html, HasSubstr("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"
                              "&quot;&gt;&lt;img src=x onerror=alert(1)&gt; &amp; co"));
  EXPECT_THAT(html, HasSubstr("&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;"));
  // And nothing could run anyway.
  EXPECT_THAT(html, HasSubstr("content=\"default-src 'none'; style-src 'unsafe-inline'"));
}

TEST_F(ReportPageTest, SameRunSameBytes) {
  const std::string a = Page();
  const std::string b = Page();
  EXPECT_EQ(a, b);
}

TEST_F(ReportPageTest, PartialRunSaysWhatIsMissing) {
  RunFixtureOptions opt;
  opt.failed_stage = true;
  opt.drop_metrics_jsonl = true;
  const std::string html = Page(opt);
  const std::string notes = Section(html, "notes");
  ASSERT_FALSE(notes.empty());
  EXPECT_THAT(notes,
              HasSubstr("stage &quot;eval_int4&quot; failed: quantize_int4/final: no such file"));
  EXPECT_THAT(notes, HasSubstr("distill stage &quot;distill_answers&quot; has no metrics.jsonl"));
  EXPECT_THAT(html, HasSubstr("class=\"status-failed nowrap\""));
  // One loss curve left; the failed eval stage has an n/a bar and no point.
  EXPECT_EQ(Count(Section(html, "loss"), "<polyline class=\"series\""), 1);
  EXPECT_EQ(Count(Section(html, "accuracy"), "<rect class=\"bar\""), 4);
  EXPECT_THAT(Section(html, "accuracy"), HasSubstr(">n/a</text>"));
  EXPECT_EQ(Count(Section(html, "tradeoff"), "<circle class=\"point\""), 4);
}

TEST_F(ReportPageTest, NoEvalStage) {
  RunFixtureOptions opt;
  opt.no_eval = true;
  const std::string html = Page(opt);
  EXPECT_THAT(Section(html, "notes"), HasSubstr("the run has no eval stage"));
  EXPECT_THAT(Section(html, "accuracy"), HasSubstr("class=\"no-data\""));
  EXPECT_THAT(Section(html, "tradeoff"), HasSubstr("class=\"no-data\""));
  EXPECT_EQ(Count(Section(html, "loss"), "<polyline class=\"series\""), 2);
}

TEST_F(ReportPageTest, ManifestOnlyRun) {
  // A run that has just started: a manifest with no stages, nothing else.
  testing::WriteText(
      root_ / "run" / "manifest.json",
      R"({"recipe": {"name": "fresh"}, "retort_version": "0.1", "status": "running", "stages": []})");
  absl::StatusOr<RunInfo> run = LoadRunDir((root_ / "run").string());
  ASSERT_TRUE(run.ok()) << run.status();
  const std::string html = BuildReportPage(*run);
  const std::string notes = Section(html, "notes");
  EXPECT_THAT(notes, HasSubstr("no recipe.textproto in"));
  EXPECT_THAT(notes, HasSubstr("manifest.json lists no stages yet"));
  EXPECT_THAT(notes, HasSubstr("the run has not finished"));
  EXPECT_THAT(html, HasSubstr("<span class=\"status-other\">running</span>"));
  EXPECT_EQ(Count(html, "class=\"no-data\""), 3);
  EXPECT_THAT(html, HasSubstr("recipe.textproto is missing"));
}

TEST_F(ReportPageTest, DamagedFilesAreNotedNotFatal) {
  WriteRunFixture(root_ / "run");
  // A truncated last line (a run killed mid-write) and a broken result.json.
  {
    std::ofstream f(root_ / "run" / "distill_traces" / "metrics.jsonl", std::ios::app);
    f << "{\"step\": 21, \"loss\": 0.";
  }
  testing::WriteText(root_ / "run" / "eval_int4" / "result.json", "{not json");
  absl::StatusOr<RunInfo> run = LoadRunDir((root_ / "run").string());
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_GE(run->notes.size(), 2u);
  EXPECT_THAT(run->notes[0],
              HasSubstr("metrics.jsonl: 1 unreadable line skipped (first: line 23)"));
  EXPECT_THAT(run->notes[1], HasSubstr("result.json is not a JSON object"));
  EXPECT_EQ(run->stages[2].curves->loss.size(), 20u);
}

TEST_F(ReportPageTest, NoManifestIsAnErrorNamingThePath) {
  fs::create_directories(root_ / "empty");
  absl::StatusOr<RunInfo> run = LoadRunDir((root_ / "empty").string());
  ASSERT_FALSE(run.ok());
  EXPECT_THAT(std::string(run.status().message()),
              HasSubstr((root_ / "empty" / "manifest.json").string()));

  absl::StatusOr<RunInfo> none = LoadRunDir((root_ / "nowhere").string());
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr((root_ / "nowhere").string()));

  testing::WriteText(root_ / "bad" / "manifest.json", "{\"stages\": [");
  absl::StatusOr<RunInfo> bad = LoadRunDir((root_ / "bad").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr((root_ / "bad" / "manifest.json").string()));

  testing::WriteText(root_ / "bad2" / "manifest.json", "{\"stages\": {\"a\": 1}}");
  absl::StatusOr<RunInfo> bad2 = LoadRunDir((root_ / "bad2").string());
  ASSERT_FALSE(bad2.ok());
  EXPECT_THAT(std::string(bad2.status().message()), HasSubstr("\"stages\" is not a list"));
}

TEST_F(ReportPageTest, WriteReportDefaultsIntoTheRunDir) {
  WriteRunFixture(root_ / "run");
  absl::StatusOr<ReportResult> r = WriteReport((root_ / "run").string(), "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->path, (root_ / "run" / "report.html").string());
  absl::StatusOr<std::string> text = ReadFileToString(r->path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->size(), r->bytes);
  EXPECT_THAT(*text, HasSubstr("</html>"));

  // No manifest: nothing is written.
  fs::create_directories(root_ / "empty");
  const fs::path out = root_ / "out.html";
  EXPECT_FALSE(WriteReport((root_ / "empty").string(), out.string()).ok());
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace retort::report
