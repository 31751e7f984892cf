#include "quantize/awq.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/quant_matrix.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/backend.h"

namespace retort::quant {
namespace {

// Weight rows per task of the error GEMMs (fixed: thread-independent bits).
constexpr int64_t kRowTile = 64;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Columns per quantization group along a row (0 for tensor/block: the group
// spans rows too).
int64_t RowGroupWidth(const QuantScheme& scheme, int64_t cols) {
  switch (scheme.granularity) {
    case QuantGranularity::kGroup:
      return scheme.group_size;
    case QuantGranularity::kChannel:
      return cols;
    default:
      return 0;
  }
}

// Output error ||x d^T||^2 of weight differences d [rows, cols] on the
// calibration input, either directly (tokens <= cols) or through the Gram
// matrix g = x^T x (cheaper when there are more tokens than columns).
class OutputErrorMeter {
 public:
  OutputErrorMeter(const float* x, int64_t tokens, int64_t cols)
      : x_(x), tokens_(tokens), cols_(cols), use_gram_(tokens > cols) {
    if (use_gram_) {
      std::vector<double> g(cols * cols, 0.0);
      error_.Update(DefaultBackend().AccumulateGram(x, tokens, cols, g.data()));
      gram_.assign(g.begin(), g.end());
    }
  }

  // The first backend error of the constructor or of any Error() call.
  absl::Status status() const { return error_.status(); }

  double Error(const float* d, int64_t rows) const {
    Backend& be = DefaultBackend();
    const int64_t tiles = CeilDiv(rows, kRowTile);
    std::vector<double> partial(tiles, 0.0);
    ParallelFor(tiles, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> buf;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * kRowTile, rb = std::min(rows, r0 + kRowTile) - r0;
        double sum = 0;
        if (use_gram_) {
          buf.assign(rb * cols_, 0.0f);
          error_.Update(be.Gemm(false, false, rb, cols_, cols_, 1.0f, d + r0 * cols_, cols_,
                                gram_.data(), cols_, 0.0f, buf.data(), cols_));
          for (int64_t i = 0; i < rb * cols_; ++i) sum += double(buf[i]) * d[r0 * cols_ + i];
        } else {
          buf.assign(tokens_ * rb, 0.0f);
          error_.Update(be.Gemm(false, true, tokens_, rb, cols_, 1.0f, x_, cols_, d + r0 * cols_,
                                cols_, 0.0f, buf.data(), rb));
          for (float v : buf) sum += double(v) * v;
        }
        partial[t] = sum;
      }
    });
    double total = 0;
    for (double p : partial) total += p;
    return total;
  }

 private:
  const float* x_;
  int64_t tokens_, cols_;
  bool use_gram_;
  std::vector<float> gram_;
  mutable FirstError error_;
};

absl::Status CheckFinite(const float* v, int64_t rows, int64_t cols, const std::string& what,
                         const char* kind) {
  if (std::string at = FindNonFinite(v, rows, cols); !at.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": non-finite ", kind, " at ", at, "; refusing to run AWQ"));
  }
  return absl::OkStatus();
}

// w_mean: |w| over its quantization group's absmax (+1e-6), averaged over
// every row of every linear.
std::vector<float> NormalizedWeightMean(const std::vector<LinearRef>& linears, int64_t cols,
                                        const QuantScheme& scheme) {
  std::vector<double> sum(cols, 0.0);
  int64_t total_rows = 0;
  for (const LinearRef& l : linears) {
    const int64_t rows = l.rows;
    // absmax per (row, column) of its group.
    auto add_rows = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::abs(l.w[r * cols + c]));
      }
      const float denom = amax + 1e-6f;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) sum[c] += std::abs(l.w[r * cols + c]) / denom;
      }
    };
    switch (scheme.granularity) {
      case QuantGranularity::kTensor:
        add_rows(0, rows, 0, cols);
        break;
      case QuantGranularity::kBlock: {
        const int64_t b = scheme.group_size;
        for (int64_t r0 = 0; r0 < rows; r0 += b) {
          for (int64_t c0 = 0; c0 < cols; c0 += b) {
            add_rows(r0, std::min(rows, r0 + b), c0, std::min(cols, c0 + b));
          }
        }
        break;
      }
      default: {
        const int64_t g = RowGroupWidth(scheme, cols);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c0 = 0; c0 < cols; c0 += g) add_rows(r, r + 1, c0, c0 + g);
        }
      }
    }
    total_rows += rows;
  }
  std::vector<float> mean(cols);
  for (int64_t c = 0; c < cols; ++c) mean[c] = static_cast<float>(sum[c] / total_rows);
  return mean;
}

}  // namespace

