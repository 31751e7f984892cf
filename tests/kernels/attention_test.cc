#include <cmath>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/test_util.h"

namespace retort::cpu {
namespace {

using testing::RandomVector;

// Plain f64 attention: scores, mask, softmax, weighted sum.
std::vector<double> Reference(const std::vector<float>& q, int64_t n, int64_t start,
                              const std::vector<float>& k, const std::vector<float>& v,
                              int64_t kv_stride, const AttentionShape& s, double scale,
                              int64_t window) {
  const int64_t d = s.head_dim, ld = s.n_heads * d, group = s.n_heads / s.n_kv_heads;
  std::vector<double> out(n * ld, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = start + t;
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const int64_t kvh = h / group;
      std::vector<double> sc(pos + 1, -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j <= pos; ++j) {
        if (window > 0 && pos - j >= window) continue;
        double dot = 0;
        for (int64_t c = 0; c < d; ++c)
          dot += static_cast<double>(q[t * ld + h * d + c]) * k[kvh * kv_stride + j * d + c];
        sc[j] = dot * scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= pos; ++j) sum += std::exp(sc[j] - mx);
      for (int64_t j = 0; j <= pos; ++j) {
        double p = std::exp(sc[j] - mx) / sum;
        for (int64_t c = 0; c < d; ++c)
          out[t * ld + h * d + c] += p * v[kvh * kv_stride + j * d + c];
      }
    }
  }
  return out;
}

struct Case {
  int64_t n, start, heads, kv_heads, head_dim, window;
};

class AttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionTest, MatchesF64Loop) {
  const Case c = GetParam();
  AttentionShape shape{c.heads, c.kv_heads, c.head_dim};
  const int64_t capacity = c.start + c.n + 3;  // spare rows the kernel must ignore
  const int64_t kv_stride = capacity * c.head_dim;
  auto q = RandomVector(c.n * c.heads * c.head_dim, 1, 2.f);
  auto k = RandomVector(c.kv_heads * kv_stride, 2, 2.f);
  auto v = RandomVector(c.kv_heads * kv_stride, 3);
  std::vector<float> out(q.size(), 99.f);
  const float scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  Attention(q.data(), c.n, c.start, k.data(), v.data(), kv_stride, shape, scale, c.window,
            out.data());
  auto ref = Reference(q, c.n, c.start, k, v, kv_stride, shape, scale, c.window);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "element " << i;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(Case{1, 0, 4, 2, 16, 0},          // first decode step
                      Case{1, 37, 4, 2, 16, 0},         // decode with history
                      Case{12, 0, 4, 4, 8, 0},          // MHA prefill
                      Case{12, 5, 6, 2, 16, 0},         // prefill continuing a cache
                      Case{200, 0, 4, 1, 32, 0},        // several query blocks (sgemm path)
                      Case{300, 400, 2, 2, 64, 0},      // several key blocks, long history
                      Case{50, 10, 4, 2, 16, 7},        // sliding window
                      Case{1, 600, 4, 2, 16, 300},      // window crossing key blocks, decode
                      Case{130, 300, 2, 1, 16, 100}));  // window with query blocks

}  // namespace
}  // namespace retort::cpu
