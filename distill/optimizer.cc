#include "distill/optimizer.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace retort {
namespace {

constexpr char kMagic[8] = {'R', 'T', 'A', 'D', 'A', 'M', 'W', '1'};
constexpr int64_t kHeaderBytes = 8 + 8 + 8 + 4 * 4;
// Elements per parallel task (fixed, so per-block sums do not depend on the
// number of threads).
constexpr int64_t kBlock = 1 << 15;

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
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(step_));
  const float step_size = static_cast<float>(static_cast<double>(lr) / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float w1 = static_cast<float>(1 - b1);
  const float fb2 = options_.beta2, w2 = static_cast<float>(1 - b2);
  const float eps = options_.eps;
  const float decay = static_cast<float>(1 - static_cast<double>(lr) * options_.weight_decay);
  float* m = m_.data();
  float* v = v_.data();
  for (const ParamGroup& g : groups_) {
    const bool decays = g.decay && options_.weight_decay != 0;
    const int64_t blocks = (g.end - g.begin + kBlock - 1) / kBlock;
    ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
      const int64_t i0 = g.begin + b0 * kBlock, i1 = std::min(g.end, g.begin + b1 * kBlock);
      // The order of operations of torch's single-tensor AdamW (lerp for m).
      // Eight at a time with the very operations (and roundings) of the
      // scalar loop below, so every element gets the same bits either way.
      const __m256 v_decay = _mm256_set1_ps(decay), v_w1 = _mm256_set1_ps(w1);
      const __m256 v_b2 = _mm256_set1_ps(fb2), v_w2 = _mm256_set1_ps(w2);
      const __m256 v_bc2 = _mm256_set1_ps(bc2_sqrt), v_eps = _mm256_set1_ps(eps);
      const __m256 v_step = _mm256_set1_ps(step_size);
      int64_t i = i0;
      for (; i + 8 <= i1; i += 8) {
        __m256 p = _mm256_loadu_ps(params + i);
        if (decays) p = _mm256_mul_ps(p, v_decay);
        const __m256 gr = _mm256_loadu_ps(grads + i);
        const __m256 m0 = _mm256_loadu_ps(m + i);
        const __m256 mi = _mm256_fmadd_ps(_mm256_sub_ps(gr, m0), v_w1, m0);
        const __m256 g2 = _mm256_mul_ps(_mm256_mul_ps(gr, v_w2), gr);
        const __m256 vi = _mm256_fmadd_ps(_mm256_loadu_ps(v + i), v_b2, g2);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), v_bc2), v_eps);
        p = _mm256_sub_ps(p, _mm256_div_ps(_mm256_mul_ps(mi, v_step), denom));
        _mm256_storeu_ps(params + i, p);
      }
      for (; i < i1; ++i) {
        float p = params[i];
        if (decays) p *= decay;
        const float gr = grads[i];
        const float mi = std::fma(w1, gr - m[i], m[i]);
        // Written as the fma the compiler contracted it to (before the vector
        // loop existed), so the tail matches the vector lanes.
        const float vi = std::fma(v[i], fb2, w2 * gr * gr);
        m[i] = mi;
        v[i] = vi;
        const float denom = std::sqrt(vi) / bc2_sqrt + eps;
        params[i] = p - (step_size * mi) / denom;
      }
    });
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
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
      double s[4] = {0, 0, 0, 0};
      int64_t i = i0;
      for (; i + 4 <= i1; i += 4) {
        for (int l = 0; l < 4; ++l) s[l] += static_cast<double>(grads[i + l]) * grads[i + l];
      }
      for (; i < i1; ++i) s[0] += static_cast<double>(grads[i]) * grads[i];
      partial[b] = (s[0] + s[1]) + (s[2] + s[3]);
    }
  });
  double sum = 0;
  for (double p : partial) sum += p;
  const double norm = std::sqrt(sum);
  if (!std::isfinite(norm) || max_norm <= 0) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1) {
    const float c = static_cast<float>(coef);
    ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
      const int64_t i1 = std::min(n, b1 * kBlock);
      for (int64_t i = b0 * kBlock; i < i1; ++i) grads[i] *= c;
    });
  }
  return norm;
}

absl::StatusOr<LrScheduleKind> ParseLrSchedule(const std::string& name) {
  if (name == "cosine") return LrScheduleKind::kCosine;
  if (name == "linear") return LrScheduleKind::kLinear;
  if (name == "constant") return LrScheduleKind::kConstant;
  return absl::InvalidArgumentError(absl::StrCat("unknown learning-rate schedule \"", name,
                                                 "\" (expected cosine, linear or constant)"));
}

const char* LrScheduleName(LrScheduleKind kind) {
  switch (kind) {
    case LrScheduleKind::kCosine:
      return "cosine";
    case LrScheduleKind::kLinear:
      return "linear";
    case LrScheduleKind::kConstant:
      return "constant";
  }
  return "?";
}

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
