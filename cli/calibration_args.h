// The calibration options of the commands that look at activations
// (`retort quantize`, `calibrate`, `prune`): --calib FILE..., --calib-samples,
// --calib-seq-len, bound to model/calibration.h's CalibrationFiles.
#ifndef RETORT_CLI_CALIBRATION_ARGS_H_
#define RETORT_CLI_CALIBRATION_ARGS_H_

#include "boost/program_options.hpp"
#include "model/calibration.h"

namespace retort::cli {

void AddCalibOptions(boost::program_options::options_description& opts, CalibrationFiles& a);

}  // namespace retort::cli

#endif  // RETORT_CLI_CALIBRATION_ARGS_H_
