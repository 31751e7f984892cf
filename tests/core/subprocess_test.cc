#include "core/subprocess.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace retort {
namespace {

SubprocessOptions Timeout(double seconds) {
  SubprocessOptions o;
  o.timeout_seconds = seconds;
  return o;
}

TEST(SubprocessTest, ExitCodeAndOutput) {
  auto r = RunSubprocess({"/bin/sh", "-c", "cat; echo err >&2; exit 3"}, "in\n", Timeout(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->exited);
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->output, "in\nerr\n");
}

TEST(SubprocessTest, EmptyInputIsEndOfFile) {
  auto r = RunSubprocess({"cat"}, "", Timeout(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output, "");
}

TEST(SubprocessTest, OutputIsCapped) {
  SubprocessOptions o = Timeout(10);
  o.max_output_bytes = 5;
  auto r = RunSubprocess({"/bin/sh", "-c", "echo 0123456789"}, "", o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->output, "01234");
}

TEST(SubprocessTest, Signal) {
  auto r = RunSubprocess({"/bin/sh", "-c", "kill -9 $$"}, "", Timeout(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->signaled);
  EXPECT_EQ(r->signal, 9);
}

TEST(SubprocessTest, TimeoutAndMissingProgram) {
  auto slow = RunSubprocess({"sleep", "5"}, "", Timeout(0.2));
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(slow.status().message(), "'sleep' ran past its timeout of 0.2 s");
  auto missing = RunSubprocess({"/nonexistent/program"}, "", Timeout(1));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace retort
