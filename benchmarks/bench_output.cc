#include "benchmarks/bench_output.h"

#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "benchmark/benchmark.h"

namespace retort {
namespace {

// The value of the first "key\t: value" line of /proc/cpuinfo, "" if none.
std::string CpuInfoField(const std::string& key) {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos || line.compare(0, key.size(), key) != 0) continue;
    if (line.find_first_not_of(" \t", key.size()) != colon) continue;
    const size_t start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "";
}

}  // namespace

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string CpuModelName() { return CpuInfoField("model name"); }

bool CpuHasFlag(const std::string& flag) {
  std::istringstream flags(CpuInfoField("flags"));
  for (std::string f; flags >> f;) {
    if (f == flag) return true;
  }
  return false;
}

void EmitBenchText(const std::string& text, const std::string& path) {
  std::cout << text;
  if (!path.empty()) std::ofstream(path) << text;
}

int RunGoogleBenchmarks(int* argc, char** argv) {
  benchmark::Initialize(argc, argv);
  if (benchmark::ReportUnrecognizedArguments(*argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

void EmitBenchJson(const nlohmann::json& out, const std::string& path) {
  EmitBenchText(out.dump(2) + "\n", path);
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace retort
