#include "quantize/scheme.h"

#include <algorithm>
#include <cmath>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/convert.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace retort::quant {
namespace {

float Fp8Max(DType t) { return t == DType::kF8E4M3 ? 448.0f : 57344.0f; }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

float QuantScheme::qmin() const {
  switch (value_type) {
    case DType::kI4:
      return -8;
    case DType::kI8:
      return -128;
    default:
      return -Fp8Max(value_type);
  }
}

float QuantScheme::qmax() const {
  switch (value_type) {
    case DType::kI4:
      return 7;
    case DType::kI8:
      return 127;
    default:
      return Fp8Max(value_type);
  }
}

std::string QuantScheme::Name() const {
  std::string s = value_type == DType::kI4       ? "int4"
                  : value_type == DType::kI8     ? "int8"
                  : value_type == DType::kF8E4M3 ? "fp8"
                                                 : "fp8-e5m2";
  absl::StrAppend(&s, "-", QuantLayoutName(granularity, group_size));
  if (!is_fp8() && !symmetric) absl::StrAppend(&s, "-asym");
  return s;
}

absl::StatusOr<QuantScheme> ParseQuantScheme(std::string_view name_view) {
  const std::string name(name_view);
  const std::string accepted =
      "expected TYPE-LAYOUT[-asym]: TYPE int4, int8, fp8, fp8-e4m3, fp8-e5m2; LAYOUT g32, g64, "
      "g128 (any gN), channel, tensor, block128 (fp8 only); e.g. int4-g128, int8-channel, "
      "fp8-block128";
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization scheme '", name, "': ", why, " (", accepted, ")"));
  };
  std::vector<std::string> parts = absl::StrSplit(name, '-');
  QuantScheme s;
  size_t i = 0;
  if (parts.empty()) return bad("empty");
  if (parts[0] == "int4" || parts[0] == "w4") {
    s.value_type = DType::kI4;
  } else if (parts[0] == "int8" || parts[0] == "w8") {
    s.value_type = DType::kI8;
  } else if (parts[0] == "fp8") {
    s.value_type = DType::kF8E4M3;
    if (parts.size() > 1 && (parts[1] == "e4m3" || parts[1] == "e5m2")) {
      s.value_type = parts[1] == "e4m3" ? DType::kF8E4M3 : DType::kF8E5M2;
      ++i;
    }
  } else {
    return bad(absl::StrCat("unknown value type '", parts[0], "'"));
  }
  ++i;
  if (i >= parts.size()) return bad("no layout");
  const std::string& layout = parts[i++];
  int64_t n = 0;
  if (layout == "channel") {
    s.granularity = QuantGranularity::kChannel;
    s.group_size = 0;
  } else if (layout == "tensor") {
    s.granularity = QuantGranularity::kTensor;
    s.group_size = 0;
  } else if (layout.size() > 1 && layout[0] == 'g' && absl::SimpleAtoi(layout.substr(1), &n)) {
    if (n <= 0 || n % 2 != 0) return bad("group size must be a positive even number");
    s.granularity = QuantGranularity::kGroup;
    s.group_size = n;
  } else if (layout.rfind("block", 0) == 0 && absl::SimpleAtoi(layout.substr(5), &n)) {
    if (!s.is_fp8()) return bad("block scales are for fp8 (DeepSeek-V3 style)");
    if (n <= 0) return bad("block size must be positive");
    s.granularity = QuantGranularity::kBlock;
    s.group_size = n;
  } else {
    return bad(absl::StrCat("unknown layout '", layout, "'"));
  }
  if (i < parts.size()) {
    if (parts[i] == "asym" || parts[i] == "sym") {
      if (s.is_fp8() && parts[i] == "asym") return bad("fp8 is symmetric only");
      if (s.granularity == QuantGranularity::kTensor && parts[i] == "asym") {
        return bad("asymmetric needs channel or group scales");
      }
      s.symmetric = parts[i] == "sym";
      ++i;
    }
  }
  if (i != parts.size()) return bad(absl::StrCat("unexpected '", parts[i], "'"));
  return s;
}

absl::Status CheckSchemeFits(const QuantScheme& scheme, int64_t rows, int64_t cols,
                             const std::string& what) {
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": empty weight [", rows, ", ", cols, "]"));
  }
  if (scheme.value_type == DType::kI4 && cols % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", cols, " input columns is odd; int4 packs two values per byte"));
  }
  if (scheme.granularity == QuantGranularity::kGroup && cols % scheme.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ", cols, " input columns are not a multiple of the group size ", scheme.group_size,
        " (", scheme.Name(), "); pick a group size that divides ", cols, " or per-channel scales"));
  }
  return absl::OkStatus();
}

