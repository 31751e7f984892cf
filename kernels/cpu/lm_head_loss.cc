// Fused LM-head losses on the CPU backend (Backend::LmHeadLoss; see
// kernels/lm_head_loss.h for the conventions).
//
// Per chunk of unmasked rows the work is three GEMM families and one row
// pass:
//   logits[r, V] = hbuf[r, d] · W^T          (blocks of kVocabBlock rows of W)
//   row pass: softmax statistics, loss, dL/dlogits written over the logits
//   dhbuf[r, d]  = G[r, V] · W                (blocks of kDimBlock columns)
//   dW[V, d]    += G^T · hbuf                 (blocks of kVocabBlock rows)
// Each GEMM block and each row has a fixed extent, so the result does not
// depend on how many threads share the blocks.
//
// Gradient of a divergence D(q, p) with p = softmax(s), s = z / T: for a
// bucketing of the vocabulary (dense: one token per bucket; top-k tail: K
// single-token buckets plus the tail) with bucket masses P_b,
//   dD/ds_j = p_j * (g_b(j) - sum_b P_b g_b),  g_b = dD/dP_b.
// With D scaled by T^2 and ds/dz = 1/T the logit gradient is T * dD/ds.
//   forward KL: g_b = -Q_b / P_b           -> dense p_j - q_j
//   reverse KL: g_b = log P_b - log Q_b + 1 -> dense p_j (log p_j - log q_j - D)
//   JSD_beta:   g_b = (1 - beta) (log P_b - log M_b)
//               (the teacher term's dependence on P through M cancels the
//               +1 and the P/M terms of the student term).
#include "kernels/cpu/lm_head_loss.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/named_values.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/simd.h"

namespace retort {
namespace {

constexpr int64_t kVocabBlock = 512;  // rows of W per sgemm block
constexpr int64_t kDimBlock = 128;    // columns of dh per sgemm block
constexpr int64_t kElemBlock = 256;   // elements per vectorised step of a row pass
// log of the floor applied to probabilities whose log is taken (1e-38).
constexpr double kLogFloor = -87.49823353377374;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// exp of one float through the same polynomial as simd::Exp8, so a value
// recomputed for one element equals the one summed by the vector loops.
inline float Exp1(float x) { return _mm256_cvtss_f32(cpu::simd::Exp8(_mm256_set1_ps(x))); }

// out[i] = exp(x[i] * scale - shift) (x may equal out).
void ShiftedExp(const float* x, int64_t n, float scale, float shift, float* out) {
  const __m256 sv = _mm256_set1_ps(scale), hv = _mm256_set1_ps(shift);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, cpu::simd::Exp8(_mm256_fmsub_ps(_mm256_loadu_ps(x + i), sv, hv)));
  }
  for (; i < n; ++i) out[i] = Exp1(std::fma(x[i], scale, -shift));
}

// out[i] = x[i] * scale - shift - sub (the log-softmax of x * scale when
// shift is the scaled max and sub the log of the sum).
void ShiftedLog(const float* x, int64_t n, float scale, float shift, float sub, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::fma(x[i], scale, -shift) - sub;
}

void ExpInPlace(float* x, int64_t n) { ShiftedExp(x, n, 1.f, 0.f, x); }