absl::StatusOr<std::vector<float>> AwqSearchScales(const float* x, int64_t tokens, int64_t cols,
                                                   const std::vector<LinearRef>& linears,
                                                   const QuantScheme& scheme,
                                                   const AwqOptions& opts, double* best_loss) {
  if (linears.empty()) return absl::InvalidArgumentError("AWQ scale search: no linear layer given");
  const std::string what =
      linears.size() == 1 ? linears[0].name
                          : absl::StrCat(linears[0].name, " (and ", linears.size() - 1, " more)");
  if (tokens <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": AWQ needs calibration activations, got [", tokens, ", ", cols, "]"));
  }
  if (opts.grid < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": AWQ grid must be >= 1, got ", opts.grid));
  }
  if (absl::Status s = CheckFinite(x, tokens, cols, what, "activation"); !s.ok()) return s;
  for (const LinearRef& l : linears) {
    if (l.w == nullptr) return absl::InvalidArgumentError(absl::StrCat(l.name, ": no weight"));
    if (absl::Status s = CheckSchemeFits(scheme, l.rows, cols, l.name); !s.ok()) return s;
    if (absl::Status s = CheckFinite(l.w, l.rows, cols, l.name, "weight"); !s.ok()) return s;
  }

  std::vector<double> abs_sum(cols, 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < cols; ++c) abs_sum[c] += std::abs(x[t * cols + c]);
  }
  std::vector<float> x_mean(cols);
  for (int64_t c = 0; c < cols; ++c) x_mean[c] = static_cast<float>(abs_sum[c] / tokens);
  const std::vector<float> w_mean = NormalizedWeightMean(linears, cols, scheme);

  const OutputErrorMeter meter(x, tokens, cols);
  std::vector<float> scaled, diff;
  // Loss of scales s (inf when the scaled weights cannot be quantized).
  auto loss_of = [&](const std::vector<float>& s) -> double {
    double loss = 0;
    for (const LinearRef& l : linears) {
      const int64_t n = l.rows * cols;
      scaled.resize(n);
      for (int64_t r = 0; r < l.rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) scaled[r * cols + c] = l.w[r * cols + c] * s[c];
      }
      absl::StatusOr<QuantizedMatrix> q = QuantizeRtn(scaled.data(), l.rows, cols, scheme, l.name);
      if (!q.ok()) return std::numeric_limits<double>::infinity();
      diff.resize(n);
      DequantizeRows(*q, 0, l.rows, diff.data());
      for (int64_t r = 0; r < l.rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          diff[r * cols + c] = l.w[r * cols + c] - diff[r * cols + c] / s[c];
        }
      }
      loss += meter.Error(diff.data(), l.rows);
    }
    return loss;
  };

  std::vector<float> best(cols, 1.0f);
  double best_err = loss_of(best);
  std::vector<float> s(cols);
  for (int i = 0; i < opts.grid; ++i) {
    const float ratio = static_cast<float>(static_cast<double>(i) / opts.grid);
    for (int64_t c = 0; c < cols; ++c) {
      float v = std::pow(x_mean[c], ratio);
      if (opts.duo_scaling) v = v / (std::pow(w_mean[c], 1.0f - ratio) + 1e-4f);
      s[c] = std::max(v, 1e-4f);
    }
    const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
    const float norm = std::sqrt(*hi * *lo);
    for (float& v : s) {
      v = v / norm;
      if (!std::isfinite(v)) v = 1.0f;
    }
    const double err = loss_of(s);
    if (err < best_err) {
      best_err = err;
      best = s;
    }
  }
  RETURN_IF_ERROR(meter.status());
  if (best_loss != nullptr) *best_loss = best_err;
  return best;
}

