// Training kernels (kernels/cpu/train_ops.h) against plain f64 loops.
//
// Every forward is checked against an f64 loop. Every backward is checked
// twice: against the f64 analytic gradient, and against central finite
// differences of an f64 re-implementation of the forward (the loss is
// sum(y * dy), so its gradient is what the backward computes from dy).
// Errors are measured as max |got - ref| / max |ref| over a tensor.
// Finally every kernel must give the same bits on 1, 2 and 3 threads.
#include "kernels/cpu/train_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using testing::RandomVector;

constexpr double kTol = 1e-4;

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// max |got - ref| / max |ref|.
double RelErr(const std::vector<float>& got, const std::vector<double>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double err = 0;
  for (size_t i = 0; i < ref.size(); ++i) err = std::max(err, std::abs(got[i] - ref[i]));
  const double scale = MaxAbs(ref);
  return scale > 0 ? err / scale : err;
}

// Indices to probe by finite differences: all of them, or `max_samples`
// spread at random.
std::vector<size_t> SampleIndices(size_t n, size_t max_samples, uint32_t seed) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  if (n <= max_samples) return idx;
  std::mt19937 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(max_samples);
  return idx;
}

// Compares `grad` (the kernel's gradient of `loss` with respect to `x`) with
// central differences of the f64 `loss` at the sampled indices.
void ExpectMatchesFiniteDifferences(const std::function<double(const std::vector<double>&)>& loss,
                                    std::vector<double> x, const std::vector<float>& grad,
                                    size_t max_samples, const char* what) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  const auto idx = SampleIndices(x.size(), max_samples, 1234);
  std::vector<float> got;
  std::vector<double> fd;
  for (size_t i : idx) {
    const double x0 = x[i];
    const double h = 1e-5 * std::max(1.0, std::abs(x0));
    x[i] = x0 + h;
    const double lp = loss(x);
    x[i] = x0 - h;
    const double lm = loss(x);
    x[i] = x0;
    fd.push_back((lp - lm) / (2 * h));
    got.push_back(grad[i]);
  }
  EXPECT_LT(RelErr(got, fd), kTol) << what << " vs finite differences";
}

double Dot(const std::vector<double>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ----------------------------------------------------------------------------
// Linear

std::vector<double> LinearRef(const std::vector<double>& x, int64_t m, int64_t k,
                              const std::vector<double>& w, int64_t n,
                              const std::vector<double>* bias) {
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = bias ? (*bias)[j] : 0.0;
      for (int64_t c = 0; c < k; ++c) s += x[i * k + c] * w[j * k + c];
      y[i * n + j] = s;
    }
  }
  return y;
}

struct LinearCase {
  int64_t m, k, n;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearTest, ForwardMatchesF64) {
  const auto [m, k, n] = GetParam();
  auto x = RandomVector(m * k, 1), w = RandomVector(n * k, 2), b = RandomVector(n, 3);
  const auto xd = ToDouble(x), wd = ToDouble(w), bd = ToDouble(b);
  std::vector<float> y(m * n, 7.f);
  LinearForward(x.data(), m, k, w.data(), n, b.data(), y.data());
  EXPECT_LT(RelErr(y, LinearRef(xd, m, k, wd, n, &bd)), kTol);
  std::fill(y.begin(), y.end(), 7.f);
  LinearForward(x.data(), m, k, w.data(), n, nullptr, y.data());
  EXPECT_LT(RelErr(y, LinearRef(xd, m, k, wd, n, nullptr)), kTol);
}