// Sum in f64 (fixed order: eight lanes, then lanes in order).
double SumF64(const float* x, int64_t n) {
  __m256d a = _mm256_setzero_pd(), b = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    a = _mm256_add_pd(a, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    b = _mm256_add_pd(b, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  alignas(32) double la[4], lb[4];
  _mm256_store_pd(la, a);
  _mm256_store_pd(lb, b);
  double s = ((la[0] + lb[0]) + (la[1] + lb[1])) + ((la[2] + lb[2]) + (la[3] + lb[3]));
  for (; i < n; ++i) s += x[i];
  return s;
}

// sum_j exp(x_j * scale - shift) in f64.
double SumShiftedExp(const float* x, int64_t n, float scale, float shift) {
  float buf[kElemBlock];
  double s = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kElemBlock) {
    const int64_t nb = std::min(kElemBlock, n - j0);
    ShiftedExp(x + j0, nb, scale, shift, buf);
    s += SumF64(buf, nb);
  }
  return s;
}

double LogAddExp(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  const double m = std::max(a, b);
  return m + std::log1p(std::exp(-std::abs(a - b)));
}

// The divergence actually computed (JSD at beta 0 / 1 is forward / reverse KL).
struct Divergence {
  KdDivergence kind;
  double beta;
};

// D over buckets and c_b = g_b - sum_b' P_b' g_b' (see the file comment).
// P, logP: student; Q, logQ: teacher (logQ may be -inf where Q is 0).
double BucketDivergence(const Divergence& div, int64_t nb, const double* P, const double* logP,
                        const double* Q, const double* logQ, double* c) {
  double D = 0, gbar = 0;
  switch (div.kind) {
    case KdDivergence::kForwardKl:
      for (int64_t b = 0; b < nb; ++b) {
        if (Q[b] > 0) D += Q[b] * (logQ[b] - std::max(logP[b], kLogFloor));
        c[b] = P[b] > 0 ? -Q[b] / P[b] : 0;
        if (P[b] > 0) gbar -= Q[b];
      }
      break;
    case KdDivergence::kReverseKl:
      for (int64_t b = 0; b < nb; ++b) {
        const double lq = std::max(logQ[b], kLogFloor);
        if (P[b] > 0) D += P[b] * (logP[b] - lq);
        c[b] = logP[b] - lq + 1;
        if (P[b] > 0) gbar += P[b] * c[b];
      }
      break;
    case KdDivergence::kJsd: {
      const double lb = std::log(div.beta), l1b = std::log1p(-div.beta);
      double klq = 0, klp = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const double lm = LogAddExp(lb + logQ[b], l1b + logP[b]);
        if (Q[b] > 0) klq += Q[b] * (logQ[b] - lm);
        if (P[b] > 0) klp += P[b] * (logP[b] - lm);
        c[b] = (1 - div.beta) * (logP[b] - lm);
      }
      D = div.beta * klq + (1 - div.beta) * klp;
      gbar = (1 - div.beta) * klp;
      break;
    }
    case KdDivergence::kSampledReverseKl:  // per sampled token: CeRow, never here
      break;
  }
  for (int64_t b = 0; b < nb; ++b) c[b] -= gbar;
  return D;
}

// Everything a row pass needs besides its own data.
struct RowContext {
  int64_t vocab;
  float temperature, inv_t;
  bool unit_t;    // temperature == 1
  float ce_coef;  // grad_scale * ce_weight
  float kd_coef;  // grad_scale * kd_weight * T (d(T^2 D)/dz = T dD/ds)
  bool kd;        // kd_weight > 0
  Divergence div;
  TopKTail topk_tail;
  int64_t k;
};

struct RowLoss {
  double ce = 0;
  double kd = 0;  // D (the caller multiplies by T^2)
};

// Student statistics of one row: max, and log of the sums of exp at T = 1
// and at the KD temperature.
struct StudentStats {
  float zmax;
  double log_s1;  // log sum exp(z - zmax)
  float shift_t;  // zmax / T
  double log_st;  // log sum exp(z / T - zmax / T)
  double st;      // sum exp(z / T - zmax / T)
};

StudentStats ComputeStudentStats(const float* z, const RowContext& ctx, bool need_t) {
  StudentStats s;
  s.zmax = cpu::simd::RowMax(z, ctx.vocab);
  const double s1 = SumShiftedExp(z, ctx.vocab, 1.f, s.zmax);
  s.log_s1 = std::log(s1);
  s.shift_t = s.zmax * ctx.inv_t;
  if (ctx.unit_t || !need_t) {
    s.st = s1;
    s.shift_t = s.zmax;
  } else {
    s.st = SumShiftedExp(z, ctx.vocab, ctx.inv_t, s.shift_t);
  }
  s.log_st = std::log(s.st);
  return s;
}

// z[j] <- ce_coef * p1_j + kd_tail * p_j where p1 = softmax(z), p =
// softmax(z / T) (one pass; the one-hot term is the caller's).
void SoftmaxGradPass(float* z, const RowContext& ctx, const StudentStats& st, float kd_tail) {
  float e1[kElemBlock], et[kElemBlock];
  const float ls1 = static_cast<float>(st.log_s1), lst = static_cast<float>(st.log_st);
  const bool need_t = kd_tail != 0 && !ctx.unit_t;
  const float coef1 = ctx.ce_coef + (ctx.unit_t ? kd_tail : 0.f);
  for (int64_t j0 = 0; j0 < ctx.vocab; j0 += kElemBlock) {
    const int64_t nb = std::min(kElemBlock, ctx.vocab - j0);
    float* zb = z + j0;
    ShiftedLog(zb, nb, 1.f, st.zmax, ls1, e1);
    ExpInPlace(e1, nb);
    if (need_t) {
      ShiftedLog(zb, nb, ctx.inv_t, st.shift_t, lst, et);
      ExpInPlace(et, nb);
      for (int64_t i = 0; i < nb; ++i) zb[i] = coef1 * e1[i] + kd_tail * et[i];
    } else {
      for (int64_t i = 0; i < nb; ++i) zb[i] = coef1 * e1[i];
    }
  }
}

