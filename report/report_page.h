// `retort report`: one self-contained HTML page about a run directory.
//
// The page has no scripts and loads nothing (a Content-Security-Policy of
// default-src 'none' says so to the browser too): inline CSS and inline SVG
// charts from report/svg_chart.h. Sections, each an element with a fixed id:
//   #run       recipe name, path and sha256, start time, total stage time,
//              retort version, stage counts by status
//   #notes     what is missing or incomplete (failed stages, no metrics.jsonl,
//              no eval stage, ...); absent when nothing is
//   #loss      train loss (lines) and eval_loss (points) vs step, per stage
//   #accuracy  eval stages' accuracy (bars, label = stage label)
//   #tradeoff  model_bytes vs accuracy, one labelled point per eval stage
//              (log10 size axis when the sizes span more than 10x)
//   #stages    table: name, label, kind, status, seconds, metrics, outputs
//   #config    recipe.textproto and each stage's settings, fingerprint, inputs
// Every text from the run is HTML-escaped. The page is a pure function of the
// run directory (no generation time), so the same run gives the same bytes.
#ifndef RETORT_REPORT_REPORT_PAGE_H_
#define RETORT_REPORT_REPORT_PAGE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "report/run_dir.h"

namespace retort::report {

// The HTML of the page for a loaded run.
std::string BuildReportPage(const RunInfo& run);

struct ReportResult {
  std::string path;  // where the page was written
  size_t bytes = 0;
  std::vector<std::string> notes;  // the run's notes (what the page says is missing)
};

// LoadRunDir(run_dir) + BuildReportPage, written atomically to `out_path`
// (RUN_DIR/report.html when empty). Errors: those of LoadRunDir, and a failed
// write (naming the output path); nothing is written then.
absl::StatusOr<ReportResult> WriteReport(const std::string& run_dir, const std::string& out_path);

}  // namespace retort::report

#endif  // RETORT_REPORT_REPORT_PAGE_H_