TEST_P(LinearTest, BackwardMatchesF64AndFiniteDifferences) {
  const auto [m, k, n] = GetParam();
  auto x = RandomVector(m * k, 1), w = RandomVector(n * k, 2), b = RandomVector(n, 3);
  auto dy = RandomVector(m * n, 4);
  const auto xd = ToDouble(x), wd = ToDouble(w), bd = ToDouble(b), dyd = ToDouble(dy);
  // Gradient buffers start non-zero: dw and dbias accumulate, dx is overwritten.
  const auto dw0 = RandomVector(n * k, 5), db0 = RandomVector(n, 6), dx0 = RandomVector(m * k, 7);
  std::vector<float> dx = dx0, dw = dw0, db = db0;
  LinearBackward(x.data(), m, k, w.data(), n, dy.data(), dx.data(), dw.data(), db.data());

  std::vector<double> dx_ref(m * k, 0), dw_ref(n * k), db_ref(n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < k; ++c) dx_ref[i * k + c] += dyd[i * n + j] * wd[j * k + c];
  for (int64_t j = 0; j < n; ++j) {
    db_ref[j] = db0[j];
    for (int64_t i = 0; i < m; ++i) db_ref[j] += dyd[i * n + j];
    for (int64_t c = 0; c < k; ++c) {
      double s = dw0[j * k + c];
      for (int64_t i = 0; i < m; ++i) s += dyd[i * n + j] * xd[i * k + c];
      dw_ref[j * k + c] = s;
    }
  }
  EXPECT_LT(RelErr(dx, dx_ref), kTol);
  EXPECT_LT(RelErr(dw, dw_ref), kTol);
  EXPECT_LT(RelErr(db, db_ref), kTol);

  // Finite differences of loss = sum(y * dy), on the gradients alone (without
  // the values the buffers started from).
  std::vector<float> dw_only(n * k, 0.f), db_only(n, 0.f);
  LinearBackward(x.data(), m, k, w.data(), n, dy.data(), dx.data(), dw_only.data(), db_only.data());
  // Each f64 forward costs m*n*k: fewer probes on the large shape.
  const size_t samples = m * n * k > 1000000 ? 6 : 40;
  ExpectMatchesFiniteDifferences(
      [&](const std::vector<double>& xv) { return Dot(LinearRef(xv, m, k, wd, n, &bd), dy); }, xd,
      dx, samples, "dx");
  ExpectMatchesFiniteDifferences(
      [&](const std::vector<double>& wv) { return Dot(LinearRef(xd, m, k, wv, n, &bd), dy); }, wd,
      dw_only, samples, "dw");
  ExpectMatchesFiniteDifferences(
      [&](const std::vector<double>& bv) { return Dot(LinearRef(xd, m, k, wd, n, &bv), dy); }, bd,
      db_only, samples, "dbias");

  // accumulate_dx adds to what dx held.
  std::vector<float> dx_acc = dx0;
  LinearBackward(x.data(), m, k, w.data(), n, dy.data(), dx_acc.data(), nullptr, nullptr, true);
  std::vector<double> dx_acc_ref(m * k);
  for (size_t i = 0; i < dx_acc_ref.size(); ++i) dx_acc_ref[i] = dx0[i] + dx_ref[i];
  EXPECT_LT(RelErr(dx_acc, dx_acc_ref), kTol);

  // Null outputs are skipped; the others are unaffected by the skip.
  std::vector<float> dw2 = dw0, db2 = db0;
  LinearBackward(x.data(), m, k, w.data(), n, dy.data(), nullptr, dw2.data(), db2.data());
  EXPECT_EQ(dw2, dw);
  EXPECT_EQ(db2, db);
  std::vector<float> dx3 = dx0;
  LinearBackward(x.data(), m, k, w.data(), n, dy.data(), dx3.data(), nullptr, nullptr);
  EXPECT_EQ(dx3, dx);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{1, 1, 1}, LinearCase{5, 7, 3},
                                           LinearCase{37, 19, 23},
                                           // more than one 256-wide tile on every axis
                                           LinearCase{300, 270, 260}));

TEST(LinearTest, EmptyBatchLeavesGradientsAlone) {
  auto w = RandomVector(6, 1);
  std::vector<float> dw(6, 1.f), db(3, 2.f);
  LinearBackward(nullptr, 0, 2, w.data(), 3, nullptr, nullptr, dw.data(), db.data());
  EXPECT_EQ(dw, std::vector<float>(6, 1.f));
  EXPECT_EQ(db, std::vector<float>(3, 2.f));
}

// ----------------------------------------------------------------------------
// RMSNorm

