// The compact encoding of a teacher's top-k log-probs per generated token
// (the `topk` bytes of a TraceTokens record, formats/traces.md "Top-k"):
// ids coded by their running frequency rank, log-probs as quantised offsets
// from the row's top-1.
//
// Thread safety: pure functions.
#ifndef RETORT_FORMATS_TOPK_CODEC_H_
#define RETORT_FORMATS_TOPK_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace retort {

// Precision of the stored top-k log-probs (formats/traces.md, "Precision").
// The top-1 log-prob is kept in steps of 2^-12 nat. The others are kept as
// offsets from it: in steps of 2^-step_bits nat up to tail_from_nats below the
// top-1, in coarser steps of 2^-tail_step_bits beyond, where a token has at
// most e^-tail_from_nats of the top-1's probability and an error there moves
// little probability. Defaults: |log-prob error| <= 1/128 within 4 nats of the
// top-1, <= 1/32 beyond; |probability error| < 0.004 everywhere.
struct TopKEncoding {
  int step_bits = 6;       // in [0, 12]
  int tail_step_bits = 4;  // in [0, step_bits]
  int tail_from_nats = 4;  // in [0, 255]
};
// The largest |decoded - original| log-prob error of an encoding (finite
// log-probs, offsets from the top-1 below 2^24 steps).
double TopKMaxLogprobError(const TopKEncoding& encoding);
// InvalidArgument "top-k: encoding ..." when a field is outside its range.
absl::Status ValidateTopKEncoding(const TopKEncoding& encoding);

// The compact topk bytes alone (the shard writer and reader use these).
// REQUIRES (else InvalidArgument): ids.size() == logprobs.size() == rows * k,
// ids in [0, 2^31) and distinct within a row, log-probs not NaN, finite top-1,
// non-increasing within a row (-inf allowed after the top-1).
absl::StatusOr<std::string> EncodeTopK(const std::vector<int32_t>& ids,
                                       const std::vector<float>& logprobs, int64_t rows, int32_t k,
                                       const TopKEncoding& encoding = {});
absl::Status DecodeTopK(std::string_view bytes, int64_t rows, int32_t k, std::vector<int32_t>* ids,
                        std::vector<float>* logprobs);

}  // namespace retort

#endif  // RETORT_FORMATS_TOPK_CODEC_H_
