#include "distill/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/named_values.h"
#include "core/status.h"
#include "kernels/backend.h"

namespace retort {
namespace {

constexpr char kMagic[8] = {'R', 'T', 'A', 'D', 'A', 'M', 'W', '1'};
constexpr int64_t kHeaderBytes = 8 + 8 + 8 + 4 * 4;

// The optimizer's ops take valid operands by construction (Create checked the
// sizes and hyper-parameters), so a failure is the device's (Internal): the
// public API has no status to carry it, and a training step must not go on
// half-applied.
void CheckOk(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "retort: %s: %s\n", what, s.ToString().c_str());
  std::abort();
}

template <typename T>
T CheckOk(absl::StatusOr<T> s, const char* what) {
  CheckOk(s.status(), what);
  return *std::move(s);
}

template <typename T>
void Put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

AdamW::AdamW(const AdamWOptions& options, std::vector<ParamGroup> groups, int64_t n)
    : options_(options), groups_(std::move(groups)), m_(n, 0.f), v_(n, 0.f) {}

absl::StatusOr<AdamW> AdamW::Create(int64_t n, const AdamWOptions& options,
                                    std::vector<ParamGroup> groups) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("AdamW: parameter count ", n));
  if (!(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("AdamW: betas must be in [0, 1), got (",
                                                   options.beta1, ", ", options.beta2, ")"));
  }
  if (!(options.eps > 0) || !(options.weight_decay >= 0) || !std::isfinite(options.weight_decay)) {
    return absl::InvalidArgumentError(
        absl::StrCat("AdamW: eps must be > 0 and weight_decay >= 0, got ", options.eps, " and ",
                     options.weight_decay));
  }
  if (groups.empty()) groups.push_back({0, n, true});
  int64_t at = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    const ParamGroup& g = groups[i];
    if (g.begin != at || g.end < g.begin) {
      return absl::InvalidArgumentError(absl::StrCat("AdamW: parameter group ", i, " is [", g.begin,
                                                     ", ", g.end, ") but must start at ", at,
                                                     " (groups tile [0, ", n, ") in order)"));
    }
    at = g.end;
  }
  if (at != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("AdamW: parameter groups end at ", at, " but the arena has ", n, " elements"));
  }
  return AdamW(options, std::move(groups), n);
}

void AdamW::Step(float* params, const float* grads, float lr) {
  ++step_;
  Backend& backend = DefaultBackend();
  for (const ParamGroup& g : groups_) {
    AdamWStepParams p;
    p.lr = lr;
    p.beta1 = options_.beta1;
    p.beta2 = options_.beta2;
    p.eps = options_.eps;
    p.weight_decay = g.decay ? options_.weight_decay : 0.f;
    p.step = step_;
    CheckOk(backend.AdamWStep(params + g.begin, grads + g.begin, m_.data() + g.begin,
                              v_.data() + g.begin, g.end - g.begin, p),
            "AdamW::Step");
  }
}

std::string AdamW::SerializeState() const {
  std::string out;
  const int64_t n = size();
  out.reserve(static_cast<size_t>(kHeaderBytes + 8 * n));
  out.append(kMagic, 8);
  Put<uint64_t>(out, static_cast<uint64_t>(n));
  Put<int64_t>(out, step_);
  Put<float>(out, options_.beta1);
  Put<float>(out, options_.beta2);
  Put<float>(out, options_.eps);
  Put<float>(out, options_.weight_decay);
  out.append(reinterpret_cast<const char*>(m_.data()), static_cast<size_t>(4 * n));
  out.append(reinterpret_cast<const char*>(v_.data()), static_cast<size_t>(4 * n));
  return out;
}

absl::Status AdamW::RestoreState(const std::string& bytes) {
  if (bytes.size() < static_cast<size_t>(kHeaderBytes) ||
      std::memcmp(bytes.data(), kMagic, 8) != 0) {
    return absl::InvalidArgumentError("AdamW state: not an AdamW state (magic RTADAMW1 missing)");
  }
  const char* p = bytes.data() + 8;
  const uint64_t n = Get<uint64_t>(p);
  const int64_t step = Get<int64_t>(p + 8);
  const float hp[4] = {Get<float>(p + 16), Get<float>(p + 20), Get<float>(p + 24),
                       Get<float>(p + 28)};
  if (n != static_cast<uint64_t>(size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("AdamW state: holds ", n, " parameters but the optimizer has ", size()));
  }
  if (bytes.size() != static_cast<size_t>(kHeaderBytes) + 8 * n) {
    return absl::DataLossError(absl::StrCat("AdamW state: ", bytes.size(), " bytes, expected ",
                                            kHeaderBytes + 8 * n, " for ", n, " parameters"));
  }
  if (step < 0) return absl::DataLossError(absl::StrCat("AdamW state: step count ", step));
  const float mine[4] = {options_.beta1, options_.beta2, options_.eps, options_.weight_decay};
  const char* names[4] = {"beta1", "beta2", "eps", "weight_decay"};
  for (int i = 0; i < 4; ++i) {
    if (std::memcmp(&hp[i], &mine[i], 4) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("AdamW state: saved with ", names[i], " = ",
                                                     hp[i], " but the optimizer has ", mine[i]));
    }
  }
  step_ = step;
  std::memcpy(m_.data(), p + 32, 4 * n);
  std::memcpy(v_.data(), p + 32 + 4 * n, 4 * n);
  return absl::OkStatus();
}

absl::Status AdamW::SaveState(const std::string& path) const {
  return WriteFileAtomically(path, SerializeState());
}

absl::Status AdamW::LoadState(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  absl::Status s = RestoreState(bytes);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return absl::OkStatus();
}

double ClipGradNorm(float* grads, int64_t n, double max_norm) {
  Backend& backend = DefaultBackend();
  const double norm = std::sqrt(CheckOk(backend.SumSquares(grads, n), "ClipGradNorm"));
  if (!std::isfinite(norm) || max_norm <= 0) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1) CheckOk(backend.Scale(grads, n, static_cast<float>(coef)), "ClipGradNorm");
  return norm;
}

constexpr NamedValue<LrScheduleKind> kLrSchedules[] = {{LrScheduleKind::kCosine, "cosine"},
                                                       {LrScheduleKind::kLinear, "linear"},
                                                       {LrScheduleKind::kConstant, "constant"}};

absl::StatusOr<LrScheduleKind> ParseLrSchedule(const std::string& name) {
  return ParseNamedValue(kLrSchedules, name, "learning-rate schedule");
}

const char* LrScheduleName(LrScheduleKind kind) { return NameOfValue(kLrSchedules, kind); }

double LearningRate(int64_t step, int64_t total_steps, const LrScheduleOptions& o) {
  step = std::max<int64_t>(step, 0);
  if (step < o.warmup_steps) {
    return o.peak_lr * static_cast<double>(step) / static_cast<double>(o.warmup_steps);
  }
  if (o.kind == LrScheduleKind::kConstant) return o.peak_lr;
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - o.warmup_steps));
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) / span, 0.0, 1.0);
  const double factor = o.kind == LrScheduleKind::kCosine
                            ? 0.5 * (1 + std::cos(std::numbers::pi * progress))
                            : 1 - progress;
  return o.min_lr + (o.peak_lr - o.min_lr) * factor;
}

}  // namespace retort
