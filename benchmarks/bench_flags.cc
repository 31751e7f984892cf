#include "benchmarks/bench_flags.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace retort {

BenchFlags ParseBenchFlags(int* argc, char** argv, const std::vector<std::string>& extra_names) {
  BenchFlags flags;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string arg = argv[i];
    bool ours = false;
    if (arg.rfind("--threads=", 0) == 0) {
      char* end = nullptr;
      long n = std::strtol(arg.c_str() + 10, &end, 10);
      if (*end != '\0' || n < 1 || n > 4096) {
        std::fprintf(stderr, "bad %s: expected a thread count >= 1\n", arg.c_str());
        std::exit(2);
      }
      flags.threads = static_cast<int>(n);
      ours = true;
    } else if (arg == "--smoke") {
      flags.smoke = true;
      ours = true;
    } else {
      for (const std::string& name : extra_names) {
        std::string prefix = "--" + name + "=";
        if (arg.rfind(prefix, 0) == 0) {
          flags.extra.emplace_back(name, arg.substr(prefix.size()));
          ours = true;
        }
      }
    }
    if (!ours) argv[out++] = argv[i];
  }
  *argc = out;
  return flags;
}

}  // namespace retort