// CE only; or, given the teacher's log q(y) (`teacher_lq`), CE plus the
// sampled-token reverse KL k = log p(y) - log q(y), whose gradient
// kd_coef * k * (onehot - p) folds into CE's (p - onehot) coefficient.
RowLoss CeRow(float* z, int32_t y, const RowContext& ctx, const double* teacher_lq = nullptr) {
  RowLoss r;
  const float zy = z[y];
  const float zmax = cpu::simd::RowMax(z, ctx.vocab);
  ShiftedExp(z, ctx.vocab, 1.f, zmax, z);
  const double s = SumF64(z, ctx.vocab);
  r.ce = static_cast<double>(zmax) + std::log(s) - zy;
  double coef = ctx.ce_coef;
  if (teacher_lq != nullptr) {
    r.kd = -r.ce - std::max(*teacher_lq, kLogFloor);
    coef -= ctx.kd_coef * r.kd;
  }
  const float c = static_cast<float>(coef / s);
  for (int64_t j = 0; j < ctx.vocab; ++j) z[j] *= c;
  z[y] -= static_cast<float>(coef);
  return r;
}

// log softmax(t)[y] of teacher logits t (left as they are).
double TokenLogprob(const float* t, int32_t y, int64_t vocab) {
  const float tmax = cpu::simd::RowMax(t, vocab);
  return static_cast<double>(t[y]) - tmax - std::log(SumShiftedExp(t, vocab, 1.f, tmax));
}

// Dense teacher: z student logits (overwritten by the gradient), t teacher
// logits (clobbered).
RowLoss DenseRow(float* z, float* t, int32_t y, const RowContext& ctx) {
  RowLoss r;
  const int64_t V = ctx.vocab;
  const float zy = z[y];
  const StudentStats st = ComputeStudentStats(z, ctx, true);
  r.ce = static_cast<double>(st.zmax) + st.log_s1 - zy;
  const float tmax = cpu::simd::RowMax(t, V);
  const float tshift = tmax * ctx.inv_t;
  const double log_tt = std::log(SumShiftedExp(t, V, ctx.inv_t, tshift));
  // Teacher log-probabilities at T, kept in t.
  ShiftedLog(t, V, ctx.inv_t, tshift, static_cast<float>(log_tt), t);
  const float lst = static_cast<float>(st.log_st), ls1 = static_cast<float>(st.log_s1);

  float lp[kElemBlock], p[kElemBlock], q[kElemBlock], p1[kElemBlock];
  // Fills lp (student log-probs at T), p, q for block [j0, j0 + nb).
  auto block = [&](int64_t j0, int64_t nb) {
    ShiftedLog(z + j0, nb, ctx.inv_t, st.shift_t, lst, lp);
    std::copy(lp, lp + nb, p);
    ExpInPlace(p, nb);
    std::copy(t + j0, t + j0 + nb, q);
    ExpInPlace(q, nb);
    if (!ctx.unit_t && ctx.ce_coef != 0) {
      ShiftedLog(z + j0, nb, 1.f, st.zmax, ls1, p1);
      ExpInPlace(p1, nb);
    }
  };
  auto ce_part = [&](int64_t i) {
    if (ctx.ce_coef == 0) return 0.f;
    return ctx.ce_coef * (ctx.unit_t ? p[i] : p1[i]);
  };
  switch (ctx.div.kind) {
    case KdDivergence::kForwardKl: {
      double D = 0;
      for (int64_t j0 = 0; j0 < V; j0 += kElemBlock) {
        const int64_t nb = std::min(kElemBlock, V - j0);
        block(j0, nb);
        for (int64_t i = 0; i < nb; ++i) {
          D += static_cast<double>(q[i]) *
               (static_cast<double>(t[j0 + i]) - static_cast<double>(lp[i]));
        }
        for (int64_t i = 0; i < nb; ++i) z[j0 + i] = ce_part(i) + ctx.kd_coef * (p[i] - q[i]);
      }
      r.kd = D;
      break;
    }
    case KdDivergence::kReverseKl: {
      double D = 0;
      for (int64_t j0 = 0; j0 < V; j0 += kElemBlock) {
        const int64_t nb = std::min(kElemBlock, V - j0);
        ShiftedLog(z + j0, nb, ctx.inv_t, st.shift_t, lst, lp);
        std::copy(lp, lp + nb, p);
        ExpInPlace(p, nb);
        for (int64_t i = 0; i < nb; ++i) {
          const double lq = std::max(static_cast<double>(t[j0 + i]), kLogFloor);
          D += static_cast<double>(p[i]) * (static_cast<double>(lp[i]) - lq);
        }
      }
      const float fD = static_cast<float>(D);
      for (int64_t j0 = 0; j0 < V; j0 += kElemBlock) {
        const int64_t nb = std::min(kElemBlock, V - j0);
        block(j0, nb);
        for (int64_t i = 0; i < nb; ++i) {
          const float lq = std::max(t[j0 + i], static_cast<float>(kLogFloor));
          z[j0 + i] = ce_part(i) + ctx.kd_coef * p[i] * (lp[i] - lq - fD);
        }
      }
      r.kd = D;
      break;
    }
    case KdDivergence::kJsd: {
      const double beta = ctx.div.beta;
      // rp = log p - log m and rq = log q - log m through log1p/expm1 in f64:
      // near beta = 0 the student's rp is O(beta), which a difference of two
      // f32 logs (each ~1e-7 * |log p| off) would swamp.
      float rp[kElemBlock], rq[kElemBlock];
      auto mixture = [&](int64_t j0, int64_t nb) {
        for (int64_t i = 0; i < nb; ++i) {
          const double dqp = static_cast<double>(t[j0 + i]) - lp[i];  // log q - log p
          if (beta <= 0.5) {
            const double r = -std::log1p(beta * std::expm1(dqp));
            rp[i] = static_cast<float>(r);
            rq[i] = static_cast<float>(dqp + r);
          } else {
            const double r = -std::log1p((1 - beta) * std::expm1(-dqp));
            rq[i] = static_cast<float>(r);
            rp[i] = static_cast<float>(r - dqp);
          }
        }
      };
      double klq = 0, klp = 0;
      for (int64_t j0 = 0; j0 < V; j0 += kElemBlock) {
        const int64_t nb = std::min(kElemBlock, V - j0);
        block(j0, nb);
        mixture(j0, nb);
        for (int64_t i = 0; i < nb; ++i) {
          klq += static_cast<double>(q[i]) * rq[i];
          klp += static_cast<double>(p[i]) * rp[i];
        }
      }
      const float fklp = static_cast<float>(klp);
      const float c = static_cast<float>(ctx.kd_coef * (1 - beta));
      for (int64_t j0 = 0; j0 < V; j0 += kElemBlock) {
        const int64_t nb = std::min(kElemBlock, V - j0);
        block(j0, nb);
        mixture(j0, nb);
        for (int64_t i = 0; i < nb; ++i) {
          z[j0 + i] = ce_part(i) + c * p[i] * (rp[i] - fklp);
        }
      }
      r.kd = beta * klq + (1 - beta) * klp;
      break;
    }
    case KdDivergence::kSampledReverseKl:  // per sampled token: CeRow, never here
      break;
  }
  z[y] -= ctx.ce_coef;
  return r;
}