std::vector<double> RmsNormRef(const std::vector<double>& x, int64_t rows, int64_t dim,
                               const std::vector<double>& w, double eps,
                               std::vector<double>* rstd = nullptr) {
  std::vector<double> y(rows * dim);
  if (rstd) rstd->resize(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double rs = 1.0 / std::sqrt(ss / dim + eps);
    if (rstd) (*rstd)[r] = rs;
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] * rs * w[i];
  }
  return y;
}

struct RmsCase {
  int64_t rows, dim;
};

class RmsNormTest : public ::testing::TestWithParam<RmsCase> {};

TEST_P(RmsNormTest, ForwardAndBackward) {
  const auto [rows, dim] = GetParam();
  const float eps = 1e-5f;
  auto x = RandomVector(rows * dim, 1, 2.f), w = RandomVector(dim, 2),
       dy = RandomVector(rows * dim, 3);
  const auto xd = ToDouble(x), wd = ToDouble(w), dyd = ToDouble(dy);
  std::vector<float> y(rows * dim), rstd(rows);
  RmsNormForward(x.data(), rows, dim, w.data(), eps, y.data(), rstd.data());
  std::vector<double> rstd_ref;
  EXPECT_LT(RelErr(y, RmsNormRef(xd, rows, dim, wd, eps, &rstd_ref)), kTol);
  EXPECT_LT(RelErr(rstd, rstd_ref), kTol);
  // Same bits as the inference RmsNorm.
  std::vector<float> y_inf(rows * dim);
  RmsNorm(x.data(), rows, dim, w.data(), eps, y_inf.data());
  EXPECT_EQ(y, y_inf);

  const auto dw0 = RandomVector(dim, 4), dx0 = RandomVector(rows * dim, 5);
  std::vector<float> dx = dx0, dw = dw0;
  RmsNormBackward(x.data(), rstd.data(), rows, dim, w.data(), dy.data(), dx.data(), dw.data());
  std::vector<double> dx_ref(rows * dim), dw_ref(dw0.begin(), dw0.end());
  for (int64_t r = 0; r < rows; ++r) {
    const double rs = rstd_ref[r];
    double dot = 0;
    for (int64_t i = 0; i < dim; ++i) dot += wd[i] * dyd[r * dim + i] * xd[r * dim + i];
    for (int64_t i = 0; i < dim; ++i) {
      dx_ref[r * dim + i] =
          rs * wd[i] * dyd[r * dim + i] - xd[r * dim + i] * rs * rs * rs * dot / dim;
      dw_ref[i] += dyd[r * dim + i] * xd[r * dim + i] * rs;
    }
  }
  EXPECT_LT(RelErr(dx, dx_ref), kTol);
  EXPECT_LT(RelErr(dw, dw_ref), kTol);

  std::vector<float> dw_only(dim, 0.f);
  RmsNormBackward(x.data(), rstd.data(), rows, dim, w.data(), dy.data(), dx.data(), dw_only.data());
  ExpectMatchesFiniteDifferences(
      [&](const std::vector<double>& xv) { return Dot(RmsNormRef(xv, rows, dim, wd, eps), dy); },
      xd, dx, 60, "dx");
  ExpectMatchesFiniteDifferences(
      [&](const std::vector<double>& wv) { return Dot(RmsNormRef(xd, rows, dim, wv, eps), dy); },
      wd, dw_only, 60, "dweight");

  // accumulate_dx, and a null dweight.
  std::vector<float> dx_acc = dx0;
  RmsNormBackward(x.data(), rstd.data(), rows, dim, w.data(), dy.data(), dx_acc.data(), nullptr,
                  true);
  std::vector<double> dx_acc_ref(rows * dim);
  for (size_t i = 0; i < dx_acc_ref.size(); ++i) dx_acc_ref[i] = dx0[i] + dx_ref[i];
  EXPECT_LT(RelErr(dx_acc, dx_acc_ref), kTol);

  // In place: dx written over dy gives the same bits, dweight included (the
  // scalar tail of dim % 8 != 0 once read dy after overwriting it).
  std::vector<float> inplace = dy;
  std::vector<float> dw_inplace(dim, 0.f), dw_fresh(dim, 0.f);
  RmsNormBackward(x.data(), rstd.data(), rows, dim, w.data(), dy.data(), dx.data(),
                  dw_fresh.data());
  RmsNormBackward(x.data(), rstd.data(), rows, dim, w.data(), inplace.data(), inplace.data(),
                  dw_inplace.data());
  EXPECT_EQ(inplace, dx);
  EXPECT_EQ(dw_inplace, dw_fresh);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(RmsCase{1, 3}, RmsCase{5, 13}, RmsCase{130, 72},
                                           RmsCase{200, 300}));

