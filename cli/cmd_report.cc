// retort report RUN_DIR [-o OUT.html]: one self-contained HTML page (inline
// SVG charts and CSS, no scripts, no network) about a `retort run` directory:
// loss curves, accuracy per stage, the size/quality trade-off, a table of the
// stages and the configuration. See report/report_page.h.
#include <iostream>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "report/report_page.h"

namespace retort::cli {

int RunReport(const Args& args) {
  const CommandSpec spec{"report", "RUN_DIR [-o OUT.html]",
                         "Write one self-contained HTML page (inline SVG charts, no network) "
                         "about a run directory written by `retort run`: loss curves, accuracy "
                         "per stage, size vs accuracy, the stages and the configuration. A "
                         "failed or partial run still gets a page that says what is missing."};
  po::options_description options("options");
  std::string run_dir, out;
  options.add_options()("run-dir", po::value(&run_dir)->required(), "the run directory")(
      "output,o", po::value(&out), "the page to write (default RUN_DIR/report.html)");
  po::positional_options_description positional;
  positional.add("run-dir", 1);
  po::variables_map vm;
  if (std::optional<int> code = ParseArgs(spec, args, options, positional, vm)) return *code;

  absl::StatusOr<report::ReportResult> result = report::WriteReport(run_dir, out);
  if (!result.ok()) return Fail(spec.name, result.status());
  std::cout << "wrote " << result->path << " (" << result->bytes << " bytes)\n";
  if (!result->notes.empty()) {
    std::cout << "the page notes " << result->notes.size() << " missing or incomplete item"
              << (result->notes.size() == 1 ? "" : "s") << ":\n";
    for (const std::string& n : result->notes) std::cout << "  - " << n << "\n";
  }
  return kExitOk;
}

}  // namespace retort::cli
