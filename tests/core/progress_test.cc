#include "core/progress.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace retort {
namespace {

// What a StreamProgress wrote, read back from a memory stream.
class MemoryStream {
 public:
  MemoryStream() : file_(open_memstream(&buf_, &size_)) {}
  ~MemoryStream() {
    if (file_) std::fclose(file_);
    std::free(buf_);
  }
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    return std::string(buf_, size_);
  }

 private:
  char* buf_ = nullptr;
  size_t size_ = 0;
  std::FILE* file_;
};

TEST(StreamProgress, LinesOnlyWhenNotRedrawing) {
  MemoryStream m;
  {
    StreamProgress p(m.file(), /*redraw=*/false);
    p.Status("step 1/2");
    p.Status("step 2/2");
    p.Line("eval at step 2: loss 1.0");
    p.EndStatus();
  }
  EXPECT_EQ(m.text(), "step 1/2\nstep 2/2\neval at step 2: loss 1.0\n");
}

TEST(StreamProgress, RedrawsStatusAndStartsLinesFresh) {
  MemoryStream m;
  {
    StreamProgress p(m.file(), /*redraw=*/true);
    p.Status("step 1/2");
    p.Status("step 2/2");
    p.Line("saved");
    p.Status("step 3/3");
  }  // the destructor ends the open status
  EXPECT_EQ(m.text(), "\rstep 1/2   \rstep 2/2   \nsaved\n\rstep 3/3   \n");
}

TEST(TeeProgress, ReachesEverySink) {
  RecordingProgress a, b;
  TeeProgress tee({&a, &b});
  tee.Line("x");
  tee.Status("y");
  EXPECT_EQ(a.lines(), std::vector<std::string>{"x"});
  EXPECT_EQ(b.statuses(), std::vector<std::string>{"y"});
}

TEST(Human, CountsBytesDurations) {
  EXPECT_EQ(HumanCount(134.5e6), "134.50M");
  EXPECT_EQ(HumanCount(999), "999");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(3.0 * (1 << 30)), "3.00 GiB");
  EXPECT_EQ(HumanDuration(65), "01:05");
  EXPECT_EQ(HumanDuration(3725), "1:02:05");
  EXPECT_EQ(HumanDuration(-1), "--:--");
}

}  // namespace
}  // namespace retort
