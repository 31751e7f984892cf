#include "core/tensor.h"

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(TensorTest, ZerosReshapeRowsClone) {
  Tensor t = Tensor::Zeros(DType::kF32, {4, 3});
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 48u);
  for (int i = 0; i < 12; ++i) t.mutable_data<float>()[i] = i;
  Tensor rows = t.Rows(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  EXPECT_EQ(rows.data<float>()[0], 3.f);
  auto r = t.Reshape({2, 6});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(t.Reshape({5}).ok());
  Tensor c = t.Clone();
  c.mutable_data<float>()[0] = 42;
  EXPECT_EQ(t.data<float>()[0], 0.f);
}

TEST(TensorTest, PackedI4) {
  Tensor t = Tensor::Zeros(DType::kI4, {5});
  EXPECT_EQ(t.nbytes(), 3u);
  Tensor f = Tensor::Zeros(DType::kF32, {5});
  float vals[5] = {-8, 7, 0, -1, 3};
  for (int i = 0; i < 5; ++i) f.mutable_data<float>()[i] = vals[i];
  Tensor q = f.To(DType::kI4);
  EXPECT_EQ(q.data<uint8_t>()[0], 0x78);  // -8 low nibble, 7 high nibble
  Tensor back = q.To(DType::kF32);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back.data<float>()[i], vals[i]);
}

}  // namespace
}  // namespace retort
