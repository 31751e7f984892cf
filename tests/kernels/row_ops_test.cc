#include "kernels/cpu/row_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace retort::cpu {
namespace {

// Two query rows, d = 2, six keys in blocks of four: row 0 sees keys [1, 5),
// row 1 only key 0 (in the first block); the online softmax must give the
// softmax-weighted sum of the visible values and their log-sum-exp.
TEST(OnlineSoftmaxTest, MatchesAPlainSoftmaxOverKeyBlocks) {
  const std::vector<float> scores = {0.5f, -1.f, 2.f, 0.25f, 3.f, -2.f,       // row 0
                                     1.5f, 0.f,  0.f, 0.f,   0.f, 0.f};       // row 1
  const std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // [6 keys, 2]
  const int64_t d = 2, key_block = 4;
  auto visible = [](int64_t row, int64_t key) { return row == 0 ? key >= 1 && key < 5 : key == 0; };
  OnlineSoftmax sm;
  sm.Begin(2, key_block, d);
  for (int64_t kb = 0; kb < 6; kb += key_block) {
    const int64_t kn = std::min<int64_t>(key_block, 6 - kb);
    for (int64_t i = 0; i < 2; ++i) {
      int64_t lo = kn, hi = 0;
      for (int64_t j = 0; j < kn; ++j) {
        sm.scores()[i * kn + j] = scores[i * 6 + kb + j];
        if (visible(i, kb + j)) lo = std::min(lo, j), hi = j + 1;
      }
      sm.FoldRow(i, kn, lo, hi);
      for (int64_t j = 0; j < kn; ++j) {
        if (!visible(i, kb + j)) EXPECT_EQ(sm.scores()[i * kn + j], 0.f);
      }
    }
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < kn; ++j)
        for (int64_t c = 0; c < d; ++c)
          sm.output()[i * d + c] += sm.scores()[i * kn + j] * values[(kb + j) * d + c];
  }
  for (int64_t i = 0; i < 2; ++i) {
    double mx = -INFINITY, sum = 0, acc[2] = {0, 0};
    for (int64_t j = 0; j < 6; ++j)
      if (visible(i, j)) mx = std::max(mx, static_cast<double>(scores[i * 6 + j]));
    for (int64_t j = 0; j < 6; ++j) {
      if (!visible(i, j)) continue;
      const double p = std::exp(scores[i * 6 + j] - mx);
      sum += p;
      for (int64_t c = 0; c < d; ++c) acc[c] += p * values[j * d + c];
    }
    float out[2];
    sm.WriteRow(i, out);
    for (int64_t c = 0; c < d; ++c) EXPECT_NEAR(out[c], acc[c] / sum, 1e-5) << i << " " << c;
    EXPECT_NEAR(sm.LogSumExp(i), mx + std::log(sum), 1e-5) << i;
  }
}

TEST(OnlineSoftmaxTest, ARowThatSeesNoKeyIsZeroWithLogSumExpMinusInfinity) {
  OnlineSoftmax sm;
  sm.Begin(1, 4, 3);
  for (int64_t j = 0; j < 4; ++j) sm.scores()[j] = 1.f;
  sm.FoldRow(0, 4, 2, 2);
  for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(sm.scores()[j], 0.f);
  float out[3] = {1, 1, 1};
  sm.WriteRow(0, out);
  EXPECT_EQ(out[0], 0.f);
  EXPECT_EQ(out[2], 0.f);
  EXPECT_EQ(sm.LogSumExp(0), -INFINITY);
}

}  // namespace
}  // namespace retort::cpu
