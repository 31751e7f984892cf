// A command given no model uses the default one: $RETORT_MODEL, else the
// bundled teacher in models/arith-teacher. A single positional of a MODEL OUT
// command is OUT; a model given as a flag or positional is never replaced.
#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"

namespace retort::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class DefaultModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_ = std::make_unique<CliHarness>("retort_default_model");
    tiny_ = (h_->root() / "tiny").string();
    CliRun r = h_->Exec("init " + tiny_ + " --family llama --size tiny --seed 3");
    ASSERT_EQ(r.code, 0) << r.err;
  }
  std::string Env() const { return "RETORT_MODEL=" + tiny_ + " "; }
  std::unique_ptr<CliHarness> h_;
  std::string tiny_;
};

TEST_F(DefaultModelTest, TheEnvironmentsModelStandsInForAMissingModel) {
  CliRun r = h_->ExecWithPrefix(Env(), "inspect --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["model"], tiny_);
  EXPECT_THAT(r.err, HasSubstr("no model given; using " + tiny_ + " ($RETORT_MODEL)"));

  // MODEL OUT with one positional: it is OUT.
  const std::string out = (h_->root() / "q8").string();
  r = h_->ExecWithPrefix(Env(), "quantize " + out + " --scheme int8-channel");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(fs::path(out) / "config.json"));

  // A model that is given is used, positional or flag, and nothing is said.
  r = h_->ExecWithPrefix("RETORT_MODEL=/does/not/exist ", "inspect " + tiny_ + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("no model given")));
  r = h_->ExecWithPrefix("RETORT_MODEL=/does/not/exist ", "inspect --model " + tiny_ + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  // Two positionals are MODEL and OUT, as always.
  const std::string out2 = (h_->root() / "q8b").string();
  r = h_->ExecWithPrefix("RETORT_MODEL=/does/not/exist ",
                         "quantize " + tiny_ + " " + out2 + " --scheme int8-channel");
  ASSERT_EQ(r.code, 0) << r.err;
}

TEST_F(DefaultModelTest, WithoutTheEnvironmentTheBundledTeacherIsUsed) {
  const fs::path teacher = fs::path(RETORT_SOURCE_DIR_PATH) / "models/arith-teacher";
  ASSERT_TRUE(fs::exists(teacher / "config.json")) << teacher;
  CliRun r = h_->ExecWithPrefix("env -u RETORT_MODEL ", "inspect --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fs::weakly_canonical(nlohmann::json::parse(r.out)["model"].get<std::string>()),
            fs::weakly_canonical(teacher));
  EXPECT_THAT(r.err, HasSubstr("the bundled teacher"));
  r = h_->ExecWithPrefix("env -u RETORT_MODEL ", "inspect --help");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("models/arith-teacher"));
}

}  // namespace
}  // namespace retort::testing