// ----------------------------------------------------------------------------
// SwiGLU

TEST(SiluMulBackwardTest, MatchesF64AndFiniteDifferences) {
  const int64_t n = 2051;  // several chunks and a scalar tail
  auto g = RandomVector(n, 1, 6.f), u = RandomVector(n, 2, 2.f), dout = RandomVector(n, 3);
  std::vector<float> dg(n, 9.f), du(n, 9.f);
  SiluMulBackward(g.data(), u.data(), dout.data(), n, dg.data(), du.data());
  std::vector<double> dg_ref(n), du_ref(n);
  for (int64_t i = 0; i < n; ++i) {
    const double gi = g[i], s = 1.0 / (1.0 + std::exp(-gi));
    du_ref[i] = dout[i] * gi * s;
    dg_ref[i] = dout[i] * u[i] * s * (1.0 + gi * (1.0 - s));
  }
  EXPECT_LT(RelErr(dg, dg_ref), kTol);
  EXPECT_LT(RelErr(du, du_ref), kTol);
  auto fwd = [&](const std::vector<double>& gv, const std::vector<double>& uv) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += gv[i] / (1.0 + std::exp(-gv[i])) * uv[i] * dout[i];
    return s;
  };
  const auto gd = ToDouble(g), ud = ToDouble(u);
  ExpectMatchesFiniteDifferences([&](const std::vector<double>& gv) { return fwd(gv, ud); }, gd, dg,
                                 200, "dgate");
  ExpectMatchesFiniteDifferences([&](const std::vector<double>& uv) { return fwd(gd, uv); }, ud, du,
                                 200, "dup");
}

// ----------------------------------------------------------------------------
// RoPE

TEST(ApplyRopeBackwardTest, IsTheTransposeOfApplyRope) {
  const int64_t n = 7, heads = 3, hd = 8, half = hd / 2, stride = heads * hd + 5;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.f, -2.f * i / hd);
  std::vector<int64_t> pos(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = 3 + 5 * t;
  std::vector<float> cs(n * half), sn(n * half);
  RopeCosSin(inv_freq.data(), half, pos.data(), n, cs.data(), sn.data());
  auto x = RandomVector(n * stride, 1), dy = RandomVector(n * stride, 2);
  auto rope = [&](const std::vector<double>& in) {  // f64 forward of the same layout
    std::vector<double> out = in;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const int64_t a = t * stride + h * hd + i, b = a + half;
          out[a] = in[a] * cs[t * half + i] - in[b] * sn[t * half + i];
          out[b] = in[b] * cs[t * half + i] + in[a] * sn[t * half + i];
        }
    return out;
  };
  std::vector<float> dx = dy;
  ApplyRopeBackward(dx.data(), n, heads, hd, stride, cs.data(), sn.data());
  std::vector<double> dx_ref(n * stride);
  for (size_t i = 0; i < dx_ref.size(); ++i) dx_ref[i] = dy[i];  // padding passes through
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = t * stride + h * hd + i, b = a + half;
        dx_ref[a] = static_cast<double>(dy[a]) * cs[t * half + i] +
                    static_cast<double>(dy[b]) * sn[t * half + i];
        dx_ref[b] = static_cast<double>(dy[b]) * cs[t * half + i] -
                    static_cast<double>(dy[a]) * sn[t * half + i];
      }
  EXPECT_LT(RelErr(dx, dx_ref), kTol);
  // The padding columns of each row are not rope'd: the forward leaves them
  // as they are, so their gradient is dy itself.
  ExpectMatchesFiniteDifferences([&](const std::vector<double>& xv) { return Dot(rope(xv), dy); },
                                 ToDouble(x), dx, 1000, "dx");
  // Backward then forward is the identity (the rotation is orthogonal).
  std::vector<float> round = dx;
  ApplyRope(round.data(), n, heads, hd, stride, cs.data(), sn.data());
  for (size_t i = 0; i < round.size(); ++i) EXPECT_NEAR(round[i], dy[i], 1e-6) << i;
}

