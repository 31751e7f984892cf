#include "kernels/cpu/kernel_path.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace retort::cpu {
namespace {

TEST(EnvFlagSetTest, SetMeansNeitherEmptyNorZero) {
  const char* name = "RETORT_KERNEL_PATH_TEST_FLAG";
  unsetenv(name);
  EXPECT_FALSE(EnvFlagSet(name));
  setenv(name, "", 1);
  EXPECT_FALSE(EnvFlagSet(name));
  setenv(name, "0", 1);
  EXPECT_FALSE(EnvFlagSet(name));
  setenv(name, "1", 1);
  EXPECT_TRUE(EnvFlagSet(name));
  setenv(name, "no", 1);
  EXPECT_TRUE(EnvFlagSet(name));
  unsetenv(name);
}

enum class TestPath { kSlow, kFast };
bool HasFast() { return true; }
bool LacksFast() { return false; }

TEST(KernelPathChoiceTest, DefaultsToTheFastPathUnlessTheCpuOrTheEnvironmentSaysNo) {
  using With = KernelPathChoice<TestPath, TestPath::kSlow, TestPath::kFast, HasFast>;
  using Without = KernelPathChoice<TestPath, TestPath::kSlow, TestPath::kFast, LacksFast>;
  const char* saved = std::getenv("RETORT_NO_AVX512");
  const std::string keep = saved ? saved : "";
  unsetenv("RETORT_NO_AVX512");
  EXPECT_EQ(With::Default(), TestPath::kFast);
  EXPECT_EQ(Without::Default(), TestPath::kSlow);
  setenv("RETORT_NO_AVX512", "1", 1);
  EXPECT_EQ(With::Default(), TestPath::kSlow);
  if (saved) {
    setenv("RETORT_NO_AVX512", keep.c_str(), 1);
  } else {
    unsetenv("RETORT_NO_AVX512");
  }
}

TEST(KernelPathChoiceTest, SetsOnlyPathsTheCpuSupports) {
  using Without = KernelPathChoice<TestPath, TestPath::kSlow, TestPath::kFast, LacksFast>;
  EXPECT_TRUE(Without::Supported(TestPath::kSlow));
  EXPECT_FALSE(Without::Supported(TestPath::kFast));
  EXPECT_FALSE(Without::Set(TestPath::kFast));
  EXPECT_EQ(Without::Active().load(), Without::Default());
  EXPECT_TRUE(Without::Set(TestPath::kSlow));
  EXPECT_EQ(Without::Active().load(), TestPath::kSlow);

  using With = KernelPathChoice<TestPath, TestPath::kSlow, TestPath::kFast, HasFast>;
  EXPECT_TRUE(With::Set(TestPath::kFast));
  EXPECT_EQ(With::Active().load(), TestPath::kFast);
  EXPECT_TRUE(With::Set(TestPath::kSlow));
  EXPECT_EQ(With::Active().load(), TestPath::kSlow);
}

}  // namespace
}  // namespace retort::cpu
