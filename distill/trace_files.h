// Trace files as `retort traces` handles them: samples of any dialect,
// export to other dialects, and the statistics of a JSONL file or a shard.
#ifndef RETORT_DISTILL_TRACE_FILES_H_
#define RETORT_DISTILL_TRACE_FILES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/traces.h"
#include "nlohmann/json.hpp"

namespace retort {

// Every sample of a file in any dialect ParseTraceLineSamples reads (open-r1
// rows with several generations give several); blank lines are skipped. The
// same as ReadTraceJsonl (formats/traces.h), under the name `retort traces`
// knows it by.
absl::StatusOr<std::vector<TraceSample>> ReadTraceSamplesAnyDialect(const std::string& path);

// One line of another dialect: "openai" (messages), "sharegpt"
// (conversations) or "r1" (open-r1's columns); the reasoning goes back
// inside <think>...</think> in the assistant text.
nlohmann::ordered_json ExportTraceLine(const TraceSample& s, const std::string& format);

// Counts, length quantiles ({mean, median, p90, max}), finish reasons and,
// where samples were verified, accuracy and pass@k of a trace file.
absl::StatusOr<nlohmann::ordered_json> TraceJsonlStats(const std::string& path);
// Records, tokens, top-k and bytes per generated token of a token shard.
absl::StatusOr<nlohmann::ordered_json> TraceShardStatsJson(const std::string& path);

}  // namespace retort

#endif  // RETORT_DISTILL_TRACE_FILES_H_
