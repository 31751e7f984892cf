// The calibration options the commands that look at activations share
// (`retort quantize`, `calibrate`, `prune`): --calib FILE..., --calib-samples,
// --calib-seq-len, and loading those files as token samples with MODEL's
// tokenizer (model/calibration.h).
#ifndef RETORT_CLI_CALIBRATION_ARGS_H_
#define RETORT_CLI_CALIBRATION_ARGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/cli_util.h"
#include "model/transformer.h"

namespace retort::cli {

struct CalibArgs {
  std::vector<std::string> files;
  int64_t samples = 128;
  int64_t seq_len = 512;
};

// Adds --calib, --calib-samples and --calib-seq-len, bound to `a`.
void AddCalibOptions(po::options_description& opts, CalibArgs& a);

// Tokenizes a.files with MODEL's tokenizer into at most a.samples sequences
// of a.seq_len tokens; prints "[calib] N samples, T tokens" to stderr.
// Errors name the file (or the tokenizer that failed to load).
absl::StatusOr<std::vector<std::vector<int32_t>>> LoadCalibration(const std::string& model_path,
                                                                  const Transformer& model,
                                                                  const CalibArgs& a);

}  // namespace retort::cli

#endif  // RETORT_CLI_CALIBRATION_ARGS_H_