// Offline top-k teacher.
RowLoss TopKRow(float* z, int32_t y, const int32_t* ids, const float* lps, const RowContext& ctx) {
  RowLoss r;
  const int64_t V = ctx.vocab;
  const float zy = z[y];
  const StudentStats st = ComputeStudentStats(z, ctx, true);
  r.ce = static_cast<double>(st.zmax) + st.log_s1 - zy;

  // Valid slots; bucket 0 is the tail, 1..kv the ids (tail mode).
  const int64_t K = ctx.k;
  std::vector<int32_t> id(K);
  std::vector<double> zid(K), lq1(K);
  int64_t kv = 0;
  for (int64_t i = 0; i < K; ++i) {
    if (ids[i] < 0) continue;
    id[kv] = ids[i];
    zid[kv] = z[ids[i]];
    lq1[kv] = lps[i];
    ++kv;
  }
  std::vector<double> P(kv + 1), logP(kv + 1), Q(kv + 1), logQ(kv + 1), c(kv + 1);
  const bool tail = ctx.topk_tail == TopKTail::kTailBucket;
  float kd_tail = 0;  // coefficient of p_j for every id outside the top-k
  if (tail) {
    // Student: the same f32 exponentials that make up st.st, so the tail sum
    // is the sum over the other ids up to f64 rounding.
    double e_sum = 0;
    for (int64_t i = 0; i < kv; ++i) {
      const float yi = std::fma(static_cast<float>(zid[i]), ctx.inv_t, -st.shift_t);
      const double e = Exp1(yi);
      e_sum += e;
      P[i + 1] = e / st.st;
      logP[i + 1] = static_cast<double>(yi) - st.log_st;
    }
    const int64_t tail_ids = V - kv;
    double s_tail = tail_ids > 0 ? std::max(st.st - e_sum, 0.0) : 0.0;
    P[0] = s_tail / st.st;
    logP[0] = s_tail > 0 ? std::log(s_tail) - st.log_st : kNegInf;
    // Teacher at T = 1, then tempered (tail spread uniformly over its ids).
    double q_sum = 0;
    for (int64_t i = 0; i < kv; ++i) q_sum += std::exp(lq1[i]);
    const double q_tail = tail_ids > 0 ? std::max(1.0 - q_sum, 0.0) : 0.0;
    if (ctx.unit_t) {
      for (int64_t i = 0; i < kv; ++i) logQ[i + 1] = lq1[i];
      logQ[0] = q_tail > 0 ? std::log(q_tail) : kNegInf;
    } else {
      const double it = 1.0 / ctx.temperature;
      double lse = kNegInf;
      for (int64_t i = 0; i < kv; ++i) {
        logQ[i + 1] = lq1[i] * it;
        lse = LogAddExp(lse, logQ[i + 1]);
      }
      if (q_tail > 0) {
        const double lt = std::log(static_cast<double>(tail_ids));
        logQ[0] = lt + (std::log(q_tail) - lt) * it;
        lse = LogAddExp(lse, logQ[0]);
      } else {
        logQ[0] = kNegInf;
      }
      for (int64_t b = 0; b <= kv; ++b) logQ[b] -= lse;
    }
    for (int64_t b = 0; b <= kv; ++b) Q[b] = std::exp(logQ[b]);
    if (ctx.kd) {
      r.kd =
          BucketDivergence(ctx.div, kv + 1, P.data(), logP.data(), Q.data(), logQ.data(), c.data());
      kd_tail = P[0] > 0 ? static_cast<float>(ctx.kd_coef * c[0]) : 0.f;
    }
  } else {
    // Renormalised over the valid ids (buckets 1..kv; bucket 0 unused).
    double ls = kNegInf, lt = kNegInf;
    for (int64_t i = 0; i < kv; ++i) {
      logP[i + 1] = zid[i] * ctx.inv_t;
      ls = LogAddExp(ls, logP[i + 1]);
      logQ[i + 1] = lq1[i] / ctx.temperature;
      lt = LogAddExp(lt, logQ[i + 1]);
    }
    for (int64_t i = 1; i <= kv; ++i) {
      logP[i] -= ls;
      logQ[i] -= lt;
      P[i] = std::exp(logP[i]);
      Q[i] = std::exp(logQ[i]);
    }
    if (ctx.kd && kv > 0 && lt != kNegInf) {
      r.kd = BucketDivergence(ctx.div, kv, P.data() + 1, logP.data() + 1, Q.data() + 1,
                              logQ.data() + 1, c.data() + 1);
    }
  }

  // Whole-vocabulary pass (CE, and the tail bucket's share), then the top-k
  // ids get their own KD term.
  SoftmaxGradPass(z, ctx, st, kd_tail);
  if (ctx.kd) {
    for (int64_t i = 0; i < kv; ++i) {
      const int64_t j = id[i];
      const float p1 = Exp1(static_cast<float>(zid[i]) - st.zmax - static_cast<float>(st.log_s1));
      z[j] = ctx.ce_coef * p1 + static_cast<float>(ctx.kd_coef * P[i + 1] * c[i + 1]);
    }
  }
  z[y] -= ctx.ce_coef;
  return r;
}

