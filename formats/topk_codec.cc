#include "formats/topk_codec.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "formats/varint.h"

namespace retort {
namespace {

uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

// MSB-first bit packing.
class BitWriter {
 public:
  void Put(uint64_t value, int bits) {
    for (int b = bits - 1; b >= 0; --b) {
      acc_ = static_cast<uint8_t>((acc_ << 1) | ((value >> b) & 1));
      if (++n_ == 8) {
        out_.push_back(static_cast<char>(acc_));
        acc_ = 0, n_ = 0;
      }
    }
  }
  // Truncated binary code of x in [0, n): n == 1 takes no bits.
  void PutTruncated(uint32_t x, uint32_t n) {
    if (n <= 1) return;
    const int b = 31 - __builtin_clz(n);
    const uint32_t u = (2u << b) - n;  // this many values get b bits
    if (x < u) {
      Put(x, b);
    } else {
      Put(x + u, b + 1);
    }
  }
  std::string Finish() {
    if (n_ > 0) out_.push_back(static_cast<char>(acc_ << (8 - n_)));
    n_ = 0, acc_ = 0;
    return std::move(out_);
  }

 private:
  std::string out_;
  uint8_t acc_ = 0;
  int n_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::string_view in) : in_(in) {}
  bool Get(int bits, uint64_t* value) {
    uint64_t v = 0;
    for (int i = 0; i < bits; ++i) {
      if (pos_ >= in_.size() * 8) return false;
      const int bit = (static_cast<unsigned char>(in_[pos_ / 8]) >> (7 - pos_ % 8)) & 1;
      v = (v << 1) | bit;
      ++pos_;
    }
    *value = v;
    return true;
  }
  bool GetTruncated(uint32_t n, uint32_t* x) {
    if (n <= 1) {
      *x = 0;
      return true;
    }
    const int b = 31 - __builtin_clz(n);
    const uint32_t u = (2u << b) - n;
    uint64_t v;
    if (!Get(b, &v)) return false;
    if (v >= u) {
      uint64_t bit;
      if (!Get(1, &bit)) return false;
      v = ((v << 1) | bit) - u;
    }
    *x = static_cast<uint32_t>(v);
    return true;
  }
  // Bits left in the last byte must be zero padding, and no byte may follow.
  bool AtCleanEnd() const {
    if ((pos_ + 7) / 8 != in_.size()) return false;
    uint64_t pad = 0;
    for (size_t p = pos_; p < in_.size() * 8; ++p) {
      pad |= (static_cast<unsigned char>(in_[p / 8]) >> (7 - p % 8)) & 1;
    }
    return pad == 0;
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

// ---- top-k encoding -------------------------------------------------------------

constexpr uint8_t kTopKVersion = 1;
constexpr double kTop1Scale = 4096.0;        // top-1 log-prob step: 2^-12 nat
constexpr uint64_t kNegInfSteps = 1u << 24;  // offsets at or past this decode to -inf
constexpr int64_t kMaxIdSpace = 1 << 24;     // ids must be below this

// The vocabulary ordered by how often each id has been in a top-k row of the
// record so far (most frequent first; ties keep their current order). Ids
// are coded by their rank here, which turns "the usual suspects" (punctuation,
// function words) into small numbers. Encoder and decoder replay the same
// updates, row by row, in rank order.
class CountRankTable {
 public:
  explicit CountRankTable(int64_t size)
      : id_at_(size),
        rank_of_(size),
        count_(size, 0),
        first_{0},
        size_{static_cast<int32_t>(size)} {
    for (int64_t i = 0; i < size; ++i) id_at_[i] = rank_of_[i] = static_cast<int32_t>(i);
  }
  int32_t rank_of(int32_t id) const { return rank_of_[id]; }
  int32_t id_at(int32_t rank) const { return id_at_[rank]; }

  // count[id] += 1: the id swaps with the first id of its count block and so
  // becomes the last of the next higher block.
  void Bump(int32_t id) {
    const int32_t c = count_[id];
    if (static_cast<size_t>(c + 1) >= first_.size()) {
      first_.resize(c + 2, 0);
      size_.resize(c + 2, 0);
    }
    const int32_t r = rank_of_[id];
    const int32_t h = first_[c];
    const int32_t other = id_at_[h];
    id_at_[h] = id, rank_of_[id] = h;
    id_at_[r] = other, rank_of_[other] = r;
    first_[c] = h + 1;
    --size_[c];
    if (size_[c + 1] == 0) first_[c + 1] = h;
    ++size_[c + 1];
    count_[id] = c + 1;
  }

 private:
  std::vector<int32_t> id_at_, rank_of_, count_;
  std::vector<int32_t> first_, size_;  // per count: first rank of its block, block size
};

absl::Status TopKError(const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("top-k: ", problem));
}

}  // namespace

absl::Status ValidateTopKEncoding(const TopKEncoding& e) {
  if (e.step_bits < 0 || e.step_bits > 12 || e.tail_step_bits < 0 ||
      e.tail_step_bits > e.step_bits || e.tail_from_nats < 0 || e.tail_from_nats > 255) {
    return TopKError(
        absl::StrCat("encoding step_bits ", e.step_bits, ", tail_step_bits ", e.tail_step_bits,
                     ", tail_from_nats ", e.tail_from_nats,
                     " outside step_bits in [0, 12], tail_step_bits in [0, step_bits], "
                     "tail_from_nats in [0, 255]"));
  }
  return absl::OkStatus();
}

namespace {

// Offsets from the top-1 (nats, >= 0) <-> integer codes: fine steps up to
// tail_from_nats, coarse steps beyond, kNegInfSteps and above for -inf. The
// map is monotone, so rank order survives quantisation.
class OffsetScale {
 public:
  explicit OffsetScale(const TopKEncoding& e)
      : fine_(std::ldexp(1.0, e.step_bits)),
        coarse_(std::ldexp(1.0, e.tail_step_bits)),
        knee_nats_(e.tail_from_nats),
        knee_code_(static_cast<uint64_t>(e.tail_from_nats) << e.step_bits) {}

