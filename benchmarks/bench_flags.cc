#include "benchmarks/bench_flags.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace retort {

BenchArgs::BenchArgs(std::string program) : program_(std::move(program)), options_("flags") {}

void BenchArgs::AddThreads(int* threads) {
  threads_ = threads;
  options_.add_options()("threads", po::value(threads)->default_value(*threads),
                         "threads for retort's pool (and OpenBLAS)");
}

void BenchArgs::AddSmoke(bool* smoke) {
  options_.add_options()("smoke", po::bool_switch(smoke),
                         "tiny sizes: checks the program runs (not a measurement)");
}

void BenchArgs::AddOut(std::string* out) {
  options_.add_options()("out", po::value(out), "also write the JSON to this file");
}

void BenchArgs::Parse(int* argc, char** argv, UnknownFlags unknown) {
  namespace style = po::command_line_style;
  options_.add_options()("help", "print the flags and exit");
  const bool keep = unknown == UnknownFlags::kKeepForGoogleBenchmark;
  try {
    po::command_line_parser parser(*argc, argv);
    parser.options(options_).style(style::unix_style & ~style::allow_guessing);
    // No program takes positional words. po drops them silently unless given
    // a positional description: the empty one makes a stray word an error.
    const po::positional_options_description none;
    if (keep) {
      parser.allow_unregistered();
    } else {
      parser.positional(none);
    }
    const po::parsed_options parsed = parser.run();
    po::store(parsed, vm_);
    if (vm_.count("help")) {
      std::cout << "usage: " << program_ << " [flags]"
                << (keep ? " [Google Benchmark flags: --benchmark_...]" : "") << "\n\n"
                << options_ << "\n";
      std::exit(0);
    }
    po::notify(vm_);
    if (keep) {
      // The undeclared tokens, in order, as the very argv pointers (Google
      // Benchmark may keep them).
      int out = 1, next = 1;
      for (const std::string& token :
           po::collect_unrecognized(parsed.options, po::include_positional)) {
        while (next < *argc && token != argv[next]) ++next;
        if (next < *argc) argv[out++] = argv[next++];
      }
      *argc = out;
    }
  } catch (const po::error& e) {
    Fail(e.what());
  }
  if (threads_ != nullptr && (*threads_ < 1 || *threads_ > 4096)) {
    Fail("--threads " + std::to_string(*threads_) + ": expected a thread count in 1..4096");
  }
}

void BenchArgs::Fail(const std::string& message) const {
  std::cerr << program_ << ": " << message << "\n";
  std::exit(2);
}

int64_t BenchArgs::PositiveOr(const std::string& name, int64_t value, int64_t fallback) const {
  if (!Given(name)) value = fallback;
  if (value < 1)
    Fail("bad --" + name + "=" + std::to_string(value) + ": expected a positive integer");
  return value;
}

std::vector<int64_t> BenchArgs::IntList(const std::string& flag, const std::string& text,
                                        int64_t min, int64_t max) const {
  std::vector<int64_t> values;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    const std::string part = text.substr(pos, comma == std::string::npos ? comma : comma - pos);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
      Fail("bad --" + flag + " element \"" + part + "\": expected an integer in " +
           std::to_string(min) + ".." + std::to_string(max));
    }
    values.push_back(v);
    if (comma == std::string::npos) return values;
    pos = comma + 1;
  }
}

BenchFlags ParseBenchFlags(const std::string& program, int* argc, char** argv) {
  BenchFlags flags;
  BenchArgs args(program);
  args.AddThreads(&flags.threads);
  args.AddSmoke(&flags.smoke);
  args.Parse(argc, argv, UnknownFlags::kKeepForGoogleBenchmark);
  return flags;
}

}  // namespace retort