absl::Status InvalidArg(const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("ComputeLoss: ", msg));
}

absl::Status Validate(int64_t n, int64_t d, int64_t vocab, const float* h, const float* w,
                      const int32_t* targets, const TeacherSignal& t, const LossOptions& o) {
  if (n < 0 || d <= 0 || vocab <= 0) {
    return InvalidArg(absl::StrCat("bad sizes n=", n, " d=", d, " vocab=", vocab));
  }
  if (vocab > std::numeric_limits<int32_t>::max()) {
    return InvalidArg(absl::StrCat("vocabulary of ", vocab, " ids does not fit int32 ids"));
  }
  if (n > 0 && (h == nullptr || w == nullptr || targets == nullptr)) {
    return InvalidArg("h, w and targets must not be null");
  }
  if (!(std::isfinite(o.ce_weight) && o.ce_weight >= 0)) {
    return InvalidArg(absl::StrCat("ce_weight must be finite and >= 0, got ", o.ce_weight));
  }
  if (!(std::isfinite(o.kd_weight) && o.kd_weight >= 0)) {
    return InvalidArg(absl::StrCat("kd_weight must be finite and >= 0, got ", o.kd_weight));
  }
  if (!(std::isfinite(o.temperature) && o.temperature > 0)) {
    return InvalidArg(absl::StrCat("temperature must be finite and > 0, got ", o.temperature));
  }
  if (!(o.jsd_beta >= 0 && o.jsd_beta <= 1)) {
    return InvalidArg(absl::StrCat("jsd_beta must be in [0, 1], got ", o.jsd_beta));
  }
  if (o.row_chunk < 1) return InvalidArg(absl::StrCat("row_chunk must be >= 1, got ", o.row_chunk));
  if (o.max_chunk_logits_bytes < 0) {
    return InvalidArg(
        absl::StrCat("max_chunk_logits_bytes must be >= 0, got ", o.max_chunk_logits_bytes));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] < -1 || targets[i] >= vocab) {
      return InvalidArg(absl::StrCat("target ", targets[i], " at position ", i,
                                     " is outside the vocabulary [0, ", vocab, ") (-1 masks)"));
    }
  }
  if (o.kd_weight == 0) return absl::OkStatus();
  const bool sampled = o.divergence == KdDivergence::kSampledReverseKl;
  if (sampled && o.temperature != 1.f) {
    return InvalidArg(absl::StrCat("sampled_reverse_kl needs temperature 1, got ", o.temperature));
  }
  if (sampled && t.kind != TeacherSignal::Kind::kDense &&
      t.kind != TeacherSignal::Kind::kTokenLogprobs) {
    return InvalidArg("sampled_reverse_kl needs a dense teacher or the teacher's token log-probs");
  }
  switch (t.kind) {
    case TeacherSignal::Kind::kNone:
      return InvalidArg(
          absl::StrCat("kd_weight is ", o.kd_weight, " but there is no teacher signal"));
    case TeacherSignal::Kind::kDense:
      if (t.vocab != vocab) {
        return InvalidArg(absl::StrCat("teacher LM head has ", t.vocab,
                                       " rows but the student vocabulary has ", vocab,
                                       " ids (both heads must cover the same vocabulary)"));
      }
      if (t.dim <= 0) return InvalidArg(absl::StrCat("teacher hidden size is ", t.dim));
      if (n > 0 && (t.hidden == nullptr || t.head == nullptr)) {
        return InvalidArg("dense teacher hidden states and head must not be null");
      }
      return absl::OkStatus();
    case TeacherSignal::Kind::kTopK: {
      if (t.k <= 0) return InvalidArg(absl::StrCat("top-k teacher has k = ", t.k));
      if (n > 0 && (t.topk_ids == nullptr || t.topk_logprobs == nullptr)) {
        return InvalidArg("top-k ids and log-probs must not be null");
      }
      std::vector<int32_t> seen;
      for (int64_t i = 0; i < n; ++i) {
        if (targets[i] < 0) continue;
        const int32_t* ids = t.topk_ids + i * t.k;
        const float* lp = t.topk_logprobs + i * t.k;
        seen.clear();
        double mass = 0;
        for (int64_t j = 0; j < t.k; ++j) {
          if (ids[j] == -1) continue;
          if (ids[j] < -1 || ids[j] >= vocab) {
            return InvalidArg(absl::StrCat("top-k id ", ids[j], " at position ", i, " slot ", j,
                                           " is outside the vocabulary [0, ", vocab,
                                           ") (-1 marks an empty slot)"));
          }
          if (!(lp[j] <= 1e-3f)) {  // also rejects NaN
            return InvalidArg(absl::StrCat("top-k log-prob ", lp[j], " at position ", i, " slot ",
                                           j, " is not a log-probability (<= 0)"));
          }
          seen.push_back(ids[j]);
          mass += std::exp(static_cast<double>(lp[j]));
        }
        std::sort(seen.begin(), seen.end());
        auto dup = std::adjacent_find(seen.begin(), seen.end());
        if (dup != seen.end()) {
          return InvalidArg(absl::StrCat("top-k id ", *dup, " appears twice at position ", i));
        }
        // Trace shards store log-probs quantized (formats/traces.h: up to 1/128
        // nat near the top-1), so a real top-k may sum to ~1.008; the tail is
        // then clamped at 0. Beyond 2% the inputs are not log-probabilities.
        if (mass > 1.02) {
          return InvalidArg(absl::StrCat("top-k probabilities at position ", i, " sum to ", mass,
                                         " > 1 (expected natural-log probabilities)"));
        }
      }
      return absl::OkStatus();
    }
    case TeacherSignal::Kind::kTokenLogprobs:
      if (!sampled) {
        return InvalidArg(absl::StrCat("token log-probs only serve sampled_reverse_kl, not ",
                                       KdDivergenceName(o.divergence)));
      }
      if (n > 0 && t.token_logprobs == nullptr) return InvalidArg("token log-probs are null");
      for (int64_t i = 0; i < n; ++i) {
        if (targets[i] >= 0 && !(t.token_logprobs[i] <= 1e-3f)) {  // also rejects NaN
          return InvalidArg(absl::StrCat("teacher token log-prob ", t.token_logprobs[i],
                                         " at position ", i, " is not a log-probability (<= 0)"));
        }
      }
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

bool UsesDenseTeacher(const TeacherSignal& t, const LossOptions& o) {
  return o.kd_weight > 0 && t.kind == TeacherSignal::Kind::kDense;
}

int64_t CountUnmasked(int64_t n, const int32_t* targets) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) m += targets[i] >= 0;
  return m;
}