namespace {

// The scale rule in f32 (see the file comment).
QuantParams ComputeQuantParamsF32(const QuantScheme& scheme, float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  QuantParams p;
  const float qmin = scheme.qmin(), qmax = scheme.qmax();
  if (scheme.is_fp8() || scheme.symmetric) {
    const float absmax = std::max(-lo, hi);
    const float range = scheme.is_fp8() ? qmax : (qmax - qmin) / 2;
    p.scale = absmax > 0 ? absmax / range : 1.0f;
    // A scale that underflows to 0 or denormal-tiny would divide to inf.
    if (!(p.scale > 0) || !std::isfinite(p.scale)) p.scale = 1.0f;
    return p;
  }
  if (hi == lo) return p;  // all zeros
  p.scale = (hi - lo) / (qmax - qmin);
  if (!(p.scale > 0) || !std::isfinite(p.scale)) {
    p.scale = 1.0f;
    return p;
  }
  p.zero = std::clamp(std::nearbyint(qmin - lo / p.scale), qmin, qmax);
  return p;
}

// The scale as stored at `t`'s width (never 0 or inf after rounding).
float StoredScale(DType t, float s) {
  float r = s;
  if (t == DType::kBF16) r = BF16ToF32(F32ToBF16(s));
  if (t == DType::kF16) r = F16ToF32(F32ToF16(s));
  return r > 0 && std::isfinite(r) ? r : s;
}

}  // namespace

QuantParams ComputeQuantParams(const QuantScheme& scheme, float lo, float hi) {
  QuantParams p = ComputeQuantParamsF32(scheme, lo, hi);
  if (scheme.scale_dtype == DType::kF32 || p.scale == 1.0f) return p;
  const float stored = StoredScale(scheme.scale_dtype, p.scale);
  if (stored == p.scale) return p;
  p.scale = stored;
  if (!scheme.is_fp8() && !scheme.symmetric) {
    p.zero = std::clamp(std::nearbyint(scheme.qmin() - std::min(lo, 0.0f) / p.scale), scheme.qmin(),
                        scheme.qmax());
  }
  return p;
}

float QuantizeValue(const QuantScheme& scheme, const QuantParams& p, float w) {
  const float x = w / p.scale;
  if (scheme.value_type == DType::kF8E4M3) return F8E4M3ToF32(F32ToF8E4M3(x));
  if (scheme.value_type == DType::kF8E5M2) {
    // e5m2 overflows to inf; saturate like e4m3 does.
    const float m = scheme.qmax();
    return F8E5M2ToF32(F32ToF8E5M2(std::clamp(x, -m, m)));
  }
  return std::clamp(std::nearbyint(x) + p.zero, scheme.qmin(), scheme.qmax());
}

QuantizedMatrix AllocateQuantized(const QuantScheme& scheme, int64_t rows, int64_t cols) {
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = scheme.value_type;
  m.granularity = scheme.granularity;
  const bool grouped = scheme.granularity == QuantGranularity::kGroup ||
                       scheme.granularity == QuantGranularity::kBlock;
  if (grouped) m.group_size = scheme.group_size;
  const Shape scale_shape = QuantScaleShape(scheme.granularity, rows, cols, scheme.group_size);
  m.values = Tensor::Zeros(scheme.value_type, {rows, cols});
  m.scales = Tensor::Zeros(DType::kF32, scale_shape);
  std::fill_n(m.scales.mutable_data<float>(), m.scales.numel(), 1.0f);
  if (!scheme.is_fp8() && !scheme.symmetric) {
    m.zero_points = Tensor::Zeros(DType::kI8, scale_shape);
  }
  return m;
}

void StoreValue(QuantizedMatrix& m, int64_t r, int64_t c, float q) {
  switch (m.value_type) {
    case DType::kI4:
      PackI4(m.values.mutable_data<uint8_t>() + r * (m.cols / 2), c, static_cast<int>(q));
      break;
    case DType::kI8:
      m.values.mutable_data<int8_t>()[r * m.cols + c] = static_cast<int8_t>(q);
      break;
    case DType::kF8E4M3:
      m.values.mutable_data<uint8_t>()[r * m.cols + c] = F32ToF8E4M3(q);
      break;
    default:
      m.values.mutable_data<uint8_t>()[r * m.cols + c] = F32ToF8E5M2(q);
  }
}

void StoreParams(QuantizedMatrix& m, int64_t scale_row, int64_t scale_col, const QuantParams& p) {
  const int64_t i = scale_row * m.scales.dim(1) + scale_col;
  m.scales.mutable_data<float>()[i] = p.scale;
  if (!m.zero_points.empty()) m.zero_points.mutable_data<int8_t>()[i] = static_cast<int8_t>(p.zero);
}

