#include "quantize/gguf_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/ggml_blocks.h"
#include "core/thread_pool.h"

namespace retort::ggml {
namespace {

// Below this a group is treated as all zeros (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even (adding 1.5 * 2^23 leaves the rounded
// integer in the low mantissa bits); the clamp keeps the trick in range and
// the loop vectorisable.
inline int NearestInt(float v) {
  v = std::min(std::max(v, -4.0e6f), 4.0e6f);
  const float t = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &t, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// ---------------------------------------------------------------------------
// Legacy types: exactly gguf-py's numpy arithmetic, element by element.

// Index of the first element of largest magnitude (numpy's argmax of abs).
inline float SignedAbsMax(const float* x, int n) {
  float amax = std::fabs(x[0]), max = x[0];
  for (int j = 1; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

inline void MinMax(const float* x, int n, float* mn, float* mx) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  *mn = lo;
  *mx = hi;
}

// q[j] = min(qmax, trunc(x[j] * id + offset)) for an offset that keeps it >= 0.
inline void TruncCodes(const float* x, int n, float id, float offset, int qmax, uint8_t* q) {
  for (int j = 0; j < n; ++j)
    q[j] = static_cast<uint8_t>(std::min(qmax, static_cast<int>(x[j] * id + offset)));
}

inline void PackNibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<uint8_t>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
}

inline void PackHighBits(const uint8_t* q, uint8_t* qh) {
  uint32_t bits = 0;
  for (int j = 0; j < 32; ++j) bits |= static_cast<uint32_t>(q[j] >> 4) << j;
  std::memcpy(qh, &bits, 4);
}

inline float InverseOrZero(float d) { return d != 0.f ? 1.f / d : 0.f; }

// The legacy layouts: 4 bits, or 5 with the fifth in qh; symmetric (Q4_0,
// Q5_0) or with a min (Q4_1, Q5_1).
template <typename Block>
constexpr int kLegacyBits = requires(const Block& b) {
  b.qh;
}
? 5 : 4;
template <typename Block>
constexpr bool kLegacyHasMin = requires(const Block& b) {
  b.m;
};

// Q4_0 / Q5_0: symmetric, d = (signed value of largest magnitude) / -2^(bits-1).
template <typename Block>
void QuantizeSymmetric(const float* x, Block* y, int64_t nb) {
  constexpr int kBits = kLegacyBits<Block>;
  constexpr int kHalf = 1 << (kBits - 1);
  uint8_t q[32];
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    const float d = SignedAbsMax(x, 32) / -static_cast<float>(kHalf);
    TruncCodes(x, 32, InverseOrZero(d), kHalf + 0.5f, 2 * kHalf - 1, q);
    y[i].d = F32ToF16(d);
    if constexpr (kBits == 5) PackHighBits(q, y[i].qh);
    PackNibbles(q, y[i].qs);
  }
}

// Q4_1 / Q5_1: x = d * q + min over the block's [min, max].
template <typename Block>
void QuantizeMinMax(const float* x, Block* y, int64_t nb) {
  constexpr int kBits = kLegacyBits<Block>;
  constexpr int kMaxCode = (1 << kBits) - 1;
  uint8_t q[32];
  float sub[32];
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float mn, mx;
    MinMax(x, 32, &mn, &mx);
    const float d = (mx - mn) / static_cast<float>(kMaxCode);
    for (int j = 0; j < 32; ++j) sub[j] = x[j] - mn;
    TruncCodes(sub, 32, InverseOrZero(d), 0.5f, kMaxCode, q);
    y[i].d = F32ToF16(d);
    y[i].m = F32ToF16(mn);
    if constexpr (kBits == 5) PackHighBits(q, y[i].qh);
    PackNibbles(q, y[i].qs);
  }
}

inline float AbsMax(const float* x, int n) {
  float amax = 0.f;
  for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

// QuantizeBlocks(x, importance, y, nb): nb blocks of y from x, one overload
// per block struct (ggml_blocks.h's VisitBlockType picks it). The Q8 types
// have no importance-weighted form and ignore `importance`.

// std::round is round-half-away-from-zero, which is what gguf-py's np_roundf computes.
void QuantizeBlocks(const float* x, const float*, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    const float d = AbsMax(x, 32) / 127.f;
    const float id = InverseOrZero(d);
    y[i].d = F32ToF16(d);
    for (int j = 0; j < 32; ++j) y[i].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

// ggml's reference: as Q8_0, plus s = d * sum(q) for the Q4_1/Q5_1 dot products.
void QuantizeBlocks(const float* x, const float*, BlockQ8_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    const float d = AbsMax(x, 32) / 127.f;
    const float id = InverseOrZero(d);
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
      sum += y[i].qs[j];
    }
    y[i].d = F32ToF16(d);
    y[i].s = F32ToF16(static_cast<float>(sum) * d);
  }
}

// ggml's reference: the largest-magnitude element maps to -127, d stays f32,
// bsums are the sums of each 16 codes.
void QuantizeBlocks(const float* x, const float*, BlockQ8_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    const float max = SignedAbsMax(x, kQK_K);
    if (max == 0.f) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kQK_K; ++j)
      y[i].qs[j] = static_cast<int8_t>(std::min(127, NearestInt(iscale * x[j])));
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * g + j];
      y[i].bsums[g] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.f / iscale;
  }
}

