// Which build of a kernel family runs: the baseline (AVX2, OpenBLAS) or a
// faster AVX-512 one the CPU may lack. Internal header of kernels/cpu.
//
// The default is the fast path where the CPU has it, unless RETORT_NO_AVX512
// is set (to anything but "" or "0"); tests and benchmarks may switch to any
// path the CPU supports. One process-wide atomic per family, read relaxed on
// every call.
#ifndef RETORT_KERNELS_CPU_KERNEL_PATH_H_
#define RETORT_KERNELS_CPU_KERNEL_PATH_H_

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace retort::cpu {

// Whether environment variable `name` is set to something other than "" or "0".
inline bool EnvFlagSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

// Path: the family's enum; kCpuHasFast: whether this CPU can run kFast.
template <typename Path, Path kBaseline, Path kFast, bool (*kCpuHasFast)()>
struct KernelPathChoice {
  static Path Default() {
    return !EnvFlagSet("RETORT_NO_AVX512") && kCpuHasFast() ? kFast : kBaseline;
  }
  static bool Supported(Path path) { return path == kBaseline || kCpuHasFast(); }
  // The path in use: Default() at first use, or the last successful Set.
  static std::atomic<Path>& Active() {
    static std::atomic<Path> path{Default()};
    return path;
  }
  // False (and no change) for a path the CPU does not support.
  static bool Set(Path path) {
    if (!Supported(path)) return false;
    Active().store(path);
    return true;
  }
};

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_KERNEL_PATH_H_
