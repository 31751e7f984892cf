#include "core/staged_directory.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

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

// A PID that no process has: a child that has exited and been reaped.
pid_t DeadPid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

TEST_F(StagedDirectoryTest, TemporariesOfKilledRunsAreCollected) {
  fs::create_directories(root_);
  const pid_t dead = DeadPid();
  const pid_t alive = ::getppid();
  auto touch = [&](const std::string& name, bool folder) {
    if (folder) {
      fs::create_directories(root_ / name / "inside");
    } else {
      ASSERT_TRUE(WriteFileAtomically((root_ / name).string(), "x").ok());
    }
  };
  touch(absl::StrCat("config.json.tmp.", dead), false);
  touch(absl::StrCat(".model.partial-", dead), true);
  touch(absl::StrCat(".model.replaced-", dead), true);
  touch(absl::StrCat("config.json.tmp.", alive), false);  // a live writer's
  touch(absl::StrCat(".other.partial-", alive), true);    // a live writer's
  touch(".stage.partial", true);                          // resumable state: no PID
  touch(absl::StrCat("notes.tmp.", dead, "x"), false);    // not a temporary's name
  touch(absl::StrCat("model.partial-", dead), true);      // not hidden: not ours
  EXPECT_EQ(RemoveStaleTemporaries(root_.string()), 3);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root_)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  std::vector<std::string> expected = {absl::StrCat(".other.partial-", alive), ".stage.partial",
                                       absl::StrCat("config.json.tmp.", alive),
                                       absl::StrCat("model.partial-", dead),
                                       absl::StrCat("notes.tmp.", dead, "x")};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(left, expected);

  // A new staged folder beside them collects them too.
  touch(absl::StrCat(".model.partial-", dead), true);
  auto staged = StagedDirectory::Create((root_ / "model").string());
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_FALSE(fs::exists(root_ / absl::StrCat(".model.partial-", dead)));
}

TEST_F(StagedDirectoryTest, ASecondWriterOfAFolderIsRefused) {
  fs::create_directories(root_ / "out");
  const std::string out = (root_ / "out").string();
  {
    absl::StatusOr<DirectoryLock> first = DirectoryLock::Acquire(out);
    ASSERT_TRUE(first.ok()) << first.status();
    // Another process (flock locks belong to open files, so a child's own
    // open conflicts just as another retort's would).
    const pid_t pid = ::fork();
    if (pid == 0)
      ::_exit(DirectoryLock::Acquire(out).status().code() == absl::StatusCode::kFailedPrecondition
                  ? 0
                  : 1);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    absl::StatusOr<DirectoryLock> second = DirectoryLock::Acquire(out);
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.status().message().find("is in use by another process"), std::string::npos)
        << second.status();
  }
  // Released with its holder.
  EXPECT_TRUE(DirectoryLock::Acquire(out).ok());
  EXPECT_FALSE(DirectoryLock::Acquire((root_ / "missing").string()).ok());
}

}  // namespace
}  // namespace retort
