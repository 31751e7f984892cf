// The results table of a run: one row per eval stage (its label, held-out
// accuracy, correct/total, model size and decode speed), in recipe order, as
// Markdown. `retort run` prints it at the end; scripts/demo shows it.
#ifndef RETORT_PIPELINE_RESULTS_H_
#define RETORT_PIPELINE_RESULTS_H_

#include <string>

#include "pipeline/provenance.h"

namespace retort::pipeline {

// Empty when the manifest has no eval stage with an accuracy.
std::string EvalTable(const Manifest& manifest);

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_RESULTS_H_
