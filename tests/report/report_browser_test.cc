// End to end: `retort report` on a synthetic run directory, then headless
// Chromium loads the page and we check what it rendered.
//
// Chromium comes from the Debian package `chromium` (scripts/setup.sh) and is
// found on PATH. Without it these tests FAIL, unless RETORT_NO_BROWSER=1 is set
// explicitly, which skips them.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_split.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"
#include "tests/report/run_fixture.h"

namespace retort::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

int Count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

// The chromium executable on PATH, or "" when there is none.
std::string FindChromium() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    const fs::path candidate = fs::path(std::string(dir)) / "chromium";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

struct BrowserRun {
  int code = -1;
  std::string out, err;
};

class ReportBrowserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = FindChromium();
    if (chromium_.empty()) {
      const char* no_browser = std::getenv("RETORT_NO_BROWSER");
      if (no_browser != nullptr && std::string(no_browser) == "1") {
        GTEST_SKIP() << "RETORT_NO_BROWSER=1: headless Chromium checks skipped";
      }
      FAIL() << "chromium is not on PATH: install the Debian package `chromium` "
                "(scripts/setup.sh does), or set RETORT_NO_BROWSER=1 to skip the browser checks";
    }
  }

  // chromium --headless ARGS file://PAGE, stdout and stderr captured.
  BrowserRun Chromium(const std::string& args, const fs::path& page) {
    const fs::path out = harness_.root() / ("chromium_out" + std::to_string(n_));
    const fs::path err = harness_.root() / ("chromium_err" + std::to_string(n_));
    const fs::path profile = harness_.root() / ("profile" + std::to_string(n_++));
    const std::string cmd = "timeout 120 " + chromium_ +
                            " --headless --no-sandbox --disable-gpu --no-first-run"
                            " --disable-dev-shm-usage --enable-logging=stderr --v=0"
                            " --user-data-dir=" +
                            profile.string() + " " + args + " 'file://" +
                            fs::absolute(page).string() + "' >" + out.string() + " 2>" +
                            err.string();
    const int status = std::system(cmd.c_str());
    BrowserRun r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadFileToString(out.string()).value_or("");
    r.err = ReadFileToString(err.string()).value_or("");
    return r;
  }

  // A run directory and its page, written by the CLI.
  fs::path MakePage(const RunFixtureOptions& opt = {}) {
    const fs::path run = harness_.root() / ("run" + std::to_string(n_++));
    WriteRunFixture(run, opt);
    const CliRun r = harness_.Exec("report " + run.string());
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("wrote " + (run / "report.html").string()));
    return run / "report.html";
  }

  CliHarness harness_{"report_browser_test"};
  std::string chromium_;
  int n_ = 0;
};

// Lines of Chromium's log that report a problem with the page itself: a
// console message (script error, CSP violation) or a failed load. (Its dbus
// and GPU chatter in a container is not about the page.)
std::vector<std::string> PageErrors(const std::string& log) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (line.find("CONSOLE") != absl::string_view::npos ||
        line.find("Refused to") != absl::string_view::npos ||
        line.find("ERR_FILE_NOT_FOUND") != absl::string_view::npos ||
        line.find("Uncaught") != absl::string_view::npos) {
      out.emplace_back(line);
    }
  }
  return out;
}

// The error check above must see errors when there are some: a page with a
// script error and a load its CSP blocks.
TEST_F(ReportBrowserTest, PageErrorsAreSeen) {
  const fs::path page = harness_.root() / "broken.html";
  ASSERT_TRUE(
      WriteFileAtomically(page.string(),
                          "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                          "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
                          "<img src=\"http://192.0.2.1/x.png\"><script>no_such_function()</script>"
                          "</body></html>")
          .ok());
  const BrowserRun r = Chromium("--dump-dom", page);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> errors = PageErrors(r.err);
  EXPECT_THAT(errors, ::testing::Contains(HasSubstr("no_such_function")));
  EXPECT_THAT(errors, ::testing::Contains(HasSubstr("Content Security Policy")));
}