// The scratch of one call, in floats (doubles counted as two).
struct Scratch {
  int64_t rows, hbuf, logits, thbuf, tlogits, dhbuf, sums;
  int64_t total() const { return hbuf + logits + thbuf + tlogits + dhbuf + sums; }
};

Scratch PlanScratch(int64_t m, int64_t d, int64_t vocab, const TeacherSignal& t,
                    const LossOptions& o, bool need_dh) {
  Scratch s{};
  s.rows = std::min(o.row_chunk, m);
  if (o.max_chunk_logits_bytes > 0) {
    // The logits of a chunk (the student's, and the dense teacher's) stay
    // under the cap; one row at least.
    const int64_t row_bytes = 4 * vocab * (UsesDenseTeacher(t, o) ? 2 : 1);
    s.rows = std::min(s.rows, std::max<int64_t>(1, o.max_chunk_logits_bytes / row_bytes));
  }
  s.hbuf = s.rows * d;
  s.logits = s.rows * vocab;
  if (UsesDenseTeacher(t, o)) {
    s.thbuf = s.rows * t.dim;
    s.tlogits = s.rows * vocab;
  }
  s.dhbuf = need_dh ? s.rows * d : 0;
  s.sums = 4 * s.rows;
  return s;
}

// c[r, V] = a[r, k] · b[V, k]^T, over fixed blocks of b's rows.
void LogitsGemm(const float* a, int64_t r, int64_t k, const float* b, int64_t vocab, float* c) {
  const int64_t blocks = (vocab + kVocabBlock - 1) / kVocabBlock;
  ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t v0 = blk * kVocabBlock, nv = std::min(kVocabBlock, vocab - v0);
      cpu::Sgemm(false, true, static_cast<int>(r), static_cast<int>(nv), static_cast<int>(k), 1.f,
                 a, static_cast<int>(k), b + v0 * k, static_cast<int>(k), 0.f, c + v0,
                 static_cast<int>(vocab));
    }
  });
}

}  // namespace