  uint64_t Encode(double offset) const {
    if (!(offset < 1e12)) return kNegInfSteps;  // +inf (a -inf log-prob) and huge
    offset = std::max(0.0, offset);
    const double code = offset < knee_nats_
                            ? offset * fine_
                            : static_cast<double>(knee_code_) + (offset - knee_nats_) * coarse_;
    const double rounded = std::nearbyint(code);
    return rounded >= static_cast<double>(kNegInfSteps) ? kNegInfSteps
                                                        : static_cast<uint64_t>(rounded);
  }
  double Decode(uint64_t code) const {
    if (code < knee_code_) return static_cast<double>(code) / fine_;
    return knee_nats_ + static_cast<double>(code - knee_code_) / coarse_;
  }

 private:
  double fine_, coarse_, knee_nats_;
  uint64_t knee_code_;
};
absl::Status TopKDataLoss(const std::string& problem) {
  return absl::DataLossError(absl::StrCat("topk bytes: ", problem));
}

}  // namespace

// ---- public: top-k ------------------------------------------------------------------

double TopKMaxLogprobError(const TopKEncoding& encoding) {
  return std::max({std::ldexp(1.0, -(encoding.step_bits + 1)),
                   std::ldexp(1.0, -(encoding.tail_step_bits + 1)), 0.5 / kTop1Scale});
}

absl::StatusOr<std::string> EncodeTopK(const std::vector<int32_t>& ids,
                                       const std::vector<float>& logprobs, int64_t rows, int32_t k,
                                       const TopKEncoding& encoding) {
  if (k < 0 || rows < 0)
    return TopKError(absl::StrCat("negative size (rows ", rows, ", k ", k, ")"));
  RETURN_IF_ERROR(ValidateTopKEncoding(encoding));
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(k);
  if (ids.size() != n || logprobs.size() != n) {
    return TopKError(absl::StrCat("expected ", rows, " x ", k, " = ", n, " ids and log-probs, got ",
                                  ids.size(), " and ", logprobs.size()));
  }
  int64_t id_space = 0;
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= kMaxIdSpace) {
      return TopKError(absl::StrCat("row ", i / k, " rank ", i % k, ": id ", ids[i],
                                    " outside [0, ", kMaxIdSpace, ")"));
    }
    id_space = std::max<int64_t>(id_space, ids[i] + 1);
  }
  const OffsetScale scale(encoding);

  std::string header;
  header.push_back(static_cast<char>(kTopKVersion));
  header.push_back(static_cast<char>(encoding.step_bits));
  header.push_back(static_cast<char>(encoding.tail_step_bits));
  header.push_back(static_cast<char>(encoding.tail_from_nats));
  PutVarint(static_cast<uint64_t>(id_space), &header);
  std::string top1, offsets, members;
  BitWriter order;
  CountRankTable table(id_space);
  std::vector<int32_t> ranks(k), remaining;
  remaining.reserve(k);
  for (int64_t row = 0; row < rows; ++row) {
    const int32_t* rid = ids.data() + row * k;
    const float* rlp = logprobs.data() + row * k;
    if (k == 0) continue;
    // Log-probs: the top-1 in steps of 2^-12, the rest as offsets from the
    // decoded top-1, stored as differences of consecutive offsets.
    if (!std::isfinite(rlp[0]) || std::fabs(rlp[0]) > 1e12) {
      return TopKError(absl::StrCat("row ", row, ": top-1 log-prob ", rlp[0], " is not finite"));
    }
    const int64_t top1_steps = std::llround(-static_cast<double>(rlp[0]) * kTop1Scale);
    PutVarint(ZigZag(top1_steps), &top1);
    const double top1_decoded = -static_cast<double>(top1_steps) / kTop1Scale;
    uint64_t prev_q = 0;
    for (int32_t r = 1; r < k; ++r) {
      const float lp = rlp[r];
      if (std::isnan(lp))
        return TopKError(absl::StrCat("row ", row, " rank ", r, ": log-prob is NaN"));
      if (lp > rlp[r - 1]) {
        return TopKError(absl::StrCat("row ", row, " rank ", r, ": log-prob ", lp,
                                      " above the previous rank's ", rlp[r - 1],
                                      " (expected rank order, best first)"));
      }
      uint64_t q = scale.Encode(top1_decoded - static_cast<double>(lp));
      q = std::max(q, prev_q);
      PutVarint(q - prev_q, &offsets);
      prev_q = q;
    }
    // Ids: the set as gaps between its sorted count-ranks, then the rank
    // order as a Lehmer code over that sorted list.
    for (int32_t r = 0; r < k; ++r) ranks[r] = table.rank_of(rid[r]);
    remaining.assign(ranks.begin(), ranks.end());
    std::sort(remaining.begin(), remaining.end());
    for (int32_t r = 0; r < k; ++r) {
      if (r > 0 && remaining[r] == remaining[r - 1]) {
        return TopKError(
            absl::StrCat("row ", row, ": id ", table.id_at(remaining[r]), " appears twice"));
      }
      PutVarint(static_cast<uint64_t>(remaining[r] - (r > 0 ? remaining[r - 1] + 1 : 0)), &members);
    }
    for (int32_t r = 0; r < k; ++r) {
      const auto it = std::lower_bound(remaining.begin(), remaining.end(), ranks[r]);
      order.PutTruncated(static_cast<uint32_t>(it - remaining.begin()),
                         static_cast<uint32_t>(remaining.size()));
      remaining.erase(it);
    }
    for (int32_t r = 0; r < k; ++r) table.Bump(rid[r]);
  }
  std::string out = std::move(header);
  for (const std::string& stream : {top1, offsets, members, order.Finish()}) {
    PutVarint(stream.size(), &out);
    out += stream;
  }
  return out;
}

