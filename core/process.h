// Facts about the running process that commands and benchmarks report.
#ifndef RETORT_CORE_PROCESS_H_
#define RETORT_CORE_PROCESS_H_

#include <cstddef>

namespace retort {

// Peak resident set size of this process in bytes (VmHWM of
// /proc/self/status), 0 where that is not available.
size_t PeakRssBytes();

}  // namespace retort

#endif  // RETORT_CORE_PROCESS_H_