TEST_F(ReportBrowserTest, DumpDomHasTheChartsAndNoError) {
  const fs::path page = MakePage();
  const BrowserRun r = Chromium("--dump-dom", page);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string& dom = r.out;
  ASSERT_THAT(dom, HasSubstr("</html>")) << r.err;
  EXPECT_THAT(PageErrors(r.err), ::testing::IsEmpty());
  // The parser put three SVG charts with their marks into the document.
  EXPECT_EQ(Count(dom, "<svg "), 3);
  EXPECT_EQ(Count(dom, "<polyline class=\"series\""), kFixtureDistillStages);
  EXPECT_EQ(Count(dom, "<circle class=\"point\""),
            kFixtureDistillStages * kFixtureEvalPointsPerStage + kFixtureEvalStages);
  EXPECT_EQ(Count(dom, "<rect class=\"bar\""), kFixtureEvalStages);
  // The injected label stayed text: no script or img element, title unchanged.
  EXPECT_THAT(dom, Not(HasSubstr("<script")));
  EXPECT_THAT(dom, Not(HasSubstr("<img")));
  EXPECT_THAT(dom, HasSubstr("<title>retort report: arith-r1-mini</title>"));
  EXPECT_THAT(dom, HasSubstr("&lt;script&gt;document.title='pwned'&lt;/script&gt;"));
}

// A probe script measures the rendered SVG (layout boxes, namespaces) and
// writes its findings into the DOM. It runs on a copy of the page without the
// Content-Security-Policy (which forbids every script, the probe included).
constexpr char kProbe[] = R"js(
<script>
(function () {
  const errors = [];
  window.addEventListener('error', (e) => errors.push(String(e.message)));
  const result = { charts: {}, scripts: document.querySelectorAll('script').length, errors };
  for (const svg of document.querySelectorAll('svg.chart')) {
    const vb = svg.viewBox.baseVal;
    const marks = svg.querySelectorAll('polyline.series, circle.point, rect.bar');
    let inside = 0, visible = 0;
    for (const m of marks) {
      const b = m.getBBox();
      if (b.width > 0 || b.height > 0) visible++;
      if (b.x >= vb.x - 0.5 && b.y >= vb.y - 0.5 && b.x + b.width <= vb.x + vb.width + 0.5 &&
          b.y + b.height <= vb.y + vb.height + 0.5) inside++;
    }
    const box = svg.getBoundingClientRect();
    result.charts[svg.id] = {
      svg_namespace: svg.namespaceURI === 'http://www.w3.org/2000/svg',
      polylines: svg.querySelectorAll('polyline.series').length,
      circles: svg.querySelectorAll('circle.point').length,
      bars: svg.querySelectorAll('rect.bar').length,
      marks: marks.length, visible, inside,
      rendered_width: Math.round(box.width), rendered_height: Math.round(box.height),
      texts: svg.querySelectorAll('text').length,
    };
  }
  result.sections = ['run', 'loss', 'accuracy', 'tradeoff', 'stages', 'config']
      .filter((id) => document.getElementById(id) !== null).length;
  result.table_rows = document.querySelectorAll('table.stages tbody tr').length;
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
})();
</script>
)js";