std::string FindNonFinite(const float* w, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = w[r * cols + c];
      if (!std::isfinite(v)) return absl::StrCat("row ", r, ", column ", c, " (", v, ")");
    }
  }
  return "";
}

absl::StatusOr<ScaleObserver> ParseScaleObserver(std::string_view name) {
  if (name == "minmax") return ScaleObserver::kMinMax;
  if (name == "mse") return ScaleObserver::kMse;
  if (name == "imatrix-mse" || name == "imatrix_mse") return ScaleObserver::kImatrixMse;
  return absl::InvalidArgumentError(absl::StrCat("unknown scale observer '", std::string(name),
                                                 "' (expected minmax, mse or imatrix-mse)"));
}

const char* ScaleObserverName(ScaleObserver o) {
  switch (o) {
    case ScaleObserver::kMinMax:
      return "minmax";
    case ScaleObserver::kMse:
      return "mse";
    default:
      return "imatrix-mse";
  }
}

absl::Status CheckObserverOptions(const ObserverOptions& o) {
  if (o.grid < 1) {
    return absl::InvalidArgumentError(absl::StrCat("observer grid must be >= 1, got ", o.grid));
  }
  if (!(o.max_shrink >= 0 && o.max_shrink < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("observer max shrink must be in [0, 1), got ", o.max_shrink));
  }
  return absl::OkStatus();
}

absl::Status CheckObserverInput(const ObserverOptions& o, std::span<const float> importance,
                                int64_t cols, const std::string& what) {
  RETURN_IF_ERROR(CheckObserverOptions(o));
  if (o.kind != ScaleObserver::kImatrixMse) return absl::OkStatus();
  if (static_cast<int64_t>(importance.size()) != cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the imatrix-mse observer needs the importance of each of its ", cols,
                     " input columns, got ", importance.size()));
  }
  for (size_t j = 0; j < importance.size(); ++j) {
    if (!(importance[j] >= 0) || !std::isfinite(importance[j])) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": importance of input column ", j,
                                                     " is ", importance[j],
                                                     "; it must be finite and >= 0"));
    }
  }
  return absl::OkStatus();
}

double QuantError(const QuantScheme& scheme, const QuantParams& p, const float* v, int64_t n,
                  std::span<const float> importance) {
  const bool weighted = !importance.empty();
  double sum = 0;
  if (scheme.is_fp8()) {
    for (int64_t k = 0; k < n; ++k) {
      const double d = static_cast<double>(v[k]) -
                       static_cast<double>(DequantizeValue(p, QuantizeValue(scheme, p, v[k])));
      sum += (weighted ? static_cast<double>(importance[k]) : 1.0) * d * d;
    }
    return sum;
  }
  // QuantizeValue / DequantizeValue spelled out (and in AVX2: the same
  // f32 operations, so the same reconstructions; f64 error sums).
  const float qmin = scheme.qmin(), qmax = scheme.qmax(), scale = p.scale, zero = p.zero;
  int64_t k0 = 0;
#ifdef __AVX2__
  {
    const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zero);
    const __m256 vmin = _mm256_set1_ps(qmin), vmax = _mm256_set1_ps(qmax);
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    for (; k0 + 8 <= n; k0 += 8) {
      const __m256 x = _mm256_loadu_ps(v + k0);
      __m256 q =
          _mm256_round_ps(_mm256_div_ps(x, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, vz), vmin), vmax);
      const __m256 dq = _mm256_mul_ps(vs, _mm256_sub_ps(q, vz));
      __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                                 _mm256_cvtps_pd(_mm256_castps256_ps128(dq)));
      __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),
                                 _mm256_cvtps_pd(_mm256_extractf128_ps(dq, 1)));
      d0 = _mm256_mul_pd(d0, d0);
      d1 = _mm256_mul_pd(d1, d1);
      if (weighted) {
        const __m256 w = _mm256_loadu_ps(importance.data() + k0);
        d0 = _mm256_mul_pd(d0, _mm256_cvtps_pd(_mm256_castps256_ps128(w)));
        d1 = _mm256_mul_pd(d1, _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)));
      }
      acc0 = _mm256_add_pd(acc0, d0);
      acc1 = _mm256_add_pd(acc1, d1);
    }
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, _mm256_add_pd(acc0, acc1));
    sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  }
#endif
  for (int64_t k = k0; k < n; ++k) {
    const float q = std::clamp(std::nearbyint(v[k] / scale) + zero, qmin, qmax);
    const double d = static_cast<double>(v[k]) - static_cast<double>(scale * (q - zero));
    sum += (weighted ? static_cast<double>(importance[k]) : 1.0) * d * d;
  }
  return sum;
}

