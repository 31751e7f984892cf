// Two writers of one output folder: the second gets one clean error line and
// writes nothing (two `generate -o SAME` at once used to duplicate traces and
// leave the folder unresumable).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/file.h"
#include "tests/cli/cli_harness.h"

namespace retort {
namespace {

namespace fs = std::filesystem;
using testing::CliHarness;
using testing::CliRun;

TEST(OutputLockCliTest, ASecondGenerateIntoTheSameFolderIsRefused) {
  CliHarness cli("output_lock_cli_test");
  const std::string out = (cli.root() / "traces").string();
  fs::create_directories(out);
  const std::string prompts =
      std::string(RETORT_SOURCE_DIR_PATH) + "/data/arith_word_problems.jsonl";
  const std::string args = "generate " + std::string(RETORT_SOURCE_DIR_PATH) +
                           "/models/arith-teacher --prompts " + prompts + " " + out +
                           " --samples 1 --max-tokens 4";
  {
    // The first writer holds the folder.
    absl::StatusOr<DirectoryLock> first = DirectoryLock::Acquire(out);
    ASSERT_TRUE(first.ok()) << first.status();
    CliRun r = cli.Exec(args);
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find(out + " is in use by another process"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    EXPECT_TRUE(fs::is_empty(out));
  }
  // Once it is gone the folder is free; a rerun (a resume) removes what a
  // killed writer left.
  CliRun r = cli.Exec(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out + "/job.json"));
  const std::string stale = out + "/done.jsonl.tmp.99999999";
  ASSERT_TRUE(WriteFileAtomically(stale, "x").ok());
  r = cli.Exec(args);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(fs::exists(stale));
}

}  // namespace
}  // namespace retort
