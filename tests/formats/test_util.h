// Helpers shared by the formats tests: scratch folders and raw file bytes.
#ifndef RETORT_TESTS_FORMATS_TEST_UTIL_H_
#define RETORT_TESTS_FORMATS_TEST_UTIL_H_

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace retort::testing_util {

// A fresh empty folder per test, removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::path(::testing::TempDir()) /
            ("retort_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string path() const { return path_.string(); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  // Names of the entries in the folder, sorted.
  std::vector<std::string> List() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path_))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string LittleEndian64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A safetensors image: length prefix, header as given, then `data`.
inline std::string RawSafetensors(const std::string& header, const std::string& data) {
  return LittleEndian64(header.size()) + header + data;
}

inline std::string SourceDir() {
  const char* d = std::getenv("RETORT_SOURCE_DIR");
  return d ? d : ".";
}

inline std::string Fixture(const std::string& name) {
  return SourceDir() + "/tests/reference/safetensors/" + name;
}

}  // namespace retort::testing_util

#endif  // RETORT_TESTS_FORMATS_TEST_UTIL_H_
