// Facts about the running process that commands and benchmarks report.
#ifndef RETORT_CORE_PROCESS_H_
#define RETORT_CORE_PROCESS_H_

#include <chrono>
#include <cstddef>

namespace retort {

// Peak resident set size of this process in bytes (VmHWM of
// /proc/self/status), 0 where that is not available.
size_t PeakRssBytes();

// Seconds from `start` to now on the steady clock (progress lines, timings).
inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace retort

#endif  // RETORT_CORE_PROCESS_H_
