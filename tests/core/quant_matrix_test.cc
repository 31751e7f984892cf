#include "core/quant_matrix.h"

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(QuantMatrixTest, ScaleShapePerGranularity) {
  EXPECT_EQ(QuantScaleShape(QuantGranularity::kTensor, 10, 64, 0), (Shape{1, 1}));
  EXPECT_EQ(QuantScaleShape(QuantGranularity::kChannel, 10, 64, 0), (Shape{10, 1}));
  EXPECT_EQ(QuantScaleShape(QuantGranularity::kGroup, 10, 64, 32), (Shape{10, 2}));
  EXPECT_EQ(QuantScaleShape(QuantGranularity::kGroup, 10, 65, 32), (Shape{10, 3}));
  EXPECT_EQ(QuantScaleShape(QuantGranularity::kBlock, 130, 64, 128), (Shape{2, 1}));
}

TEST(QuantMatrixTest, LayoutNames) {
  EXPECT_EQ(QuantLayoutName(QuantGranularity::kTensor, 0), "tensor");
  EXPECT_EQ(QuantLayoutName(QuantGranularity::kChannel, 0), "channel");
  EXPECT_EQ(QuantLayoutName(QuantGranularity::kGroup, 128), "g128");
  EXPECT_EQ(QuantLayoutName(QuantGranularity::kBlock, 128), "block128");
}

QuantizedMatrix Int8Groups(int64_t rows, int64_t cols, int64_t group) {
  QuantizedMatrix m{.rows = rows,
                    .cols = cols,
                    .value_type = DType::kI8,
                    .granularity = QuantGranularity::kGroup,
                    .group_size = group,
                    .values = Tensor::Zeros(DType::kI8, {rows, cols}),
                    .scales = Tensor::Zeros(
                        DType::kF32, QuantScaleShape(QuantGranularity::kGroup, rows, cols, group)),
                    .zero_points = Tensor(),  // symmetric
                    .g_idx = Tensor()};
  for (int64_t i = 0; i < m.scales.numel(); ++i) m.scales.mutable_data<float>()[i] = 0.5f;
  return m;
}

TEST(QuantMatrixTest, DescribeUsesTheLayoutName) {
  EXPECT_EQ(Int8Groups(4, 64, 32).Describe(), "int8 g32 sym");
}

TEST(QuantMatrixTest, ShapeCheckSkipsTheScansValidateMakes) {
  QuantizedMatrix m = Int8Groups(4, 64, 32);
  EXPECT_TRUE(CheckQuantizedMatrixShapes(m).ok());
  EXPECT_TRUE(ValidateQuantizedMatrix(m, "w").ok());
  // A non-positive scale is found only by the scan.
  m.scales.mutable_data<float>()[3] = 0.f;
  EXPECT_TRUE(CheckQuantizedMatrixShapes(m).ok());
  const absl::Status st = ValidateQuantizedMatrix(m, "w");
  EXPECT_EQ(st.message(), "w: scale 3 is 0 (scales must be finite and positive)");
}

TEST(QuantMatrixTest, ShapeCheckNamesTheProblemWithoutTheMatrix) {
  QuantizedMatrix m = Int8Groups(4, 64, 32);
  m.scales = Tensor::Zeros(DType::kF32, {4, 3});
  EXPECT_EQ(CheckQuantizedMatrixShapes(m).message(), "scales are F32 [4, 3], expected F32 [4, 2]");
  EXPECT_EQ(ValidateQuantizedMatrix(m, "layer.w").message(),
            "layer.w: scales are F32 [4, 3], expected F32 [4, 2]");
  m = Int8Groups(4, 64, 32);
  m.group_size = 0;
  EXPECT_EQ(CheckQuantizedMatrixShapes(m).message(), "group size 0 must be positive");
}

}  // namespace
}  // namespace retort
