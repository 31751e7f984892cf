// Runs quantized-dot tests under every integer-dot path this CPU has.
#ifndef RETORT_TESTS_KERNELS_QUANT_TEST_UTIL_H_
#define RETORT_TESTS_KERNELS_QUANT_TEST_UTIL_H_

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/quant_matmul.h"

namespace retort::testing {

// The integer-dot paths this CPU can run (AVX2 always).
inline std::vector<cpu::QuantDotPath> SupportedPaths() {
  using cpu::QuantDotPath;
  std::vector<QuantDotPath> paths = {QuantDotPath::kAvx2};
  if (cpu::QuantDotPathSupported(QuantDotPath::kAvx512Vnni))
    paths.push_back(QuantDotPath::kAvx512Vnni);
  return paths;
}

// Runs fn() once under each supported path (restoring the active one after),
// with the path's name in any failure message.
template <typename Fn>
void ForEachPath(Fn fn) {
  const cpu::QuantDotPath before = cpu::ActiveQuantDotPath();
  for (cpu::QuantDotPath path : SupportedPaths()) {
    ASSERT_TRUE(cpu::SetQuantDotPath(path));
    SCOPED_TRACE(std::string("path ") + cpu::QuantDotPathName(path));
    fn();
    if (::testing::Test::HasFatalFailure()) break;
  }
  cpu::SetQuantDotPath(before);
}

}  // namespace retort::testing

#endif  // RETORT_TESTS_KERNELS_QUANT_TEST_UTIL_H_