TEST_F(ReportBrowserTest, RenderedChartsHaveVisibleMarks) {
  const fs::path page = MakePage();
  absl::StatusOr<std::string> html = ReadFileToString(page.string());
  ASSERT_TRUE(html.ok());
  const std::string csp_start = "<meta http-equiv=\"Content-Security-Policy\"";
  const size_t csp = html->find(csp_start);
  ASSERT_NE(csp, std::string::npos);
  std::string probed = html->substr(0, csp) + html->substr(html->find('>', csp) + 1);
  const size_t body_end = probed.rfind("</body>");
  ASSERT_NE(body_end, std::string::npos);
  probed.insert(body_end, kProbe);
  const fs::path probe_page = page.parent_path() / "probe.html";
  ASSERT_TRUE(WriteFileAtomically(probe_page.string(), probed).ok());

  const BrowserRun r = Chromium("--dump-dom", probe_page);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(PageErrors(r.err), ::testing::IsEmpty());
  const std::string open = "<pre id=\"probe\">";
  const size_t begin = r.out.find(open);
  ASSERT_NE(begin, std::string::npos) << "the probe did not run:\n" << r.out.substr(0, 2000);
  const size_t end = r.out.find("</pre>", begin);
  std::string text = r.out.substr(begin + open.size(), end - begin - open.size());
  // Serialised text content escapes &, < and >; the JSON has none of them unescaped.
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}}) {
    for (size_t p = text.find(from); p != std::string::npos; p = text.find(from, p + 1)) {
      text.replace(p, from.size(), to);
    }
  }
  const nlohmann::json probe = nlohmann::json::parse(text, nullptr, false);
  ASSERT_TRUE(probe.is_object()) << text;
  SCOPED_TRACE(probe.dump(2));
  EXPECT_EQ(probe["errors"].size(), 0u);
  EXPECT_EQ(probe["scripts"], 1);  // the probe itself
  EXPECT_EQ(probe["sections"], 6);
  EXPECT_EQ(probe["table_rows"], 10);
  ASSERT_EQ(probe["charts"].size(), 3u);
  const nlohmann::json& loss = probe["charts"]["loss-chart"];
  const nlohmann::json& acc = probe["charts"]["accuracy-chart"];
  const nlohmann::json& trade = probe["charts"]["tradeoff-chart"];
  EXPECT_EQ(loss["polylines"], kFixtureDistillStages);
  EXPECT_EQ(loss["circles"], kFixtureDistillStages * kFixtureEvalPointsPerStage);
  EXPECT_EQ(acc["bars"], kFixtureEvalStages);
  EXPECT_EQ(trade["circles"], kFixtureEvalStages);
  for (const nlohmann::json* chart : {&loss, &acc, &trade}) {
    EXPECT_TRUE((*chart)["svg_namespace"].get<bool>());
    EXPECT_GT((*chart)["marks"].get<int>(), 0);
    // Every mark has a layout box, inside its chart's view box.
    EXPECT_EQ((*chart)["visible"], (*chart)["marks"]);
    EXPECT_EQ((*chart)["inside"], (*chart)["marks"]);
    EXPECT_GT((*chart)["rendered_width"].get<int>(), 300);
    EXPECT_GT((*chart)["rendered_height"].get<int>(), 100);
    EXPECT_GT((*chart)["texts"].get<int>(), 5);
  }
}

TEST_F(ReportBrowserTest, ScreenshotOfAPartialRun) {
  RunFixtureOptions opt;
  opt.failed_stage = true;
  opt.drop_metrics_jsonl = true;
  const fs::path page = MakePage(opt);
  const fs::path png = harness_.root() / "report.png";
  const BrowserRun r =
      Chromium("--hide-scrollbars --window-size=1000,3000 --screenshot=" + png.string(), page);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(PageErrors(r.err), ::testing::IsEmpty());
  absl::StatusOr<std::string> bytes = ReadFileToString(png.string());
  ASSERT_TRUE(bytes.ok()) << "no screenshot: " << r.err;
  ASSERT_GT(bytes->size(), 8u);
  EXPECT_EQ(bytes->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // A blank page compresses to a few kB; charts, tables and text do not.
  EXPECT_GT(bytes->size(), 40000u);
  // Keep it for a human to look at when asked to.
  if (const char* keep = std::getenv("RETORT_REPORT_SCREENSHOT")) {
    fs::copy_file(png, keep, fs::copy_options::overwrite_existing);
  }
}

// The CLI without a browser: errors and -o.
TEST(ReportCliTest, ErrorsNameThePathAndOutputGoesWhereAsked) {
  CliHarness harness("report_cli_test");
  const fs::path empty = harness.root() / "not_a_run";
  fs::create_directories(empty);
  const CliRun r = harness.Exec("report " + empty.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr((empty / "manifest.json").string()));
  EXPECT_FALSE(fs::exists(empty / "report.html"));
  EXPECT_EQ(harness.Exec("report").code, 2);  // RUN_DIR is required

  const fs::path run = harness.root() / "run_o";
  WriteRunFixture(run);
  const fs::path out = harness.root() / "elsewhere.html";
  const CliRun o = harness.Exec("report " + run.string() + " -o " + out.string());
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_TRUE(fs::exists(out));
  EXPECT_FALSE(fs::exists(run / "report.html"));
}

}  // namespace
}  // namespace retort::testing
