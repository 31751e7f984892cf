#include "core/staged_directory.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "gtest/gtest.h"

namespace retort {
namespace {

namespace fs = std::filesystem;

class StagedDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            absl::StrCat("staged_dir_test_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
};

TEST_F(StagedDirectoryTest, AppearsOnlyOnCommit) {
  const std::string out = (root_ / "model").string();
  auto staged = StagedDirectory::Create(out);
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_EQ(fs::path(staged->path()).parent_path(), fs::absolute(out).parent_path());
  ASSERT_TRUE(WriteFileAtomically(staged->path() + "/a.txt", "A").ok());
  EXPECT_FALSE(fs::exists(out));
  ASSERT_TRUE(staged->Commit().ok());
  EXPECT_EQ(*ReadFileToString(out + "/a.txt"), "A");
  EXPECT_FALSE(fs::exists(staged->path()));
}

TEST_F(StagedDirectoryTest, DroppedWithoutCommitLeavesNothing) {
  const std::string out = (root_ / "model").string();
  std::string tmp;
  {
    auto staged = StagedDirectory::Create(out);
    ASSERT_TRUE(staged.ok());
    tmp = staged->path();
    ASSERT_TRUE(WriteFileAtomically(tmp + "/a.txt", "A").ok());
  }
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_FALSE(fs::exists(out));
}

// An interrupted job keeps its temporary folder; the next Create with
// keep_contents resumes from it, a plain Create starts empty.
TEST_F(StagedDirectoryTest, KeptForResumeThenReused) {
  const std::string out = (root_ / "stage").string();
  const std::string tmp = (root_ / ".stage.partial").string();
  {
    auto staged = StagedDirectory::Create(out, {.temp_path = tmp});
    ASSERT_TRUE(staged.ok());
    ASSERT_TRUE(WriteFileAtomically(tmp + "/checkpoint.bin", "state").ok());
    staged->Keep();
  }
  EXPECT_EQ(*ReadFileToString(tmp + "/checkpoint.bin"), "state");
  EXPECT_FALSE(fs::exists(out));
  {
    auto staged = StagedDirectory::Create(out, {.temp_path = tmp, .keep_contents = true});
    ASSERT_TRUE(staged.ok());
    EXPECT_EQ(*ReadFileToString(tmp + "/checkpoint.bin"), "state");
  }
  EXPECT_FALSE(fs::exists(tmp));  // not kept this time
  ASSERT_TRUE(fs::create_directories(tmp));
  ASSERT_TRUE(WriteFileAtomically(tmp + "/stale.bin", "x").ok());
  auto fresh = StagedDirectory::Create(out, {.temp_path = tmp});
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fs::is_empty(tmp));
}

TEST_F(StagedDirectoryTest, ReplacesOrKeepsExisting) {
  const std::string out = (root_ / "ckpt").string();
  fs::create_directories(out);
  ASSERT_TRUE(WriteFileAtomically(out + "/old.txt", "old").ok());
  {
    StagedDirectory::Options keep;
    keep.replace_existing = false;
    auto staged = StagedDirectory::Create(out, keep);
    ASSERT_TRUE(staged.ok());
    EXPECT_FALSE(staged->Commit().ok());  // not empty: left alone
    EXPECT_TRUE(fs::exists(out + "/old.txt"));
  }
  StagedDirectory::Options named;
  named.temp_path = (root_ / ".ckpt.tmp").string();
  auto staged = StagedDirectory::Create(out, named);
  ASSERT_TRUE(staged.ok());
  EXPECT_EQ(staged->path(), named.temp_path);
  ASSERT_TRUE(WriteFileAtomically(staged->path() + "/new.txt", "new").ok());
  ASSERT_TRUE(staged->Commit().ok());
  EXPECT_FALSE(fs::exists(out + "/old.txt"));
  EXPECT_TRUE(fs::exists(out + "/new.txt"));
}

}  // namespace
}  // namespace retort
