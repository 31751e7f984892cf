#include "cli/calibration_args.h"

namespace retort::cli {
namespace po = boost::program_options;

void AddCalibOptions(po::options_description& opts, CalibrationFiles& a) {
  opts.add_options()(
      "calib", po::value(&a.files)->multitoken(),
      "calibration data: text files, trace/chat .jsonl files or trace shards (repeatable)")(
      "calib-samples", po::value(&a.options.samples)->default_value(128), "calibration sequences")(
      "calib-seq-len", po::value(&a.options.seq_len)->default_value(512), "tokens per sequence");
}

}  // namespace retort::cli