absl::Status DecodeTopK(std::string_view bytes, int64_t rows, int32_t k, std::vector<int32_t>* ids,
                        std::vector<float>* logprobs) {
  ids->clear();
  logprobs->clear();
  if (rows < 0 || k < 0)
    return TopKDataLoss(absl::StrCat("negative size (rows ", rows, ", k ", k, ")"));
  if (bytes.size() < 4) return TopKDataLoss("truncated header");
  if (static_cast<uint8_t>(bytes[0]) != kTopKVersion) {
    return TopKDataLoss(
        absl::StrCat("unknown version ", static_cast<int>(static_cast<uint8_t>(bytes[0]))));
  }
  const TopKEncoding encoding{static_cast<uint8_t>(bytes[1]), static_cast<uint8_t>(bytes[2]),
                              static_cast<uint8_t>(bytes[3])};
  if (absl::Status st = ValidateTopKEncoding(encoding); !st.ok())
    return TopKDataLoss(std::string(st.message()));
  const OffsetScale scale(encoding);
  bytes.remove_prefix(4);
  uint64_t id_space;
  if (!GetVarint(&bytes, &id_space) || id_space > static_cast<uint64_t>(kMaxIdSpace)) {
    return TopKDataLoss("bad id space");
  }
  std::string_view streams[4];
  for (std::string_view& s : streams) {
    uint64_t len;
    if (!GetVarint(&bytes, &len) || len > bytes.size()) return TopKDataLoss("truncated stream");
    s = bytes.substr(0, len);
    bytes.remove_prefix(len);
  }
  if (!bytes.empty()) return TopKDataLoss(absl::StrCat(bytes.size(), " trailing bytes"));
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(k);
  if (n > 0 && id_space < static_cast<uint64_t>(k)) {
    return TopKDataLoss(absl::StrCat("id space ", id_space, " smaller than k ", k));
  }
  // Every entry takes at least one byte of offsets or members; refuse sizes
  // the streams cannot hold before allocating for them.
  if (n > 0 && (streams[2].size() < n || streams[0].size() < static_cast<uint64_t>(rows))) {
    return TopKDataLoss(absl::StrCat("streams too short for ", rows, " x ", k, " entries"));
  }
  ids->resize(n);
  logprobs->resize(n);
  std::string_view top1 = streams[0], offsets = streams[1], members = streams[2];
  BitReader order(streams[3]);
  CountRankTable table(n > 0 ? static_cast<int64_t>(id_space) : 0);
  std::vector<int32_t> sorted;
  sorted.reserve(k);
  for (int64_t row = 0; row < rows && k > 0; ++row) {
    int32_t* rid = ids->data() + row * k;
    float* rlp = logprobs->data() + row * k;
    uint64_t v;
    if (!GetVarint(&top1, &v)) return TopKDataLoss(absl::StrCat("row ", row, ": truncated top-1"));
    const double top1_decoded = -static_cast<double>(UnZigZag(v)) / kTop1Scale;
    rlp[0] = static_cast<float>(top1_decoded);
    uint64_t q = 0;
    for (int32_t r = 1; r < k; ++r) {
      if (!GetVarint(&offsets, &v) || v > kNegInfSteps || q + v > kNegInfSteps) {
        return TopKDataLoss(absl::StrCat("row ", row, " rank ", r, ": bad log-prob offset"));
      }
      q += v;
      rlp[r] = q >= kNegInfSteps ? -std::numeric_limits<float>::infinity()
                                 : static_cast<float>(top1_decoded - scale.Decode(q));
    }
    sorted.clear();
    int64_t rank = -1;
    for (int32_t r = 0; r < k; ++r) {
      if (!GetVarint(&members, &v) || v >= id_space ||
          rank + 1 + static_cast<int64_t>(v) >= static_cast<int64_t>(id_space)) {
        return TopKDataLoss(absl::StrCat("row ", row, " entry ", r, ": bad id gap"));
      }
      rank += 1 + static_cast<int64_t>(v);
      sorted.push_back(static_cast<int32_t>(rank));
    }
    for (int32_t r = 0; r < k; ++r) {
      uint32_t idx;
      if (!order.GetTruncated(static_cast<uint32_t>(sorted.size()), &idx) || idx >= sorted.size()) {
        return TopKDataLoss(absl::StrCat("row ", row, " rank ", r, ": bad order code"));
      }
      rid[r] = table.id_at(sorted[idx]);
      sorted.erase(sorted.begin() + idx);
    }
    for (int32_t r = 0; r < k; ++r) table.Bump(rid[r]);
  }
  if (!top1.empty() || !offsets.empty() || !members.empty() || !order.AtCleanEnd()) {
    return TopKDataLoss("streams longer than the rows they code");
  }
  return absl::OkStatus();
}

}  // namespace retort