constexpr NamedValue<KdDivergence> kKdDivergences[] = {
    {KdDivergence::kForwardKl, "forward_kl"},
    {KdDivergence::kReverseKl, "reverse_kl"},
    {KdDivergence::kJsd, "jsd"},
    {KdDivergence::kSampledReverseKl, "sampled_reverse_kl"}};

absl::StatusOr<KdDivergence> ParseKdDivergence(const std::string& name) {
  return ParseNamedValue(kKdDivergences, name, "KD divergence");
}

const char* KdDivergenceName(KdDivergence d) { return NameOfValue(kKdDivergences, d); }

int64_t LossScratchBytes(int64_t n, int64_t d, int64_t vocab, const int32_t* targets,
                         const TeacherSignal& teacher, const LossOptions& options) {
  const int64_t m = CountUnmasked(n, targets);
  if (m == 0) return 0;
  return 4 * PlanScratch(m, d, vocab, teacher, options, true).total();
}

namespace cpu {

absl::StatusOr<LossResult> LmHeadLoss(const float* h, int64_t n, int64_t d, const float* w,
                                      int64_t vocab, const int32_t* targets,
                                      const TeacherSignal& teacher, const LossOptions& options,
                                      float grad_scale, float* dh, float* dw) {
  RETURN_IF_ERROR(Validate(n, d, vocab, h, w, targets, teacher, options));

  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] >= 0) rows.push_back(i);
  }
  const int64_t m = static_cast<int64_t>(rows.size());
  LossResult result;
  result.tokens = m;
  if (dh != nullptr) std::fill(dh, dh + n * d, 0.f);
  if (m == 0) return result;

  const bool dense = UsesDenseTeacher(teacher, options);
  const bool topk = options.kd_weight > 0 && teacher.kind == TeacherSignal::Kind::kTopK;
  const bool sampled =
      options.kd_weight > 0 && options.divergence == KdDivergence::kSampledReverseKl;
  const int64_t td = dense ? teacher.dim : 0;
  const Scratch plan = PlanScratch(m, d, vocab, teacher, options, dh != nullptr);
  std::vector<float> hbuf(plan.hbuf), logits(plan.logits), thbuf(plan.thbuf), tlogits(plan.tlogits),
      dhbuf(plan.dhbuf);
  std::vector<double> row_ce(plan.rows), row_kd(plan.rows);

  RowContext ctx;
  ctx.vocab = vocab;
  ctx.temperature = options.temperature;
  ctx.inv_t = 1.f / options.temperature;
  ctx.unit_t = options.temperature == 1.f;
  ctx.ce_coef = grad_scale * options.ce_weight;
  ctx.kd = options.kd_weight > 0;
  ctx.kd_coef = grad_scale * options.kd_weight * options.temperature;
  ctx.div = {options.divergence, options.jsd_beta};
  if (options.divergence == KdDivergence::kJsd && options.jsd_beta == 0.f) {
    ctx.div.kind = KdDivergence::kForwardKl;
  }
  if (options.divergence == KdDivergence::kJsd && options.jsd_beta == 1.f) {
    ctx.div.kind = KdDivergence::kReverseKl;
  }
  ctx.topk_tail = options.topk_tail;
  ctx.k = teacher.k;
  const double t2 = static_cast<double>(options.temperature) * options.temperature;

  for (int64_t c0 = 0; c0 < m; c0 += plan.rows) {
    const int64_t r = std::min(plan.rows, m - c0);
    for (int64_t i = 0; i < r; ++i) {
      std::copy_n(h + rows[c0 + i] * d, d, hbuf.data() + i * d);
      if (dense) std::copy_n(teacher.hidden + rows[c0 + i] * td, td, thbuf.data() + i * td);
    }
    LogitsGemm(hbuf.data(), r, d, w, vocab, logits.data());
    if (dense) LogitsGemm(thbuf.data(), r, td, teacher.head, vocab, tlogits.data());

    ParallelFor(r, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t pos = rows[c0 + i];
        const int32_t y = targets[pos];
        float* z = logits.data() + i * vocab;
        RowLoss rl;
        if (sampled) {
          const double lq = dense ? TokenLogprob(tlogits.data() + i * vocab, y, vocab)
                                  : static_cast<double>(teacher.token_logprobs[pos]);
          rl = CeRow(z, y, ctx, &lq);
        } else if (dense) {
          rl = DenseRow(z, tlogits.data() + i * vocab, y, ctx);
        } else if (topk) {
          rl = TopKRow(z, y, teacher.topk_ids + pos * teacher.k,
                       teacher.topk_logprobs + pos * teacher.k, ctx);
        } else {
          rl = CeRow(z, y, ctx);
        }
        row_ce[i] = rl.ce;
        row_kd[i] = rl.kd * t2;
      }
    });
    for (int64_t i = 0; i < r; ++i) {
      result.ce_sum += row_ce[i];
      result.kd_sum += row_kd[i];
    }

    const float* g = logits.data();
    if (dh != nullptr) {
      const int64_t blocks = (d + kDimBlock - 1) / kDimBlock;
      ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t k0 = blk * kDimBlock, nk = std::min(kDimBlock, d - k0);
          cpu::Sgemm(false, false, static_cast<int>(r), static_cast<int>(nk),
                     static_cast<int>(vocab), 1.f, g, static_cast<int>(vocab), w + k0,
                     static_cast<int>(d), 0.f, dhbuf.data() + k0, static_cast<int>(d));
        }
      });
      for (int64_t i = 0; i < r; ++i) {
        std::copy_n(dhbuf.data() + i * d, d, dh + rows[c0 + i] * d);
      }
    }
    if (dw != nullptr) {
      const int64_t blocks = (vocab + kVocabBlock - 1) / kVocabBlock;
      ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t v0 = blk * kVocabBlock, nv = std::min(kVocabBlock, vocab - v0);
          cpu::Sgemm(true, false, static_cast<int>(nv), static_cast<int>(d), static_cast<int>(r),
                     1.f, g + v0, static_cast<int>(vocab), hbuf.data(), static_cast<int>(d), 1.f,
                     dw + v0 * d, static_cast<int>(d));
        }
      });
    }
  }
  result.loss_sum = options.ce_weight * result.ce_sum + options.kd_weight * result.kd_sum;
  return result;
}

}  // namespace cpu
}  // namespace retort
