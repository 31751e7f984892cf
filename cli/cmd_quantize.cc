// retort quantize MODEL OUT [--scheme S] [--method rtn|gptq|awq]
//                           [--observer minmax|mse|imatrix-mse] [--calib FILE ...]
//                           [--to ct|gguf] [--type PRESET] [--imatrix FILE] [--force] [options]
// retort calibrate MODEL IMATRIX.gguf --calib FILE ... [--force] [options]
//
// `quantize` is a typed job (pipeline/job_quantize.cc over
// quantize/quantize_job.h); `calibrate` writes llama.cpp's importance matrix.
#include <chrono>
#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/process.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "quantize/quantize_job.h"

namespace retort::cli {
namespace fs = std::filesystem;

int RunQuantize(const Args& args, const CommandIo& io) {
  CommandSpec spec{
      .name = "quantize",
      .usage =
          "MODEL OUT [--scheme S] [--method rtn|gptq|awq] [--observer minmax|mse|imatrix-mse] "
          "[--calib FILE ...] [--force] [options]",
      .summary =
          "Quantize a model's linear layers (RTN, GPTQ, AWQ; int4/int8/fp8) into a "
          "compressed-tensors directory, or into GGUF k-quants weighted by an importance matrix.",
      .default_model = true,
      .device = true};
  return RunJobCommand(io, spec, *pipeline::NewQuantizeJob(), args);
}

int RunCalibrate(const Args& args, const CommandIo& io) {
  CommandSpec spec{.name = "calibrate",
                   .usage = "MODEL IMATRIX.gguf --calib FILE ... [--force] [options]",
                   .summary =
                       "Compute an importance matrix (llama.cpp's GGUF imatrix format) for `retort "
                       "quantize --to gguf --imatrix`.",
                   .default_model = true,
                   .device = true};
  po::options_description opts("options");
  std::string model_path;
  pipeline::OutputOption out(pipeline::OutputOption::Kind::kFile);
  CalibrationFiles calib;
  int threads = 0;
  opts.add_options()("model", po::value(&model_path)->required(), "HF directory or .gguf file");
  out.AddOptions(opts, /*required=*/true, "imatrix file to write (.gguf)");
  opts.add_options()("threads", po::value(&threads)->default_value(0),
                     "worker threads (0 = all cores)");
  pipeline::AddCalibOptions(opts, calib);
  po::positional_options_description pos;
  pos.add("model", 1).add("output", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, opts, pos, vm)) return *exit;
  if (absl::Status s = out.Check(); !s.ok()) return Fail(io, spec.name, s);
  if (threads > 0) SetNumThreads(threads);
  if (calib.files.empty()) return UsageError(io, spec.name, "give calibration data: --calib FILE");
  auto r = quant::CalibrateImportance(model_path, calib, out.path(), *io.progress);
  if (!r.ok()) return Fail(io, spec.name, r.status());
  *io.out << absl::StrFormat("wrote %s: %d weights, %d samples x %d tokens in %.1f s\n", out.path(),
                             r->weights, r->chunks, r->chunk_size, r->seconds);
  return kExitOk;
}

}  // namespace retort::cli