absl::Status AwqClip(float* w, int64_t rows, int64_t cols, const float* x, int64_t tokens,
                     const QuantScheme& scheme, const AwqOptions& opts, const std::string& what) {
  const int64_t g = RowGroupWidth(scheme, cols);
  if (g == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": AWQ clipping needs per-channel or per-group scales, not ", scheme.Name()));
  }
  if (absl::Status s = CheckSchemeFits(scheme, rows, cols, what); !s.ok()) return s;
  if (tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": AWQ clipping needs activations"));
  }
  if (opts.clip_grid < 1 || !(opts.max_shrink >= 0 && opts.max_shrink < 1) || opts.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": AWQ clip options need clip_grid >= 1, 0 <= max_shrink < 1, max_tokens >= 1"));
  }
  if (absl::Status s = CheckFinite(w, rows, cols, what, "weight"); !s.ok()) return s;
  if (absl::Status s = CheckFinite(x, tokens, cols, what, "activation"); !s.ok()) return s;

  // Evenly strided tokens, as the references subsample.
  const int64_t step = std::max<int64_t>(1, tokens / opts.max_tokens);
  const int64_t ntok = CeilDiv(tokens, step);
  const int64_t groups = cols / g;
  const bool use_gram = g < ntok;
  // Per group: its columns of the sampled tokens [ntok, g] or their Gram [g, g].
  std::vector<float> xg(groups * (use_gram ? g * g : ntok * g), 0.0f);
  Backend& be = DefaultBackend();
  FirstError error;
  ParallelFor(groups, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> cols_k(ntok * g);
    for (int64_t k = k0; k < k1; ++k) {
      for (int64_t t = 0; t < ntok; ++t) {
        std::copy_n(x + t * step * cols + k * g, g, cols_k.data() + t * g);
      }
      if (use_gram) {
        error.Update(be.Gemm(true, false, g, g, ntok, 1.0f, cols_k.data(), g, cols_k.data(), g,
                             0.0f, xg.data() + k * g * g, g));
      } else {
        std::copy(cols_k.begin(), cols_k.end(), xg.begin() + k * ntok * g);
      }
    }
  });

  const int shrinks = std::max(1, static_cast<int>(opts.max_shrink * opts.clip_grid));
  const int64_t row_tiles = CeilDiv(rows, kRowTile);
  ParallelFor(groups * row_tiles, 1, [&](int64_t j0, int64_t j1) {
    std::vector<float> d, out, best_max, amax;
    std::vector<double> best_err;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t k = j / row_tiles, r0 = (j % row_tiles) * kRowTile;
      const int64_t rb = std::min(rows, r0 + kRowTile) - r0;
      const float* xk = xg.data() + k * (use_gram ? g * g : ntok * g);
      d.assign(rb * g, 0.0f);
      amax.assign(rb, 0.0f);
      best_max.assign(rb, 0.0f);
      best_err.assign(rb, std::numeric_limits<double>::infinity());
      for (int64_t rr = 0; rr < rb; ++rr) {
        const float* wr = w + (r0 + rr) * cols + k * g;
        for (int64_t c = 0; c < g; ++c) amax[rr] = std::max(amax[rr], std::abs(wr[c]));
      }
      for (int i = 0; i < shrinks; ++i) {
        const float factor = static_cast<float>(1.0 - static_cast<double>(i) / opts.clip_grid);
        for (int64_t rr = 0; rr < rb; ++rr) {
          const float* wr = w + (r0 + rr) * cols + k * g;
          const float mv = amax[rr] * factor;
          float lo = 0, hi = 0;
          for (int64_t c = 0; c < g; ++c) {
            const float v = std::clamp(wr[c], -mv, mv);
            lo = std::min(lo, v);
            hi = std::max(hi, v);
          }
          const QuantParams p = ComputeQuantParams(scheme, lo, hi);
          for (int64_t c = 0; c < g; ++c) {
            const float v = std::clamp(wr[c], -mv, mv);
            d[rr * g + c] = DequantizeValue(p, QuantizeValue(scheme, p, v)) - wr[c];
          }
        }
        // Per row: sum over tokens of (x_g . d)^2 (the mean's argmin).
        std::vector<double> err(rb, 0.0);
        if (use_gram) {
          out.assign(rb * g, 0.0f);
          error.Update(
              be.Gemm(false, false, rb, g, g, 1.0f, d.data(), g, xk, g, 0.0f, out.data(), g));
          for (int64_t rr = 0; rr < rb; ++rr) {
            for (int64_t c = 0; c < g; ++c) err[rr] += double(out[rr * g + c]) * d[rr * g + c];
          }
        } else {
          out.assign(rb * ntok, 0.0f);
          error.Update(
              be.Gemm(false, true, rb, ntok, g, 1.0f, d.data(), g, xk, g, 0.0f, out.data(), ntok));
          for (int64_t rr = 0; rr < rb; ++rr) {
            for (int64_t t = 0; t < ntok; ++t)
              err[rr] += double(out[rr * ntok + t]) * out[rr * ntok + t];
          }
        }
        for (int64_t rr = 0; rr < rb; ++rr) {
          if (err[rr] < best_err[rr]) {
            best_err[rr] = err[rr];
            best_max[rr] = amax[rr] * factor;
          }
        }
      }
      for (int64_t rr = 0; rr < rb; ++rr) {
        float* wr = w + (r0 + rr) * cols + k * g;
        for (int64_t c = 0; c < g; ++c) wr[c] = std::clamp(wr[c], -best_max[rr], best_max[rr]);
      }
    }
  });
  return error.status();
}

}  // namespace retort::quant
