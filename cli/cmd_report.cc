// retort report RUN_DIR [OUT.html | -o OUT.html | -o -]: one self-contained HTML page (inline
// SVG charts and CSS, no scripts, no network) about a `retort run` directory:
// loss curves, accuracy per stage, the size/quality trade-off, a table of the
// stages and the configuration. See report/report_page.h.
#include <iostream>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "report/report_page.h"
#include "report/run_dir.h"

namespace retort::cli {

int RunReport(const Args& args) {
  const CommandSpec spec{
      .name = "report",
      .usage = "RUN_DIR [OUT.html | -o OUT.html] [--force]",
      .summary =
          "Write one self-contained HTML page (inline SVG charts, no network) about a run "
          "directory written by `retort run`: loss curves, accuracy per stage, size vs accuracy, "
          "the stages and the configuration. A failed or partial run still gets a page that says "
          "what is missing. Without OUT the page is RUN_DIR/report.html, rewritten each time."};
  po::options_description options("options");
  std::string run_dir;
  pipeline::OutputOption out(pipeline::OutputOption::Kind::kStream);
  options.add_options()("run-dir", po::value(&run_dir)->required(), "the run directory");
  out.AddOptions(options, /*required=*/false, "the page to write (default RUN_DIR/report.html)");
  po::positional_options_description positional;
  positional.add("run-dir", 1).add("output", 1);
  po::variables_map vm;
  if (std::optional<int> code = ParseArgs(spec, args, options, positional, vm)) return *code;
  if (absl::Status s = out.Check(); !s.ok()) return Fail(spec.name, s);

  std::vector<std::string> notes;
  if (out.to_stdout()) {
    absl::StatusOr<report::RunInfo> run = report::LoadRunDir(run_dir);
    if (!run.ok()) return Fail(spec.name, run.status());
    std::cout << report::BuildReportPage(*run) << std::flush;
    notes = run->notes;
  } else {
    absl::StatusOr<report::ReportResult> result = report::WriteReport(run_dir, out.path());
    if (!result.ok()) return Fail(spec.name, result.status());
    std::cout << "wrote " << result->path << " (" << result->bytes << " bytes)\n";
    notes = result->notes;
  }
  // With the page on stdout, what would be said about it goes to stderr.
  std::ostream& said = out.to_stdout() ? std::cerr : std::cout;
  if (!notes.empty()) {
    said << "the page notes " << notes.size() << " missing or incomplete item"
         << (notes.size() == 1 ? "" : "s") << ":\n";
    for (const std::string& n : notes) said << "  - " << n << "\n";
  }
  return kExitOk;
}

}  // namespace retort::cli
