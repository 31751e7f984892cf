#include <string>
#include <vector>

#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "gtest/gtest.h"

namespace retort {
namespace {

// Parses `flags` (after the program name) with --tokens declared.
int64_t Tokens(std::vector<std::string> flags, int64_t fallback) {
  std::vector<char*> argv = {const_cast<char*>("prog")};
  for (std::string& f : flags) argv.push_back(f.data());
  int argc = static_cast<int>(argv.size());
  int64_t tokens = 0;
  BenchArgs args("prog");
  args.Add()("tokens", po::value(&tokens), "tokens");
  args.Parse(&argc, argv.data(), UnknownFlags::kError);
  return args.PositiveOr("tokens", tokens, fallback);
}

TEST(BenchArgsTest, PositiveOrTakesTheGivenValueOrTheFallback) {
  EXPECT_EQ(Tokens({}, 512), 512);
  EXPECT_EQ(Tokens({"--tokens=70"}, 512), 70);
  EXPECT_EQ(Tokens({"--tokens", "3"}, 512), 3);
}

TEST(BenchArgsTest, PositiveOrRefusesAValueBelowOne) {
  EXPECT_EXIT(Tokens({"--tokens=0"}, 512), ::testing::ExitedWithCode(2),
              "prog: bad --tokens=0: expected a positive integer");
}

TEST(BenchOutputTest, RandomFloatsAreReproducibleAndInRange) {
  const std::vector<float> a = RandomFloats(1000, 7), b = RandomFloats(1000, 7);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, RandomFloats(1000, 8));
  for (float x : a) {
    EXPECT_GE(x, -1.f);
    EXPECT_LT(x, 1.f);
  }
}

TEST(BenchOutputTest, PerSecondIsAnIterationInvariantRate) {
  const benchmark::Counter c = PerSecond(2.5);
  EXPECT_EQ(c.value, 2.5);
  EXPECT_EQ(c.flags, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace
}  // namespace retort
