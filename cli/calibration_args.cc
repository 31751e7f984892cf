#include "cli/calibration_args.h"

#include <iostream>
#include <memory>

#include "absl/strings/str_format.h"
#include "cli/model_loading.h"
#include "core/status.h"
#include "model/calibration.h"

namespace retort::cli {

void AddCalibOptions(po::options_description& opts, CalibArgs& a) {
  opts.add_options()(
      "calib", po::value(&a.files)->multitoken(),
      "calibration data: text files, trace/chat .jsonl files or trace shards (repeatable)")(
      "calib-samples", po::value(&a.samples)->default_value(128), "calibration sequences")(
      "calib-seq-len", po::value(&a.seq_len)->default_value(512), "tokens per sequence");
}

absl::StatusOr<std::vector<std::vector<int32_t>>> LoadCalibration(const std::string& model_path,
                                                                  const Transformer& model,
                                                                  const CalibArgs& a) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadTokenizer(model_path));
  ASSIGN_OR_RETURN(auto samples, LoadCalibrationSamples(a.files, *tok, model.config().vocab_size,
                                                        CalibrationOptions{a.samples, a.seq_len}));
  std::cerr << absl::StrFormat("[calib] %d samples, %d tokens\n", samples.size(),
                               CountTokens(samples));
  return samples;
}

}  // namespace retort::cli