// ----------------------------------------------------------------------------
// Embedding

TEST(EmbeddingBackwardTest, AddsEveryTokensRow) {
  const int64_t vocab = 11, dim = 77, n = 500;  // repeated ids, partial column block
  std::vector<int32_t> ids(n);
  std::mt19937 rng(5);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  auto dout = RandomVector(n * dim, 1), table0 = RandomVector(vocab * dim, 2);
  std::vector<float> table = table0;
  EmbeddingBackward(ids.data(), n, dim, dout.data(), table.data());
  std::vector<double> ref(table0.begin(), table0.end());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < dim; ++c) ref[ids[i] * dim + c] += dout[i * dim + c];
  EXPECT_LT(RelErr(table, ref), kTol);
  // As a gradient: loss = sum(table[ids] * dout).
  std::vector<float> grad(vocab * dim, 0.f);
  EmbeddingBackward(ids.data(), n, dim, dout.data(), grad.data());
  ExpectMatchesFiniteDifferences(
      [&](const std::vector<double>& t) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t c = 0; c < dim; ++c) s += t[ids[i] * dim + c] * dout[i * dim + c];
        return s;
      },
      ToDouble(table0), grad, 100, "dtable");
}

// ----------------------------------------------------------------------------
// SumSquares

TEST(SumSquaresTest, MatchesF64) {
  for (int64_t n : {0, 1, 7, 100003}) {
    auto x = RandomVector(n, 9, 3.f);
    double ref = 0;
    for (float v : x) ref += static_cast<double>(v) * v;
    EXPECT_NEAR(SumSquares(x.data(), n), ref, 1e-12 * std::max(1.0, ref)) << n;
  }
}

// ----------------------------------------------------------------------------
// Attention

std::vector<int32_t> DocStarts(const std::vector<int64_t>& lengths) {
  std::vector<int32_t> ds;
  int32_t start = 0;
  for (int64_t len : lengths) {
    for (int64_t i = 0; i < len; ++i) ds.push_back(start);
    start += static_cast<int32_t>(len);
  }
  return ds;
}

struct AttnProblem {
  int64_t n, heads, kv_heads, d, window;
  std::vector<int32_t> doc_start;
  double scale;
  bool Visible(int64_t i, int64_t j) const {
    return j <= i && j >= doc_start[i] && (window <= 0 || i - j < window);
  }
};

// f64 attention: out [n, heads * d] and lse [heads, n].
void AttnRef(const AttnProblem& p, const std::vector<double>& q, const std::vector<double>& k,
             const std::vector<double>& v, std::vector<double>* out, std::vector<double>* lse) {
  const int64_t d = p.d, ldq = p.heads * d, ldkv = p.kv_heads * d, group = p.heads / p.kv_heads;
  out->assign(p.n * ldq, 0.0);
  if (lse) lse->assign(p.heads * p.n, -INFINITY);
  std::vector<double> s(p.n);
  for (int64_t h = 0; h < p.heads; ++h) {
    const int64_t g = h / group;
    for (int64_t i = 0; i < p.n; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        if (!p.Visible(i, j)) continue;
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += q[i * ldq + h * d + c] * k[j * ldkv + g * d + c];
        s[j] = dot * p.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= i; ++j)
        if (p.Visible(i, j)) sum += std::exp(s[j] - mx);
      for (int64_t j = 0; j <= i; ++j) {
        if (!p.Visible(i, j)) continue;
        const double pij = std::exp(s[j] - mx) / sum;
        for (int64_t c = 0; c < d; ++c)
          (*out)[i * ldq + h * d + c] += pij * v[j * ldkv + g * d + c];
      }
      if (lse) (*lse)[h * p.n + i] = mx + std::log(sum);
    }
  }
}