// ---------------------------------------------------------------------------
// Searches shared by the k-quants (and the legacy types with importance).

// Fits x ~ scale * L + min with L in [0, nmax] and min <= 0, minimising the
// weighted squared error (absolute error when use_mad). Starts from the
// min/max grid, then tries nstep + 1 grids stretched by rmin + rdelta * k
// levels, each followed by the weighted least-squares scale and min for its
// codes, and keeps the best. Returns the scale; *neg_min = -min >= 0.
float FitScaleMin(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min,
                  float rmin, float rdelta, int nstep, bool use_mad) {
  float mn = x[0], mx = x[0], sum_w = 0.f, sum_x = 0.f;
  for (int i = 0; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  mn = std::min(mn, 0.f);
  if (mx == mn) {
    std::memset(L, 0, n);
    *neg_min = -mn;
    return 0.f;
  }
  auto error = [&](float scale, float min, const uint8_t* codes) {
    float err = 0.f;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * codes[i] + min - x[i];
      err += w[i] * (use_mad ? std::fabs(diff) : diff * diff);
    }
    return err;
  };
  float iscale = nmax / (mx - mn);
  float scale = 1.f / iscale, min = mn;
  for (int i = 0; i < n; ++i)
    L[i] = static_cast<uint8_t>(std::clamp(NearestInt(iscale * (x[i] - mn)), 0, nmax));
  float best = error(scale, min, L);
  uint8_t aux[kQK_K];
  for (int step = 0; step <= nstep; ++step) {
    iscale = (rmin + rdelta * step + nmax) / (mx - mn);
    float sum_l = 0.f, sum_l2 = 0.f, sum_xl = 0.f;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * (x[i] - mn)), 0, nmax);
      aux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0.f)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0.f) {  // the format only subtracts
      this_min = 0.f;
      this_scale = sum_xl / sum_l2;
    }
    const float err = error(this_scale, this_min, aux);
    if (err < best) {
      std::memcpy(L, aux, n);
      best = err;
      scale = this_scale;
      min = this_min;
    }
  }
  *neg_min = -min;
  return scale;
}

// What the symmetric fits start from: the signed value of largest
// magnitude, or 0 (with every code 0) for a group of zeros.
inline float SignedAbsMaxOrZeroCodes(const float* x, int n, uint8_t* L) {
  const float max = SignedAbsMax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {
    std::memset(L, 0, n);
    return 0.f;
  }
  return max;
}

