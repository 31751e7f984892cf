#include "quantize/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/backend.h"

namespace retort::quant {
namespace {

// Rows quantized together: the unit of parallel work and of the lazy-batch
// GEMM. Fixed, so the bits do not depend on the thread count.
constexpr int64_t kRowChunk = 32;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Everything the row chunks share, read-only while they run.
struct GptqPlan {
  const float* w = nullptr;
  int64_t rows = 0, cols = 0;
  QuantScheme scheme;
  int64_t block_size = 128;
  bool dynamic_groups = false;  // group params computed as GPTQ reaches them
  int64_t group = 0;            // columns per group (kGroup)
  std::vector<int64_t> perm;    // processing position -> column
  std::vector<char> dead;       // by column
  std::vector<double> u;        // upper Cholesky factor of H^-1, permuted order
  // Parameters fixed before GPTQ: kTensor (one), kBlock (per tile) and
  // static groups (per row and group; channel params are made per chunk).
  std::vector<QuantParams> fixed;
  ObserverOptions observer;
  std::vector<float> importance;  // by column; imatrix-mse only

  bool Searched() const { return observer.kind != ScaleObserver::kMinMax; }
  bool Weighted() const { return observer.kind == ScaleObserver::kImatrixMse; }
  float Weight(int64_t r, int64_t c) const { return dead[c] ? 0.0f : w[r * cols + c]; }
};

QuantParams RangeParams(const GptqPlan& plan, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  return ObserveBlockParams(
      plan.scheme, plan.observer, r0, r1, c0, c1,
      [&](int64_t r, int64_t c) { return plan.Weight(r, c); }, plan.importance);
}

// GPTQ on rows [r0, r1); returns the chunk's loss.
// Backend errors go to `error`.
double QuantizeRowChunk(const GptqPlan& plan, int64_t r0, int64_t r1, QuantizedMatrix& m,
                        FirstError& error) {
  Backend& be = DefaultBackend();
  const int64_t n = plan.cols, nrows = r1 - r0, bs = plan.block_size;
  const QuantScheme& scheme = plan.scheme;
  const double* u = plan.u.data();
  // Working weights in processing order, f64.
  std::vector<double> wc(nrows * n);
  for (int64_t rr = 0; rr < nrows; ++rr) {
    for (int64_t i = 0; i < n; ++i) wc[rr * n + i] = plan.Weight(r0 + rr, plan.perm[i]);
  }
  // Per-row parameters in use: channel (fixed) or the current group.
  std::vector<QuantParams> current(nrows);
  if (scheme.granularity == QuantGranularity::kChannel) {
    for (int64_t rr = 0; rr < nrows; ++rr) {
      current[rr] = RangeParams(plan, r0 + rr, r0 + rr + 1, 0, n);
      StoreParams(m, r0 + rr, 0, current[rr]);
    }
  }
  const int64_t groups_per_row = plan.group > 0 ? n / plan.group : 0;
  auto params = [&](int64_t rr, int64_t c) -> const QuantParams& {
    switch (scheme.granularity) {
      case QuantGranularity::kTensor:
        return plan.fixed[0];
      case QuantGranularity::kBlock: {
        const int64_t b = scheme.group_size;
        return plan.fixed[((r0 + rr) / b) * CeilDiv(n, b) + c / b];
      }
      case QuantGranularity::kGroup:
        if (!plan.dynamic_groups) return plan.fixed[(r0 + rr) * groups_per_row + c / plan.group];
        return current[rr];
      default:
        return current[rr];
    }
  };

  std::vector<double> err(nrows * bs);
  std::vector<double> pending;
  std::vector<float> group_values, group_importance;
  double loss = 0;
  for (int64_t i1 = 0; i1 < n; i1 += bs) {
    const int64_t i2 = std::min(n, i1 + bs), nb = i2 - i1;
    for (int64_t i = i1; i < i2; ++i) {
      const int64_t c = plan.perm[i];
      if (plan.dynamic_groups && i % plan.group == 0) {
        // The group's range from its fully updated weights: columns in this
        // block are current in wc; columns past the block still owe this
        // block's lazy update for the columns done so far.
        const int64_t g1 = std::min(n, i + plan.group), in_block = std::min(g1, i2);
        const int64_t past = g1 - in_block;
        if (past > 0) {
          pending.assign(nrows * past, 0.0);
          for (int64_t rr = 0; rr < nrows; ++rr) {
            std::copy_n(wc.data() + rr * n + i2, past, pending.data() + rr * past);
          }
          if (i > i1) {
            error.Update(be.Gemm(false, false, nrows, past, i - i1, -1.0, err.data(), bs,
                                 u + i1 * n + i2, n, 1.0, pending.data(), past));
          }
        }
        if (plan.Weighted()) {
          group_importance.clear();
          for (int64_t k = i; k < g1; ++k)
            group_importance.push_back(plan.importance[plan.perm[k]]);
        }
        for (int64_t rr = 0; rr < nrows; ++rr) {
          if (plan.Searched()) {
            group_values.clear();
            for (int64_t k = i; k < in_block; ++k) {
              group_values.push_back(static_cast<float>(wc[rr * n + k]));
            }
            for (int64_t k = 0; k < past; ++k) {
              group_values.push_back(static_cast<float>(pending[rr * past + k]));
            }
            current[rr] =
                ObserveQuantParams(scheme, plan.observer, group_values.data(),
                                   static_cast<int64_t>(group_values.size()), group_importance);
            StoreParams(m, r0 + rr, i / plan.group, current[rr]);
            continue;
          }
          float lo = 0, hi = 0;
          for (int64_t k = i; k < in_block; ++k) {
            const float v = static_cast<float>(wc[rr * n + k]);
            lo = std::min(lo, v);
            hi = std::max(hi, v);
          }
          for (int64_t k = 0; k < past; ++k) {
            const float v = static_cast<float>(pending[rr * past + k]);
            lo = std::min(lo, v);
            hi = std::max(hi, v);
          }
          current[rr] = ComputeQuantParams(scheme, lo, hi);
          StoreParams(m, r0 + rr, i / plan.group, current[rr]);
        }
      }
      const double d = u[i * n + i];
      const double* ui = u + i * n;
      for (int64_t rr = 0; rr < nrows; ++rr) {
        double* wr = wc.data() + rr * n;
        const QuantParams& p = params(rr, c);
        const double x = wr[i];
        const float q = QuantizeValue(scheme, p, static_cast<float>(x));
        StoreValue(m, r0 + rr, c, q);
        const double diff = x - static_cast<double>(DequantizeValue(p, q));
        loss += diff * diff / (d * d) / 2;
        const double e = diff / d;
        err[rr * bs + (i - i1)] = e;
        for (int64_t k = i + 1; k < i2; ++k) wr[k] -= e * ui[k];
      }
    }
    if (i2 < n) {
      error.Update(be.Gemm(false, false, nrows, n - i2, nb, -1.0, err.data(), bs, u + i1 * n + i2,
                           n, 1.0, wc.data() + i2, n));
    }
  }
  return loss;
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t cols)
    : cols_(std::max<int64_t>(cols, 0)), sum_(cols_ * cols_, 0.0) {}

void HessianAccumulator::Add(const float* x, int64_t rows) {
  if (rows <= 0) return;
  absl::Status s = DefaultBackend().AccumulateGram(x, rows, cols_, sum_.data());
  if (!s.ok() && status_.ok()) status_ = s;
  samples_ += rows;
}

void HessianAccumulator::Merge(const HessianAccumulator& other) {
  if (other.cols_ != cols_) return;
  for (size_t i = 0; i < sum_.size(); ++i) sum_[i] += other.sum_[i];
  samples_ += other.samples_;
}

std::vector<double> HessianAccumulator::Hessian() const {
  std::vector<double> h = sum_;
  if (samples_ == 0) return h;
  const double f = 2.0 / static_cast<double>(samples_);
  for (double& v : h) v *= f;
  return h;
}

absl::StatusOr<QuantizedMatrix> QuantizeGptq(const float* w, int64_t rows, int64_t cols,
                                             const HessianAccumulator& h, const QuantScheme& scheme,
                                             const GptqOptions& opts, const std::string& what,
                                             GptqStats* stats, std::span<const float> importance) {
  if (absl::Status s = CheckSchemeFits(scheme, rows, cols, what); !s.ok()) return s;
  const bool weighted = opts.observer.kind == ScaleObserver::kImatrixMse;
  if (weighted && !importance.empty()) {
    RETURN_IF_ERROR(CheckObserverInput(opts.observer, importance, cols, what));
  } else {
    RETURN_IF_ERROR(CheckObserverOptions(opts.observer));
  }
  if (std::string at = FindNonFinite(w, rows, cols); !at.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": non-finite weight at ", at, "; refusing to quantize"));
  }
  if (h.cols() != cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": Hessian is for ", h.cols(), " input columns, the weight has ", cols));
  }
  RETURN_IF_ERROR(h.status());
  if (h.samples() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the Hessian has no calibration samples (no activations reached this layer)"));
  }
  if (!(opts.dampening >= 0) || !std::isfinite(opts.dampening)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": GPTQ dampening must be a finite number >= 0, got ", opts.dampening));
  }
  if (opts.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": GPTQ block size must be positive, got ", opts.block_size));
  }
  const int64_t n = cols;
  // H = f * sum, read straight from the accumulator (no second n x n copy).
  const std::vector<double>& sum = h.sum();
  const double f = 2.0 / static_cast<double>(h.samples());
  for (int64_t k = 0; k < n * n; ++k) {
    if (!std::isfinite(sum[k])) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": the Hessian has a non-finite entry at (", k / n, ", ", k % n,
                       "): the calibration activations overflowed or were not finite"));
    }
  }

  GptqPlan plan;
  plan.w = w;
  plan.rows = rows;
  plan.cols = cols;
  plan.scheme = scheme;
  plan.block_size = opts.block_size;
  const bool grouped = scheme.granularity == QuantGranularity::kGroup;
  plan.group = grouped ? scheme.group_size : 0;
  plan.dynamic_groups = grouped && !opts.static_groups;
  plan.observer = opts.observer;
  plan.dead.assign(n, 0);
  std::vector<double> diag(n);
  int64_t dead_columns = 0;
  for (int64_t j = 0; j < n; ++j) {
    diag[j] = f * sum[j * n + j];
    if (diag[j] == 0) {  // the row and column are zero too (H is a Gram matrix)
      plan.dead[j] = 1;
      diag[j] = 1;
      ++dead_columns;
    }
  }
  if (weighted) {
    // The importance given, else diag(H) (dead columns weigh 0).
    plan.importance.assign(n, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
      plan.importance[j] = !importance.empty() ? importance[j]
                           : plan.dead[j]      ? 0.0f
                                               : static_cast<float>(diag[j]);
    }
  }
  plan.perm.resize(n);
  std::iota(plan.perm.begin(), plan.perm.end(), 0);
  if (opts.act_order) {
    std::stable_sort(plan.perm.begin(), plan.perm.end(),
                     [&](int64_t a, int64_t b) { return diag[a] > diag[b]; });
  }
  // H permuted to processing order, dampened, then U with U^T U = H^-1.
  plan.u.resize(n * n);
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) mean_diag += diag[j];
  mean_diag /= static_cast<double>(n);
  const double damp = opts.dampening * mean_diag;
  for (int64_t i = 0; i < n; ++i) {
    const double* src = sum.data() + plan.perm[i] * n;
    for (int64_t k = 0; k < n; ++k) plan.u[i * n + k] = f * src[plan.perm[k]];
    plan.u[i * n + i] = diag[plan.perm[i]] + damp;
  }
  if (absl::Status s = DefaultBackend().UpperCholeskyOfInverse(plan.u.data(), n); !s.ok()) {
    const double next = opts.dampening > 0 ? opts.dampening * 10 : 0.01;
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the GPTQ Hessian is not positive definite with dampening ", opts.dampening, " (",
        s.message(), "); try a larger dampening, e.g. ", next, ", or more calibration samples"));
  }

  QuantizedMatrix m = AllocateQuantized(scheme, rows, cols);
  switch (scheme.granularity) {
    case QuantGranularity::kTensor:
      plan.fixed = {RangeParams(plan, 0, rows, 0, cols)};
      StoreParams(m, 0, 0, plan.fixed[0]);
      break;
    case QuantGranularity::kBlock: {
      const int64_t b = scheme.group_size, bc = CeilDiv(cols, b);
      plan.fixed.resize(CeilDiv(rows, b) * bc);
      for (int64_t br = 0; br * b < rows; ++br) {
        for (int64_t bcol = 0; bcol < bc; ++bcol) {
          const QuantParams p = RangeParams(plan, br * b, std::min(rows, (br + 1) * b), bcol * b,
                                            std::min(cols, (bcol + 1) * b));
          plan.fixed[br * bc + bcol] = p;
          StoreParams(m, br, bcol, p);
        }
      }
      break;
    }
    case QuantGranularity::kGroup:
      if (!plan.dynamic_groups) {
        const int64_t g = plan.group, groups = cols / g;
        plan.fixed.resize(rows * groups);
        ParallelFor(rows, 16, [&](int64_t a, int64_t b) {
          for (int64_t r = a; r < b; ++r) {
            for (int64_t k = 0; k < groups; ++k) {
              plan.fixed[r * groups + k] = RangeParams(plan, r, r + 1, k * g, (k + 1) * g);
              StoreParams(m, r, k, plan.fixed[r * groups + k]);
            }
          }
        });
      } else if (opts.act_order) {
        m.g_idx = Tensor::Zeros(DType::kI32, {cols});
        int32_t* g_idx = m.g_idx.mutable_data<int32_t>();
        for (int64_t i = 0; i < n; ++i) g_idx[plan.perm[i]] = static_cast<int32_t>(i / plan.group);
      }
      break;
    case QuantGranularity::kChannel:
      break;
  }

  const int64_t chunks = CeilDiv(rows, kRowChunk);
  std::vector<double> losses(chunks, 0.0);
  FirstError error;
  ParallelFor(chunks, 1, [&](int64_t a, int64_t b) {
    for (int64_t k = a; k < b; ++k) {
      losses[k] =
          QuantizeRowChunk(plan, k * kRowChunk, std::min(rows, (k + 1) * kRowChunk), m, error);
    }
  });
  RETURN_IF_ERROR(error.status());
  if (stats != nullptr) {
    stats->loss = std::accumulate(losses.begin(), losses.end(), 0.0);
    stats->dead_columns = dead_columns;
    stats->damp = damp;
  }
  return m;
}

}  // namespace retort::quant