// f64 analytic gradients of sum(out * dout).
void AttnBackwardRef(const AttnProblem& p, const std::vector<double>& q,
                     const std::vector<double>& k, const std::vector<double>& v,
                     const std::vector<double>& dout, std::vector<double>* dq,
                     std::vector<double>* dk, std::vector<double>* dv) {
  const int64_t d = p.d, ldq = p.heads * d, ldkv = p.kv_heads * d, group = p.heads / p.kv_heads;
  dq->assign(q.size(), 0.0);
  dk->assign(k.size(), 0.0);
  dv->assign(v.size(), 0.0);
  std::vector<double> s(p.n), prob(p.n), dp(p.n);
  for (int64_t h = 0; h < p.heads; ++h) {
    const int64_t g = h / group;
    for (int64_t i = 0; i < p.n; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        if (!p.Visible(i, j)) continue;
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += q[i * ldq + h * d + c] * k[j * ldkv + g * d + c];
        s[j] = dot * p.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= i; ++j)
        if (p.Visible(i, j)) sum += std::exp(s[j] - mx);
      double delta = 0;
      for (int64_t j = 0; j <= i; ++j) {
        if (!p.Visible(i, j)) continue;
        prob[j] = std::exp(s[j] - mx) / sum;
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += dout[i * ldq + h * d + c] * v[j * ldkv + g * d + c];
        dp[j] = dot;
        delta += prob[j] * dp[j];
      }
      for (int64_t j = 0; j <= i; ++j) {
        if (!p.Visible(i, j)) continue;
        const double ds = prob[j] * (dp[j] - delta) * p.scale;
        for (int64_t c = 0; c < d; ++c) {
          (*dq)[i * ldq + h * d + c] += ds * k[j * ldkv + g * d + c];
          (*dk)[j * ldkv + g * d + c] += ds * q[i * ldq + h * d + c];
          (*dv)[j * ldkv + g * d + c] += prob[j] * dout[i * ldq + h * d + c];
        }
      }
    }
  }
}

struct AttnCase {
  int64_t n, heads, kv_heads, d, window;
  std::vector<int64_t> docs;  // document lengths, summing to n
  size_t fd_samples;
};

void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << "n=" << c.n << " heads=" << c.heads << "/" << c.kv_heads << " d=" << c.d
      << " window=" << c.window << " docs=" << c.docs.size();
}

class AttentionTrainTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTrainTest, ForwardAndBackwardMatchF64) {
  const AttnCase& c = GetParam();
  AttnProblem p{c.n,
                c.heads,
                c.kv_heads,
                c.d,
                c.window,
                DocStarts(c.docs),
                1.0 / std::sqrt(static_cast<double>(c.d))};
  ASSERT_EQ(static_cast<int64_t>(p.doc_start.size()), c.n);
  const AttentionShape shape{c.heads, c.kv_heads, c.d};
  const float scale = static_cast<float>(p.scale);
  const int64_t nq = c.n * c.heads * c.d, nkv = c.n * c.kv_heads * c.d;
  auto q = RandomVector(nq, 1, 2.f), k = RandomVector(nkv, 2, 2.f), v = RandomVector(nkv, 3);
  auto dout = RandomVector(nq, 4);
  const auto qd = ToDouble(q), kd = ToDouble(k), vd = ToDouble(v), doutd = ToDouble(dout);

  std::vector<float> out(nq, 9.f), lse(c.heads * c.n, 9.f);
  AttentionForward(q.data(), k.data(), v.data(), p.doc_start.data(), c.n, shape, scale, c.window,
                   out.data(), lse.data());
  std::vector<double> out_ref, lse_ref;
  AttnRef(p, qd, kd, vd, &out_ref, &lse_ref);
  EXPECT_LT(RelErr(out, out_ref), kTol);
  EXPECT_LT(RelErr(lse, lse_ref), kTol);

