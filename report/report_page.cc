#include "report/report_page.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/status.h"
#include "report/escape.h"
#include "report/svg_chart.h"

namespace retort::report {
namespace {

constexpr int kChartWidth = 920;

constexpr const char kStyle[] = R"css(
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 960px; padding: 16px 20px 48px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #666; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.85em; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 8px 10px; overflow-x: auto;
      white-space: pre-wrap; overflow-wrap: anywhere; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 8px 0; }
.notes { background: #fff8e1; border: 1px solid #f0d48a; padding: 6px 14px; }
.notes li { margin: 2px 0; }
table.stages { border-collapse: collapse; width: 100%; font-size: 0.88em; }
table.stages th, table.stages td { border: 1px solid #ddd; padding: 4px 6px; text-align: left;
                                   vertical-align: top; overflow-wrap: break-word; }
table.stages td.metrics { font-size: 0.92em; }
.metric { white-space: nowrap; }
.table-wrap { overflow-x: auto; }
table.stages td.label { min-width: 8em; max-width: 16em; }
.notes h2 { margin-top: 0.5em; }
td.nowrap { white-space: nowrap; }
table.stages th { background: #f3f3f3; }
td.num { text-align: right; white-space: nowrap; }
.status-done { color: #1a7f37; }
.status-skipped { color: #6e7781; }
.status-failed { color: #cf222e; font-weight: bold; }
.status-other { color: #9a6700; }
.empty { color: #888; font-style: italic; }
details { margin: 6px 0 12px; }
.stage-settings p, .stage-settings ul { margin: 4px 0; font-size: 0.9em; color: #444; }
summary { cursor: pointer; }
)css";

std::string E(const std::string& s) { return EscapeHtml(s); }

std::string StatusClass(const std::string& status) {
  if (status == "done" || status == "skipped" || status == "failed") return "status-" + status;
  return "status-other";
}

// Metrics in a fixed order of interest, the rest alphabetically.
std::vector<std::pair<std::string, double>> OrderedMetrics(const StageInfo& s) {
  static const std::vector<std::string> kFirst = {
      "accuracy", "correct", "total", "final_loss", "eval_loss", "tokens_per_s", "model_bytes"};
  std::vector<std::pair<std::string, double>> out;
  for (const std::string& k : kFirst) {
    auto it = s.metrics.find(k);
    if (it != s.metrics.end()) out.emplace_back(k, it->second);
  }
  for (const auto& [k, v] : s.metrics) {
    if (std::find(kFirst.begin(), kFirst.end(), k) == kFirst.end()) out.emplace_back(k, v);
  }
  return out;
}

std::string MetricValue(const std::string& key, double v) {
  if (key.find("bytes") != std::string::npos && std::isfinite(v)) {
    return FormatBytes(v);
  }
  return FormatNumber(v);
}

void Header(const RunInfo& run, std::string* out) {
  const std::string name = run.recipe_name.empty() ? "(unnamed recipe)" : run.recipe_name;
  absl::StrAppend(out, "<header id=\"run\">\n<h1>retort report: ", E(name), "</h1>\n");
  absl::StrAppend(out, "<dl class=\"facts\">\n");
  const auto fact = [&](const std::string& key, const std::string& html) {
    absl::StrAppend(out, "<dt>", E(key), "</dt><dd>", html, "</dd>\n");
  };
  fact("recipe", E(name));
  if (!run.recipe_path.empty())
    fact("recipe file", absl::StrCat("<code>", E(run.recipe_path), "</code>"));
  if (!run.recipe_sha256.empty()) {
    fact("recipe sha256", absl::StrCat("<code>", E(run.recipe_sha256), "</code>"));
  }
  if (!run.status.empty()) {
    fact("run status",
         absl::StrCat("<span class=\"", StatusClass(run.status), "\">", E(run.status), "</span>"));
  }
  const std::string start = run.StartTime();
  fact("run started", start.empty() ? "<span class=\"empty\">not recorded</span>" : E(start));
  fact("stage time", E(absl::StrCat(FormatSeconds(run.TotalSeconds()), " in ", run.stages.size(),
                                    run.stages.size() == 1 ? " stage" : " stages")));
  std::map<std::string, int> by_status;
  for (const StageInfo& s : run.stages) ++by_status[s.status.empty() ? "no status" : s.status];
  std::vector<std::string> counts;
  for (const auto& [status, n] : by_status) counts.push_back(absl::StrCat(n, " ", status));
  if (!counts.empty()) fact("stages", E(absl::StrJoin(counts, ", ")));
  fact("machine",
       run.machine.empty() ? "<span class=\"empty\">not recorded</span>" : E(run.machine));
  fact("retort version", run.retort_version.empty() ? "<span class=\"empty\">not recorded</span>"
                                                    : E(run.retort_version));
  fact("run directory", absl::StrCat("<code>", E(run.run_dir), "</code>"));
  absl::StrAppend(out, "</dl>\n</header>\n");
}

void Notes(const RunInfo& run, std::string* out) {
  if (run.notes.empty()) return;
  absl::StrAppend(out,
                  "<section id=\"notes\" class=\"notes\">\n<h2>Missing or incomplete</h2>\n<ul>\n");
  for (const std::string& n : run.notes) absl::StrAppend(out, "<li>", E(n), "</li>\n");
  absl::StrAppend(out, "</ul>\n</section>\n");
}

void LossSection(const RunInfo& run, std::string* out) {
  std::vector<Series> series;
  int color = 0;
  bool any_eval = false;
  for (const StageInfo& s : run.stages) {
    if (!s.curves) continue;
    if (!s.curves->loss.empty()) {
      series.push_back({s.label, s.curves->steps, s.curves->loss, Series::Style::kLine, color});
    }
    if (!s.curves->eval_loss.empty()) {
      // Eval points share their stage's colour; one legend note explains the dots.
      series.push_back({absl::StrCat(s.label, ": eval loss"), s.curves->eval_steps,
                        s.curves->eval_loss, Series::Style::kPoints, color, false});
      any_eval = true;
    }
    ++color;
  }
  absl::StrAppend(out, "<section id=\"loss\">\n<h2>Loss curves</h2>\n");
  if (series.empty()) {
    absl::StrAppend(out,
                    "<p class=\"empty\">No stage of this run has a metrics.jsonl with loss "
                    "lines.</p>\n");
  }
  ChartOptions o;
  o.id = "loss-chart";
  o.title = "Training loss per distill stage";
  o.x_label = "step";
  o.y_label = "loss";
  o.width = kChartWidth;
  o.height = 380;
  o.margin_right = 260;
  if (any_eval) o.legend_note = "dots: eval loss (stage colour)";
  absl::StrAppend(out, LineChart(o, series), "</section>\n");
}

// On-policy distillation stages: the divergence on the student's own samples
// and the student's sampled accuracy, per step (absent without such stages).
void OnPolicySection(const RunInfo& run, std::string* out) {
  std::vector<Series> kd, acc;
  int color = 0;
  for (const StageInfo& s : run.stages) {
    if (!s.curves) continue;
    if (!s.curves->on_policy_kd.empty()) {
      kd.push_back({s.label, s.curves->on_policy_steps, s.curves->on_policy_kd,
                    Series::Style::kLine, color});
    }
    if (!s.curves->sampled_accuracy.empty()) {
      acc.push_back({s.label, s.curves->accuracy_steps, s.curves->sampled_accuracy,
                     Series::Style::kPoints, color});
    }
    ++color;
  }
  if (kd.empty() && acc.empty()) return;
  absl::StrAppend(out, "<section id=\"on-policy\">\n<h2>On-policy distillation</h2>\n");
  ChartOptions o;
  o.width = kChartWidth;
  o.height = 320;
  o.margin_right = 260;
  o.x_label = "step";
  if (!kd.empty()) {
    o.id = "on-policy-kd-chart";
    o.title = "Divergence to the teacher on the student's samples (per token)";
    o.y_label = "reverse KL / JSD";
    absl::StrAppend(out, LineChart(o, kd));
  }
  if (!acc.empty()) {
    o.id = "on-policy-accuracy-chart";
    o.title = "The student's sampled accuracy (verifier; logged, not optimised)";
    o.y_label = "accuracy";
    absl::StrAppend(out, LineChart(o, acc));
  }
  absl::StrAppend(out, "</section>\n");
}

std::vector<const StageInfo*> EvalStages(const RunInfo& run) {
  std::vector<const StageInfo*> out;
  for (const StageInfo& s : run.stages) {
    if (s.is_eval()) out.push_back(&s);
  }
  return out;
}

void AccuracySection(const RunInfo& run, std::string* out) {
  std::vector<Bar> bars;
  bool fractions = true;
  for (const StageInfo* s : EvalStages(run)) {
    const double acc = s->Metric("accuracy").value_or(std::nan(""));
    if (std::isfinite(acc) && (acc < 0 || acc > 1)) fractions = false;
    bars.push_back({s->label, acc});
  }
  absl::StrAppend(out, "<section id=\"accuracy\">\n<h2>Accuracy per stage</h2>\n");
  if (bars.empty()) {
    absl::StrAppend(out, "<p class=\"empty\">This run has no eval stage.</p>\n");
  }
  ChartOptions o;
  o.id = "accuracy-chart";
  o.title = "Task accuracy of each evaluated model";
  o.x_label = "accuracy";
  o.width = kChartWidth;
  o.height = std::max(150, 84 + 34 * static_cast<int>(bars.size()));
  o.margin_left = 280;
  o.margin_right = 40;
  if (fractions) {
    o.fixed_y = true;  // the value axis of a bar chart: accuracy in [0, 1]
    o.y_min = 0;
    o.y_max = 1;
  }
  absl::StrAppend(out, BarChart(o, bars), "</section>\n");
}

void TradeoffSection(const RunInfo& run, std::string* out) {
  std::vector<LabelledPoint> points;
  std::vector<double> sizes;
  bool fractions = true;
  for (const StageInfo* s : EvalStages(run)) {
    std::optional<double> acc = s->Metric("accuracy"), bytes = s->Metric("model_bytes");
    if (!acc || !bytes) continue;
    if (*acc < 0 || *acc > 1) fractions = false;
    points.push_back({s->label, *bytes, *acc});
    sizes.push_back(*bytes);
  }
  absl::StrAppend(out, "<section id=\"tradeoff\">\n<h2>Size / quality trade-off</h2>\n");
  if (points.empty()) {
    absl::StrAppend(out,
                    "<p class=\"empty\">No eval stage has both accuracy and model_bytes.</p>\n");
  }
  ChartOptions o;
  o.id = "tradeoff-chart";
  o.title = "Model size vs accuracy";
  o.log_x = WantsLogScale(sizes);
  o.x_label = o.log_x ? "model size (log scale)" : "model size";
  o.x_format = TickFormat::kBytes;
  o.y_label = "accuracy";
  o.width = kChartWidth;
  o.height = 400;
  o.margin_right = 40;
  if (fractions) {  // accuracy in [0, 1]: the whole range, as in the bar chart
    o.fixed_y = true;
    o.y_min = 0;
    o.y_max = 1;
  }
  absl::StrAppend(out, ScatterChart(o, points), "</section>\n");
}

void StagesTable(const RunInfo& run, std::string* out) {
  absl::StrAppend(out, "<section id=\"stages\">\n<h2>Stages</h2>\n");
  if (run.stages.empty()) {
    absl::StrAppend(out, "<p class=\"empty\">manifest.json lists no stages.</p>\n</section>\n");
    return;
  }
  absl::StrAppend(out,
                  "<div class=\"table-wrap\">\n<table "
                  "class=\"stages\">\n<thead><tr><th>name</th><th>label</th><th>kind</th>"
                  "<th>status</th><th>seconds</th><th>metrics</th><th>outputs</th></tr></thead>\n"
                  "<tbody>\n");
  for (const StageInfo& s : run.stages) {
    absl::StrAppend(out, "<tr class=\"stage\"><td><code>", E(s.name),
                    "</code></td><td class=\"label\">", E(s.label), "</td><td class=\"nowrap\">",
                    E(s.kind), "</td><td class=\"", StatusClass(s.status), " nowrap\">",
                    E(s.status.empty() ? "?" : s.status));
    if (!s.error.empty()) absl::StrAppend(out, "<br><small>", E(s.error), "</small>");
    absl::StrAppend(out, "</td><td class=\"num\">", s.seconds ? E(FormatNumber(*s.seconds, 4)) : "",
                    "</td><td class=\"metrics\">");
    std::vector<std::string> metrics;
    for (const auto& [k, v] : OrderedMetrics(s)) {
      metrics.push_back(
          absl::StrCat("<span class=\"metric\">", E(k), " = ", E(MetricValue(k, v)), "</span>"));
    }
    if (!s.model.empty()) {
      metrics.push_back(absl::StrCat("<span class=\"metric\">model = ", E(s.model), "</span>"));
    }
    absl::StrAppend(out, absl::StrJoin(metrics, "<br>"), "</td><td>");
    std::vector<std::string> outputs;
    for (const StageFile& f : s.outputs) {
      outputs.push_back(absl::StrCat("<code>", E(f.path), "</code>",
                                     f.bytes ? absl::StrCat(" ", E(FormatBytes(*f.bytes))) : ""));
    }
    absl::StrAppend(out, absl::StrJoin(outputs, "<br>"), "</td></tr>\n");
  }
  absl::StrAppend(out, "</tbody>\n</table>\n</div>\n</section>\n");
}

void ConfigSection(const RunInfo& run, std::string* out) {
  absl::StrAppend(out,
                  "<section id=\"config\">\n<h2>Configuration</h2>\n<h3>recipe.textproto</h3>\n");
  if (run.recipe_text) {
    absl::StrAppend(out, "<pre class=\"recipe\">", E(*run.recipe_text), "</pre>\n");
  } else {
    absl::StrAppend(out,
                    "<p class=\"empty\">recipe.textproto is missing from the run "
                    "directory.</p>\n");
  }
  absl::StrAppend(out, "<h3>Stage settings</h3>\n");
  for (const StageInfo& s : run.stages) {
    absl::StrAppend(out, "<details class=\"stage-settings\" open>\n<summary><code>", E(s.name),
                    "</code> (", E(s.kind.empty() ? "?" : s.kind), ")</summary>\n");
    if (!s.fingerprint.empty()) {
      absl::StrAppend(out, "<p>fingerprint <code>", E(s.fingerprint), "</code></p>\n");
    }
    if (!s.inputs.empty()) {
      absl::StrAppend(out, "<p>inputs:</p>\n<ul>\n");
      for (const StageFile& f : s.inputs) {
        absl::StrAppend(
            out, "<li><code>", E(f.path), "</code>",
            f.sha256.empty() ? "" : absl::StrCat(" <small>sha256 ", E(f.sha256), "</small>"),
            "</li>\n");
      }
      absl::StrAppend(out, "</ul>\n");
    }
    if (s.settings_json.empty()) {
      absl::StrAppend(out, "<p class=\"empty\">no settings recorded</p>\n");
    } else {
      absl::StrAppend(out, "<pre class=\"settings\">", E(s.settings_json), "</pre>\n");
    }
    absl::StrAppend(out, "</details>\n");
  }
  absl::StrAppend(out, "</section>\n");
}

}  // namespace

std::string BuildReportPage(const RunInfo& run) {
  const std::string name = run.recipe_name.empty() ? "(unnamed recipe)" : run.recipe_name;
  std::string out = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      // Nothing may load or run: the page is data, whatever a run directory holds.
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "style-src 'unsafe-inline'; img-src data:\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<meta name=\"generator\" content=\"retort report\">\n"
      "<title>retort report: ",
      E(name), "</title>\n<style>", kStyle, "</style>\n</head>\n<body>\n");
  Header(run, &out);
  Notes(run, &out);
  LossSection(run, &out);
  OnPolicySection(run, &out);
  AccuracySection(run, &out);
  TradeoffSection(run, &out);
  StagesTable(run, &out);
  ConfigSection(run, &out);
  absl::StrAppend(&out, "</body>\n</html>\n");
  return out;
}

absl::StatusOr<ReportResult> WriteReport(const std::string& run_dir, const std::string& out_path) {
  ASSIGN_OR_RETURN(RunInfo run, LoadRunDir(run_dir));
  ReportResult result;
  result.path =
      out_path.empty() ? (std::filesystem::path(run_dir) / "report.html").string() : out_path;
  const std::string html = BuildReportPage(run);
  absl::Status written = WriteFileAtomically(result.path, html);
  if (!written.ok()) {
    return absl::Status(written.code(), absl::StrCat("writing the report to ", result.path, ": ",
                                                     written.message()));
  }
  result.bytes = html.size();
  result.notes = std::move(run.notes);
  return result;
}

}  // namespace retort::report