// The weight of x[i] in the symmetric fits: w[i], or x[i]^2 when w is null.
inline float WeightOrSquare(const float* w, const float* x, int i) {
  return w ? w[i] : x[i] * x[i];
}

// Fits x ~ scale * (L - nmax) with L in [0, 2 nmax - 1], maximising the
// weighted correlation sum(w x l)^2 / sum(w l^2) over 19 grids around
// nmax / max|x|. w null: weights x^2. Returns the (signed) scale.
float FitSymmetric(int n, int nmax, const float* x, uint8_t* L, const float* w) {
  const float max = SignedAbsMaxOrZeroCodes(x, n, L);
  if (max == 0.f) return 0.f;
  auto weight = [&](int i) { return WeightOrSquare(w, x, i); };
  auto sums = [&](float iscale, float* sumlx, float* suml2) {
    float a = 0.f, b = 0.f;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
      a += weight(i) * x[i] * l;
      b += weight(i) * l * l;
    }
    *sumlx = a;
    *suml2 = b;
  };
  auto codes = [&](float iscale) {
    for (int i = 0; i < n; ++i)
      L[i] = static_cast<uint8_t>(nmax + std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
  };
  float sumlx, suml2;
  float iscale = -nmax / max;
  sums(iscale, &sumlx, &suml2);
  codes(iscale);
  float scale = suml2 > 0.f ? sumlx / suml2 : 0.f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sums(iscale, &sumlx, &suml2);
    if (suml2 > 0.f && sumlx * sumlx > best * suml2) {
      codes(iscale);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Quantizes non-negative values x (sub-block scales or mins) to L in
// [0, nmax] against one scale, minimising sum w (x - scale L)^2: a few grids
// around nmax / max, then the least-squares scale for the chosen codes.
float FitPositive(int n, int nmax, const float* x, uint8_t* L, const float* w) {
  float max = 0.f, sum_w = 0.f;
  for (int i = 0; i < n; ++i) {
    max = std::max(max, x[i]);
    sum_w += w[i];
  }
  if (max < kGroupMaxEps) {
    std::memset(L, 0, n);
    return 0.f;
  }
  auto wt = [&](int i) { return sum_w > 0.f ? w[i] : 1.f; };
  auto quantize = [&](float iscale) {
    for (int i = 0; i < n; ++i)
      L[i] = static_cast<uint8_t>(std::clamp(NearestInt(iscale * x[i]), 0, nmax));
  };
  auto error = [&](float scale) {
    float err = 0.f;
    for (int i = 0; i < n; ++i) {
      const float diff = x[i] - scale * L[i];
      err += wt(i) * diff * diff;
    }
    return err;
  };
  float best_iscale = nmax / max, best_err = std::numeric_limits<float>::infinity();
  for (int is = -4; is <= 4; ++is) {
    const float iscale = (nmax + 0.1f * is) / max;
    quantize(iscale);
    const float err = error(1.f / iscale);
    if (err < best_err) {
      best_err = err;
      best_iscale = iscale;
    }
  }
  quantize(best_iscale);
  float sumlx = 0.f, suml2 = 0.f;
  for (int i = 0; i < n; ++i) {
    sumlx += wt(i) * x[i] * L[i];
    suml2 += wt(i) * L[i] * L[i];
  }
  return suml2 > 0.f ? sumlx / suml2 : 1.f / best_iscale;
}

// Q3_K's sub-block fit: symmetric codes in [-nmax, nmax - 1] from the
// max-magnitude grid, then coordinate-wise moves of single codes while they
// raise sum(w x l)^2 / sum(w l^2). L gets l + nmax. w null: weights x^2.
float FitSymmetricRefined(int n, int nmax, const float* x, uint8_t* L, const float* w) {
  const float max = SignedAbsMaxOrZeroCodes(x, n, L);
  if (max == 0.f) return 0.f;
  auto weight = [&](int i) { return WeightOrSquare(w, x, i); };
  const float iscale = -nmax / max;
  int l[kQK_K];
  float sumlx = 0.f, suml2 = 0.f;
  for (int i = 0; i < n; ++i) {
    l[i] = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
    sumlx += weight(i) * x[i] * l[i];
    suml2 += weight(i) * l[i] * l[i];
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float wi = weight(i);
      float slx = sumlx - wi * x[i] * l[i];
      if (!(slx > 0.f)) continue;
      float sl2 = suml2 - wi * l[i] * l[i];
      const int nl = std::clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
      if (nl == l[i]) continue;
      slx += wi * x[i] * nl;
      sl2 += wi * nl * nl;
      if (sl2 > 0.f && slx * slx * suml2 > sumlx * sumlx * sl2) {
        l[i] = nl;
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(l[i] + nmax);
  return suml2 > 0.f ? sumlx / suml2 : 0.f;
}

// llama.cpp's importance weighting: w = importance * sqrt(sigma2 + x^2).
// Falls back to `fallback` where every weight of the group is zero.
void ImportanceWeights(const float* x, const float* importance, int n, float sigma2, float* w) {
  float sum = 0.f;
  for (int i = 0; i < n; ++i) {
    w[i] = importance[i] * std::sqrt(sigma2 + x[i] * x[i]);
    sum += w[i];
  }
  if (!(sum > 0.f)) {
    for (int i = 0; i < n; ++i) w[i] = std::sqrt(sigma2 + x[i] * x[i]);
  }
}

float MeanSquare(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(s / n);
}

// Legacy types with importance (llama.cpp's *_impl): the codes and scale
// come from a weighted search instead of the min/max rule.
template <typename Block>
void QuantizeLegacyWeighted(const float* x, const float* importance, int64_t n, Block* y) {
  constexpr int kBits = kLegacyBits<Block>;
  const float sigma2 = MeanSquare(x, n);
  float w[32];
  uint8_t L[32];
  for (int64_t i = 0; i < n / 32; ++i, x += 32, importance += 32) {
    ImportanceWeights(x, importance, 32, sigma2, w);
    if constexpr (kLegacyHasMin<Block>) {
      float neg_min;
      const float d = FitScaleMin(32, (1 << kBits) - 1, x, w, L, &neg_min, -0.9f, 0.05f, 36, false);
      y[i].d = F32ToF16(d);
      y[i].m = F32ToF16(-neg_min);
    } else {
      y[i].d = F32ToF16(FitSymmetric(32, 1 << (kBits - 1), x, L, w));
    }
    PackNibbles(L, y[i].qs);
    if constexpr (kBits == 5) PackHighBits(L, y[i].qh);
  }
}

template <typename Block>
constexpr bool kIsLegacyBlock =
    std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ4_1> ||
    std::is_same_v<Block, BlockQ5_0> || std::is_same_v<Block, BlockQ5_1>;

// Q4_0 / Q4_1 / Q5_0 / Q5_1.
template <typename Block>
requires kIsLegacyBlock<Block>
void QuantizeBlocks(const float* x, const float* importance, Block* y, int64_t nb) {
  if (importance) {
    QuantizeLegacyWeighted(x, importance, nb * 32, y);
  } else if constexpr (kLegacyHasMin<Block>) {
    QuantizeMinMax(x, y, nb);
  } else {
    QuantizeSymmetric(x, y, nb);
  }
}

// ---------------------------------------------------------------------------
// k-quants.

// llama.cpp's sigma2 for the k-quants' importance weights: 2 * mean(x^2)
// over the super-block (an f32 sum in order).
inline float SuperBlockSigma2(const float* x) {
  float sum_x2 = 0.f;
  for (int l = 0; l < kQK_K; ++l) sum_x2 += x[l] * x[l];
  return 2.f * sum_x2 / kQK_K;
}

// Q2_K / Q4_K / Q5_K without importance: the n_sub sub-block scales and
// mins (>= 0) as codes ls, lm in [0, levels] of the super-scales
// *d = max scale / levels and *dmin = max min / levels.
void CodeScalesMinsByMax(const float* scales, const float* mins, int n_sub, int levels, uint8_t* ls,
                         uint8_t* lm, float* d, float* dmin) {
  float max_scale = 0.f, max_min = 0.f;
  for (int j = 0; j < n_sub; ++j) {
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0.f ? levels / max_scale : 0.f;
  const float inv_min = max_min > 0.f ? levels / max_min : 0.f;
  for (int j = 0; j < n_sub; ++j) {
    ls[j] = static_cast<uint8_t>(std::min(levels, NearestInt(inv_scale * scales[j])));
    lm[j] = static_cast<uint8_t>(std::min(levels, NearestInt(inv_min * mins[j])));
  }
  *d = max_scale / levels;
  *dmin = max_min / levels;
}

// Q2_K / Q4_K / Q5_K with importance: each of the n_sub sub-blocks of
// sub_len values gets its weighted scale-and-min fit (codes L in [0, nmax]),
// then the scales and the mins are fitted to codes ls, lm in [0, levels],
// each weighted by its sub-block's total weight.
void FitScalesMinsWeighted(const float* x, const float* importance, int n_sub, int sub_len,
                           int nmax, int levels, uint8_t* L, uint8_t* ls, uint8_t* lm, float* d,
                           float* dmin) {
  const float sigma2 = SuperBlockSigma2(x);
  float scales[16], mins[16], sw[16], w[32];
  for (int j = 0; j < n_sub; ++j) {
    ImportanceWeights(x + sub_len * j, importance + sub_len * j, sub_len, sigma2, w);
    sw[j] = 0.f;
    for (int l = 0; l < sub_len; ++l) sw[j] += w[l];
    scales[j] = FitScaleMin(sub_len, nmax, x + sub_len * j, w, L + sub_len * j, &mins[j], -0.9f,
                            0.05f, 36, false);
  }
  *d = FitPositive(n_sub, levels, scales, ls, sw);
  *dmin = FitPositive(n_sub, levels, mins, lm, sw);
}

// The final codes L in [0, nmax] against the scales as stored: sub-block j
// decodes as (d * ls[j]) * L - dmin * lm[j]; one whose scale is 0 keeps its
// codes.
void CodesAgainstScalesMins(const float* x, int n_sub, int sub_len, int nmax, float d, float dmin,
                            const uint8_t* ls, const uint8_t* lm, uint8_t* L) {
  for (int j = 0; j < n_sub; ++j) {
    const float dl = d * ls[j];
    if (dl == 0.f) continue;
    const float dm = dmin * lm[j];
    for (int l = 0; l < sub_len; ++l)
      L[sub_len * j + l] =
          static_cast<uint8_t>(std::clamp(NearestInt((x[sub_len * j + l] + dm) / dl), 0, nmax));
  }
}

// Q3_K / Q6_K: each of the 16 sub-blocks of 16 fitted on its own by
// fit(16, nmax, x, L, w) (FitSymmetric or FitSymmetricRefined), w null
// without importance (else llama.cpp's weights). Returns the sub-block scale
// of largest magnitude.
float FitSymmetricSubBlocks(const float* x, const float* qw,
                            float (*fit)(int, int, const float*, uint8_t*, const float*), int nmax,
                            float* scales, uint8_t* L) {
  const float sigma2 = qw ? SuperBlockSigma2(x) : 0.f;
  float w[16];
  float max_scale = 0.f, max_abs_scale = 0.f;
  for (int j = 0; j < 16; ++j) {
    if (qw) ImportanceWeights(x + 16 * j, qw + 16 * j, 16, sigma2, w);
    scales[j] = fit(16, nmax, x + 16 * j, L + 16 * j, qw ? w : nullptr);
    if (std::fabs(scales[j]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  return max_scale;
}

// Packs 6-bit scales and mins of 8 sub-blocks as UnpackKScaleMin reads them.
void PackKScalesMins(const uint8_t* ls, const uint8_t* lm, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((ls[j] & 63) | ((ls[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((lm[j] & 63) | ((lm[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4));
  }
}

// Q4_K / Q5_K: 8 sub-blocks of 32 with a scale and a min each, both stored
// as 6-bit multiples of the f16 super-scales d and dmin. Fills codes L (0..nmax).
void QuantizeScaleMinSuperBlock(const float* x, const float* importance, int nmax, uint8_t* L,
                                uint16_t* d_out, uint16_t* dmin_out, uint8_t* packed_scales) {
  float scales[8], mins[8], w[32];
  uint8_t ls[8], lm[8];
  float d, dmin;
  if (importance == nullptr) {
    for (int j = 0; j < 8; ++j) {
      const float* xs = x + 32 * j;
      float sum_x2 = 0.f;
      for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(xs[l]);
      scales[j] = nmax == 15
                      ? FitScaleMin(32, 15, xs, w, L + 32 * j, &mins[j], -1.f, 0.1f, 20, false)
                      : FitScaleMin(32, 31, xs, w, L + 32 * j, &mins[j], -0.5f, 0.1f, 15, false);
    }
    CodeScalesMinsByMax(scales, mins, 8, 63, ls, lm, &d, &dmin);
  } else {
    FitScalesMinsWeighted(x, importance, 8, 32, nmax, 63, L, ls, lm, &d, &dmin);
  }
  PackKScalesMins(ls, lm, packed_scales);
  *d_out = F32ToF16(d);
  *dmin_out = F32ToF16(dmin);
  // Final codes against the scales as stored (f16 super-scale times 6 bits).
  CodesAgainstScalesMins(x, 8, 32, nmax, F16ToF32(*d_out), F16ToF32(*dmin_out), ls, lm, L);
}

void QuantizeBlocks(const float* x, const float* importance, BlockQ4_K* y, int64_t nb) {
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    QuantizeScaleMinSuperBlock(x, importance ? importance + i * kQK_K : nullptr, 15, L, &y[i].d,
                               &y[i].dmin, y[i].scales);
    // Sub-blocks 2c and 2c + 1 share bytes qs[32c ..]: low and high nibble.
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void QuantizeBlocks(const float* x, const float* importance, BlockQ5_K* y, int64_t nb) {
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    QuantizeScaleMinSuperBlock(x, importance ? importance + i * kQK_K : nullptr, 31, L, &y[i].d,
                               &y[i].dmin, y[i].scales);
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int a = L[64 * c + l], b = L[64 * c + 32 + l];
        y[i].qs[32 * c + l] = static_cast<uint8_t>((a & 15) | ((b & 15) << 4));
        y[i].qh[l] |= static_cast<uint8_t>(((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
      }
    }
  }
}

void QuantizeBlocks(const float* x, const float* importance, BlockQ6_K* y, int64_t nb) {
  uint8_t L[kQK_K];
  float scales[16];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    const float* qw = importance ? importance + i * kQK_K : nullptr;
    const float max_scale = FitSymmetricSubBlocks(x, qw, FitSymmetric, 32, scales, L);
    if (std::fabs(max_scale) < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = F32ToF16(1.f / iscale);
    for (int j = 0; j < 16; ++j)
      y[i].scales[j] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[j])));
    const float df = F16ToF32(y[i].d);
    for (int j = 0; j < 16; ++j) {
      const float dl = df * y[i].scales[j];
      if (dl == 0.f) continue;
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] =
            static_cast<uint8_t>(32 + std::clamp(NearestInt(x[16 * j + l] / dl), -32, 31));
    }
    // Each half of 128: ql[l] holds elements l and l + 64, ql[l + 32] holds
    // l + 32 and l + 96; qh[l] the top two bits of l, l + 32, l + 64, l + 96.
    for (int h = 0; h < 2; ++h) {
      const uint8_t* q = L + 128 * h;
      uint8_t* ql = y[i].ql + 64 * h;
      uint8_t* qh = y[i].qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((q[l] & 15) | ((q[l + 64] & 15) << 4));
        ql[l + 32] = static_cast<uint8_t>((q[l + 32] & 15) | ((q[l + 96] & 15) << 4));
        qh[l] = static_cast<uint8_t>((q[l] >> 4) | ((q[l + 32] >> 4) << 2) |
                                     ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6));
      }
    }
  }
}

// Four 2-bit codes per byte: element 128h + 32s + l at bits 2s of qs[32h + l].
void Pack2Bit(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* q = L + 128 * h + l;
      qs[32 * h + l] = static_cast<uint8_t>(q[0] | (q[32] << 2) | (q[64] << 4) | (q[96] << 6));
    }
}

void QuantizeBlocks(const float* x, const float* importance, BlockQ2_K* y, int64_t nb) {
  uint8_t L[kQK_K], ls[16], lm[16];
  float scales[16], mins[16], w[16];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    const float* qw = importance ? importance + i * kQK_K : nullptr;
    float d, dmin;
    if (qw == nullptr) {
      for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l) w[l] = std::fabs(x[16 * j + l]);
        scales[j] = FitScaleMin(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
      }
      CodeScalesMinsByMax(scales, mins, 16, 15, ls, lm, &d, &dmin);
    } else {
      FitScalesMinsWeighted(x, qw, 16, 16, 3, 15, L, ls, lm, &d, &dmin);
    }
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(ls[j] | (lm[j] << 4));
    y[i].d = F32ToF16(d);
    y[i].dmin = F32ToF16(dmin);
    CodesAgainstScalesMins(x, 16, 16, 3, F16ToF32(y[i].d), F16ToF32(y[i].dmin), ls, lm, L);
    Pack2Bit(L, y[i].qs);
  }
}

void QuantizeBlocks(const float* x, const float* importance, BlockQ3_K* y, int64_t nb) {
  uint8_t L[kQK_K];
  int ls[16];
  float scales[16];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    const float* qw = importance ? importance + i * kQK_K : nullptr;
    const float max_scale = FitSymmetricSubBlocks(x, qw, FitSymmetricRefined, 4, scales, L);
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    float df = 0.f;
    if (max_scale != 0.f) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        const int l = std::clamp(NearestInt(iscale * scales[j]), -32, 31) + 32;
        ls[j] = l - 32;
        if (j < 8) {
          y[i].scales[j] = static_cast<uint8_t>(l & 15);
        } else {
          y[i].scales[j - 8] |= static_cast<uint8_t>((l & 15) << 4);
        }
        y[i].scales[8 + j % 4] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
      }
      y[i].d = F32ToF16(1.f / iscale);
      df = F16ToF32(y[i].d);
    } else {
      y[i].d = 0;
      for (int j = 0; j < 16; ++j) ls[j] = 0;
    }
    for (int j = 0; j < 16; ++j) {
      const float dl = df * ls[j];
      if (dl == 0.f) continue;
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = static_cast<uint8_t>(4 + std::clamp(NearestInt(x[16 * j + l] / dl), -4, 3));
    }
    // The high bit of element e is bit e / 32 of hmask[e % 32]; set means +0, clear means -4.
    std::memset(y[i].hmask, 0, sizeof(y[i].hmask));
    for (int e = 0; e < kQK_K; ++e) {
      if (L[e] > 3) {
        y[i].hmask[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
        L[e] -= 4;
      }
    }
    Pack2Bit(L, y[i].qs);
  }
}

absl::Status CheckInput(DType type, const float* x, int64_t n, const float* importance) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]))
      return absl::InvalidArgumentError(absl::StrCat("quantizing to ", std::string(DTypeName(type)),
                                                     ": element ", i, " is ", x[i]));
  }
  if (importance) {
    for (int64_t i = 0; i < n; ++i) {
      if (!(importance[i] >= 0.f) || !std::isfinite(importance[i]))
        return absl::InvalidArgumentError(
            absl::StrCat("quantizing to ", std::string(DTypeName(type)), ": importance weight ", i,
                         " is ", importance[i], " (expected finite and >= 0)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// Every ggml block type has an encoder below.
bool CanQuantize(DType type) { return IsBlockQuantized(type); }

absl::Status QuantizeRow(DType type, const float* x, int64_t n, void* out,
                         const float* importance) {
  if (!CanQuantize(type))
    return absl::InvalidArgumentError(
        absl::StrCat("no ggml block encoder for dtype ", std::string(DTypeName(type))));
  const int block = DTypeBlockElems(type);
  if (n <= 0 || n % block != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("quantizing to ", std::string(DTypeName(type)), ": row of ", n,
                     " elements is not a positive multiple of the block size ", block));
  if (absl::Status s = CheckInput(type, x, n, importance); !s.ok()) return s;
  VisitBlockType(type, [&]<typename Block>(Block*) {
    QuantizeBlocks(x, importance, static_cast<Block*>(out), n / block);
  });
  return absl::OkStatus();
}

absl::StatusOr<Tensor> QuantizeTensor(const Tensor& f32_rows, DType type,
                                      const float* importance_per_column) {
  const std::string type_name(DTypeName(type));
  if (f32_rows.empty() || f32_rows.rank() == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("quantizing to ", type_name, ": empty or scalar tensor"));
  const DType src_type = f32_rows.dtype();
  if (src_type != DType::kF32 && src_type != DType::kF16 && src_type != DType::kBF16)
    return absl::InvalidArgumentError(absl::StrCat("quantizing to ", type_name, ": source dtype ",
                                                   std::string(DTypeName(src_type)),
                                                   " (expected F32, F16 or BF16)"));
  if (!CanQuantize(type))
    return absl::InvalidArgumentError(absl::StrCat("no ggml block encoder for dtype ", type_name));
  const int64_t cols = f32_rows.dim(-1);
  const int block = DTypeBlockElems(type);
  if (cols <= 0 || cols % block != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("quantizing ", ShapeString(f32_rows.shape()), " to ", type_name, ": rows of ",
                     cols, " elements are not a multiple of the block size ", block));
  const int64_t rows = f32_rows.numel() / cols;
  Tensor out = Tensor::Zeros(type, f32_rows.shape());
  const size_t row_bytes = DTypeBytes(type, cols);
  const size_t src_row_bytes = DTypeBytes(src_type, cols);
  const char* src = static_cast<const char*>(f32_rows.raw());
  char* dst = static_cast<char*>(out.mutable_raw());

  std::mutex mu;
  int64_t first_bad_row = -1;
  absl::Status first_error;
  // About 64k elements per task: enough work to amortise the dispatch.
  const int64_t grain = std::max<int64_t>(1, 65536 / cols);
  ParallelFor(rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(src_type == DType::kF32 ? 0 : cols);
    for (int64_t r = begin; r < end; ++r) {
      const float* x = reinterpret_cast<const float*>(src + r * src_row_bytes);
      if (src_type != DType::kF32) {
        ConvertToF32(src_type, src + r * src_row_bytes, buf.data(), cols);
        x = buf.data();
      }
      absl::Status s = QuantizeRow(type, x, cols, dst + r * row_bytes, importance_per_column);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_bad_row < 0 || r < first_bad_row) {
          first_bad_row = r;
          first_error = s;
        }
        return;
      }
    }
  });
  if (first_bad_row >= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("row ", first_bad_row, ": ", first_error.message()));
  return out;
}

}  // namespace retort::ggml