  // Gradient outputs start as garbage: the backward overwrites them.
  std::vector<float> dq(nq, 5.f), dk(nkv, 5.f), dv(nkv, 5.f);
  AttentionBackward(q.data(), k.data(), v.data(), p.doc_start.data(), c.n, shape, scale, c.window,
                    out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  std::vector<double> dq_ref, dk_ref, dv_ref;
  AttnBackwardRef(p, qd, kd, vd, doutd, &dq_ref, &dk_ref, &dv_ref);
  EXPECT_LT(RelErr(dq, dq_ref), kTol);
  EXPECT_LT(RelErr(dk, dk_ref), kTol);
  EXPECT_LT(RelErr(dv, dv_ref), kTol);

  auto loss = [&](const std::vector<double>& qv, const std::vector<double>& kv,
                  const std::vector<double>& vv) {
    std::vector<double> o;
    AttnRef(p, qv, kv, vv, &o, nullptr);
    return Dot(o, dout);
  };
  ExpectMatchesFiniteDifferences([&](const std::vector<double>& x) { return loss(x, kd, vd); }, qd,
                                 dq, c.fd_samples, "dq");
  ExpectMatchesFiniteDifferences([&](const std::vector<double>& x) { return loss(qd, x, vd); }, kd,
                                 dk, c.fd_samples, "dk");
  ExpectMatchesFiniteDifferences([&](const std::vector<double>& x) { return loss(qd, kd, x); }, vd,
                                 dv, c.fd_samples, "dv");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTrainTest,
    ::testing::Values(AttnCase{1, 4, 2, 8, 0, {1}, 100},
                      AttnCase{37, 4, 2, 8, 0, {37}, 100},            // one block, GQA 2
                      AttnCase{37, 4, 1, 16, 0, {10, 1, 26}, 100},    // MQA, three documents
                      AttnCase{65, 2, 2, 16, 0, {65}, 40},            // MHA, one row past a block
                      AttnCase{150, 4, 2, 16, 0, {70, 80}, 30},       // documents across blocks
                      AttnCase{150, 4, 1, 8, 20, {150}, 30},          // sliding window
                      AttnCase{150, 4, 2, 8, 40, {30, 100, 20}, 30},  // window and documents
                      AttnCase{300, 2, 1, 16, 0, {300}, 12},          // several forward key blocks
                      AttnCase{300, 4, 2, 16, 100, {5, 290, 5}, 12}));  // window crossing blocks

// ----------------------------------------------------------------------------
// Determinism: the same bits on any number of threads.

struct AllOutputs {
  std::vector<float> lin_y, lin_dx, lin_dw, lin_db, rms_y, rms_rstd, rms_dx, rms_dw, silu_dg,
      silu_du, rope_dx, emb, attn_out, attn_lse, dq, dk, dv;
  double ss = 0;
};

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

AllOutputs RunEverything() {
  AllOutputs o;
  {
    const int64_t m = 600, k = 300, n = 520;
    auto x = RandomVector(m * k, 1), w = RandomVector(n * k, 2), b = RandomVector(n, 3);
    auto dy = RandomVector(m * n, 4);
    o.lin_y.resize(m * n);
    LinearForward(x.data(), m, k, w.data(), n, b.data(), o.lin_y.data());
    o.lin_dx.resize(m * k);
    o.lin_dw = RandomVector(n * k, 5);
    o.lin_db = RandomVector(n, 6);
    LinearBackward(x.data(), m, k, w.data(), n, dy.data(), o.lin_dx.data(), o.lin_dw.data(),
                   o.lin_db.data());
  }
  {
    const int64_t rows = 700, dim = 200;
    auto x = RandomVector(rows * dim, 7), w = RandomVector(dim, 8),
         dy = RandomVector(rows * dim, 9);
    o.rms_y.resize(rows * dim);
    o.rms_rstd.resize(rows);
    RmsNormForward(x.data(), rows, dim, w.data(), 1e-6f, o.rms_y.data(), o.rms_rstd.data());
    o.rms_dx.resize(rows * dim);
    o.rms_dw = RandomVector(dim, 10);
    RmsNormBackward(x.data(), o.rms_rstd.data(), rows, dim, w.data(), dy.data(), o.rms_dx.data(),
                    o.rms_dw.data());
  }
  {
    const int64_t n = 100000;
    auto g = RandomVector(n, 11, 5.f), u = RandomVector(n, 12), d = RandomVector(n, 13);
    o.silu_dg.resize(n);
    o.silu_du.resize(n);
    SiluMulBackward(g.data(), u.data(), d.data(), n, o.silu_dg.data(), o.silu_du.data());
    o.ss = SumSquares(g.data(), n);
  }
  {
    const int64_t n = 400, heads = 6, hd = 32, half = hd / 2;
    auto cs = RandomVector(n * half, 14), sn = RandomVector(n * half, 15);
    o.rope_dx = RandomVector(n * heads * hd, 16);
    ApplyRopeBackward(o.rope_dx.data(), n, heads, hd, heads * hd, cs.data(), sn.data());
  }
  {
    const int64_t vocab = 50, dim = 300, n = 1000;
    std::vector<int32_t> ids(n);
    for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919) % vocab);
    auto dout = RandomVector(n * dim, 17);
    o.emb = RandomVector(vocab * dim, 18);
    EmbeddingBackward(ids.data(), n, dim, dout.data(), o.emb.data());
  }
  {
    const int64_t n = 333, heads = 4, kv_heads = 2, d = 16;
    const AttentionShape shape{heads, kv_heads, d};
    const auto ds = DocStarts({100, 233});
    auto q = RandomVector(n * heads * d, 19, 2.f), k = RandomVector(n * kv_heads * d, 20, 2.f);
    auto v = RandomVector(n * kv_heads * d, 21), dout = RandomVector(n * heads * d, 22);
    o.attn_out.resize(q.size());
    o.attn_lse.resize(heads * n);
    AttentionForward(q.data(), k.data(), v.data(), ds.data(), n, shape, 0.25f, 0, o.attn_out.data(),
                     o.attn_lse.data());
    o.dq.resize(q.size());
    o.dk.resize(k.size());
    o.dv.resize(v.size());
    AttentionBackward(q.data(), k.data(), v.data(), ds.data(), n, shape, 0.25f, 0,
                      o.attn_out.data(), o.attn_lse.data(), dout.data(), o.dq.data(), o.dk.data(),
                      o.dv.data());
  }
  return o;
}

