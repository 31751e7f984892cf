// Reading committed reference fixtures in tests (any module): whole files,
// and zstd-compressed ones. Failures are test failures (ADD_FAILURE/EXPECT)
// naming the file, and return an empty string.
#ifndef RETORT_TESTS_FIXTURE_UTIL_H_
#define RETORT_TESTS_FIXTURE_UTIL_H_

#include <zstd.h>

#include <string>

#include "absl/status/statusor.h"
#include "core/file.h"
#include "gtest/gtest.h"

namespace retort::testing_util {

inline std::string ReadOrDie(const std::string& path) {
  absl::StatusOr<std::string> s = ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

// The content of one zstd frame that records its size; `what` names it in failures.
inline std::string Unzstd(const std::string& compressed, const std::string& what = "fixture") {
  const unsigned long long size = ZSTD_getFrameContentSize(compressed.data(), compressed.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
    ADD_FAILURE() << what << ": not a zstd frame with a content size";
    return "";
  }
  std::string out(size, '\0');
  const size_t n = ZSTD_decompress(out.data(), out.size(), compressed.data(), compressed.size());
  if (ZSTD_isError(n) || n != size) {
    ADD_FAILURE() << what << ": " << (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame");
    return "";
  }
  return out;
}

}  // namespace retort::testing_util

#endif  // RETORT_TESTS_FIXTURE_UTIL_H_