QuantParams ObserveQuantParams(const QuantScheme& scheme, const ObserverOptions& o, const float* v,
                               int64_t n, std::span<const float> importance) {
  float lo = 0, hi = 0;
  for (int64_t k = 0; k < n; ++k) {
    lo = std::min(lo, v[k]);
    hi = std::max(hi, v[k]);
  }
  QuantParams best = ComputeQuantParams(scheme, lo, hi);
  if (o.kind == ScaleObserver::kMinMax || n == 0 || (lo == 0 && hi == 0)) return best;
  const std::span<const float> weights =
      o.kind == ScaleObserver::kImatrixMse ? importance : std::span<const float>();
  double best_err = QuantError(scheme, best, v, n, weights);
  if (best_err == 0) return best;
  const int steps = static_cast<int>(std::lround(o.max_shrink * o.grid));
  auto factor = [&](int i) { return static_cast<float>(1.0 - static_cast<double>(i) / o.grid); };
  QuantParams last = best;
  auto consider = [&](float l, float h) {
    const QuantParams c = ComputeQuantParams(scheme, l, h);
    // The same parameters as the last candidate measure the same error.
    if (c.scale == last.scale && c.zero == last.zero) return;
    last = c;
    const double err = QuantError(scheme, c, v, n, weights);
    if (err < best_err) {
      best_err = err;
      best = c;
    }
  };
  if (scheme.is_fp8() || scheme.symmetric) {
    for (int i = 1; i <= steps; ++i) consider(lo * factor(i), hi * factor(i));
  } else {
    for (int i = 0; i <= steps; ++i) {
      for (int j = 0; j <= steps; ++j) {
        if (i == 0 && j == 0) continue;
        consider(lo * factor(i), hi * factor(j));
      }
    }
  }
  return best;
}

absl::StatusOr<QuantizedMatrix> QuantizeRtn(const float* w, int64_t rows, int64_t cols,
                                            const QuantScheme& scheme, const std::string& what,
                                            const ObserverOptions& observer,
                                            std::span<const float> importance) {
  if (absl::Status s = CheckSchemeFits(scheme, rows, cols, what); !s.ok()) return s;
  RETURN_IF_ERROR(CheckObserverInput(observer, importance, cols, what));
  const bool imatrix = observer.kind == ScaleObserver::kImatrixMse;
  if (std::string at = FindNonFinite(w, rows, cols); !at.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": non-finite weight at ", at, "; refusing to quantize"));
  }
  QuantizedMatrix m = AllocateQuantized(scheme, rows, cols);
  auto range = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    if (r1 - r0 == 1 && observer.kind != ScaleObserver::kMinMax) {
      // One row: the values are contiguous, no gathering.
      return ObserveQuantParams(scheme, observer, w + r0 * cols + c0, c1 - c0,
                                imatrix ? importance.subspan(c0, c1 - c0) : importance);
    }
    return ObserveBlockParams(
        scheme, observer, r0, r1, c0, c1, [&](int64_t r, int64_t c) { return w[r * cols + c]; },
        importance);
  };
  auto store = [&](const QuantParams& p, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = c0; c < c1; ++c)
        StoreValue(m, r, c, QuantizeValue(scheme, p, w[r * cols + c]));
    }
  };
  switch (scheme.granularity) {
    case QuantGranularity::kTensor: {
      const QuantParams p = range(0, rows, 0, cols);
      StoreParams(m, 0, 0, p);
      ParallelFor(rows, 16, [&](int64_t r0, int64_t r1) { store(p, r0, r1, 0, cols); });
      break;
    }
    case QuantGranularity::kChannel:
    case QuantGranularity::kGroup: {
      const int64_t g = scheme.granularity == QuantGranularity::kGroup ? scheme.group_size : cols;
      ParallelFor(rows, 4, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c0 = 0; c0 < cols; c0 += g) {
            const int64_t c1 = std::min(cols, c0 + g);
            const QuantParams p = range(r, r + 1, c0, c1);
            StoreParams(m, r, c0 / g, p);
            store(p, r, r + 1, c0, c1);
          }
        }
      });
      break;
    }
    case QuantGranularity::kBlock: {
      const int64_t b = scheme.group_size;
      const int64_t brows = CeilDiv(rows, b);
      ParallelFor(brows, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t br = b0; br < b1; ++br) {
          const int64_t r0 = br * b, r1 = std::min(rows, r0 + b);
          for (int64_t c0 = 0; c0 < cols; c0 += b) {
            const int64_t c1 = std::min(cols, c0 + b);
            const QuantParams p = range(r0, r1, c0, c1);
            StoreParams(m, br, c0 / b, p);
            store(p, r0, r1, c0, c1);
          }
        }
      });
      break;
    }
  }
  return m;
}

}  // namespace retort::quant
