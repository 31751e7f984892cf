// pipeline/results: the eval table lists the eval stages with accuracy in
// recipe order, by label, and nothing else.
#include "pipeline/results.h"

#include "gtest/gtest.h"

namespace retort::pipeline {
namespace {

StageRecord Stage(const std::string& name, const std::string& kind, const std::string& label,
                  nlohmann::ordered_json metrics) {
  StageRecord s;
  s.name = name;
  s.kind = kind;
  s.label = label;
  s.metrics = std::move(metrics);
  return s;
}

TEST(ResultsTest, OneRowPerEvalStageInRecipeOrder) {
  Manifest m;
  m.stages.push_back(Stage("distill", "distill", "student", {{"final_loss", 0.3}}));
  m.stages.push_back(Stage("eval_b", "eval", "student, traces",
                           {{"accuracy", 0.925},
                            {"correct", 185},
                            {"total", 200},
                            {"tokens_per_s", 1234.4},
                            {"model_bytes", 2500000}}));
  m.stages.push_back(
      Stage("eval_a", "eval", "", {{"accuracy", 0.0}, {"correct", 0}, {"total", 200}}));
  m.stages.push_back(Stage("eval_failed", "eval", "never ran", nlohmann::ordered_json::object()));
  EXPECT_EQ(EvalTable(m),
            "| model | held-out accuracy | correct | size | decode tokens/s |\n"
            "|---|---|---|---|---|\n"
            "| student, traces | 92.5% | 185/200 | 2.50 MB | 1234 |\n"
            "| eval_a | 0.0% | 0/200 | - | - |\n");
  EXPECT_EQ(EvalTable(Manifest{}), "");
}

}  // namespace
}  // namespace retort::pipeline