TEST(TrainOpsDeterminismTest, SameBitsForAnyThreadCount) {
  SetNumThreads(1);
  const AllOutputs one = RunEverything();
  for (int threads : {2, 3}) {
    SetNumThreads(threads);
    const AllOutputs many = RunEverything();
#define RETORT_EXPECT_SAME_BITS(field) \
  EXPECT_TRUE(SameBits(many.field, one.field)) << #field << ": " << threads << " threads vs 1"
    RETORT_EXPECT_SAME_BITS(lin_y);
    RETORT_EXPECT_SAME_BITS(lin_dx);
    RETORT_EXPECT_SAME_BITS(lin_dw);
    RETORT_EXPECT_SAME_BITS(lin_db);
    RETORT_EXPECT_SAME_BITS(rms_y);
    RETORT_EXPECT_SAME_BITS(rms_rstd);
    RETORT_EXPECT_SAME_BITS(rms_dx);
    RETORT_EXPECT_SAME_BITS(rms_dw);
    RETORT_EXPECT_SAME_BITS(silu_dg);
    RETORT_EXPECT_SAME_BITS(silu_du);
    RETORT_EXPECT_SAME_BITS(rope_dx);
    RETORT_EXPECT_SAME_BITS(emb);
    RETORT_EXPECT_SAME_BITS(attn_out);
    RETORT_EXPECT_SAME_BITS(attn_lse);
    RETORT_EXPECT_SAME_BITS(dq);
    RETORT_EXPECT_SAME_BITS(dk);
    RETORT_EXPECT_SAME_BITS(dv);
#undef RETORT_EXPECT_SAME_BITS
    EXPECT_EQ(std::memcmp(&many.ss, &one.ss, sizeof(double)), 0) << "SumSquares";
  }
  SetNumThreads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace
}  // namespace retort::cpu
