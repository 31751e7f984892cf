// A directory written by `retort distill` (tests/reference/trained/, made by
// the commands in make_fixtures.py) loads in transformers and in our engine
// with the same logits.
#include <cmath>

#include "formats/safetensors.h"
#include "gtest/gtest.h"
#include "model/transformer.h"

namespace retort {
namespace {

TEST(SavedModelTest, DistilledDirectoryGivesTransformersLogits) {
  const std::string dir = "tests/reference/trained/qwen2_tiny_sft";
  auto engine = Transformer::Load(dir);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto fixture =
      SafetensorsReader::Open("tests/reference/trained/qwen2_tiny_sft_logits.safetensors");
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  auto ids = (*fixture)->Get("token_ids");
  auto want = (*fixture)->Get("logits");
  ASSERT_TRUE(ids.ok() && want.ok());
  std::vector<int32_t> tokens(ids->data<int32_t>(), ids->data<int32_t>() + ids->numel());
  auto got = (*engine)->Logits(tokens);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(static_cast<int64_t>(got->size()), want->numel());
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < want->numel(); ++i) {
    max_diff = std::max(max_diff, std::abs(double((*got)[i]) - want->data<float>()[i]));
    max_ref = std::max(max_ref, std::abs(double(want->data<float>()[i])));
  }
  EXPECT_LT(max_diff, 1e-4 * std::max(1.0, max_ref)) << "max |ours - transformers| = " << max_diff;
  // The trained model is not the untrained one (the fixture would be vacuous).
  EXPECT_GT(max_ref, 1.0);
}

}  // namespace
}  // namespace retort
