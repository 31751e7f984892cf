// One flag parser for retort's benchmark programs, on Boost.Program_options
// (as cli/ parses the `retort` commands). Each program declares its flags on
// a BenchArgs, then parses argv once:
//   - plain-JSON programs (engine_bench, train_bench, ...) accept only their
//     own flags: anything else is an error;
//   - Google Benchmark programs keep the flags they do not know in argc/argv
//     for benchmark::Initialize (--benchmark_format=json, --benchmark_out=FILE,
//     --benchmark_filter=REGEX, ...).
// A flag takes its value as "--name value" or "--name=value"; names are never
// abbreviated, so no prefix of a Google Benchmark flag is taken for ours.
// --help prints the flags and exits 0; a bad flag or value prints one line,
// "PROGRAM: MESSAGE", and exits 2.
#ifndef RETORT_BENCHMARKS_BENCH_FLAGS_H_
#define RETORT_BENCHMARKS_BENCH_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "boost/program_options.hpp"

namespace retort {

namespace po = boost::program_options;

// What a program does with a flag it did not declare.
enum class UnknownFlags { kError, kKeepForGoogleBenchmark };

class BenchArgs {
 public:
  // `program` starts every message and the --help text.
  explicit BenchArgs(std::string program);

  // Declares the program's flags: Add()("prompt", po::value(&prompt)->default_value(512), "...").
  po::options_description_easy_init Add() { return options_.add_options(); }

  // --threads N (default 2): threads for retort's pool (and OpenBLAS where the
  // program uses it); a value outside 1..4096 is an error.
  void AddThreads(int* threads);
  // --smoke: tiny sizes, for a quick check that the program runs and writes
  // its JSON (not a measurement).
  void AddSmoke(bool* smoke);
  // --out FILE: where the JSON also goes (bench_output.h EmitBenchJson).
  void AddOut(std::string* out);

  // Parses argv (exits on --help or an error, see above); with
  // kKeepForGoogleBenchmark, argc/argv keep argv[0] and the undeclared flags.
  void Parse(int* argc, char** argv, UnknownFlags unknown);

  // Whether the command line gave `name` (a flag without a default keeps the
  // value its variable had when it is not given).
  bool Given(const std::string& name) const {
    return vm_.count(name) > 0 && !vm_[name].defaulted();
  }

  // Prints "PROGRAM: message" and exits 2: for values the types accept but
  // the program does not (a zero size, an empty list).
  [[noreturn]] void Fail(const std::string& message) const;

  // The value of a size flag that must be positive: `fallback` when the
  // command line did not give it; Fail()s ("bad --NAME=V: expected a positive
  // integer") for a value below 1.
  int64_t PositiveOr(const std::string& name, int64_t value, int64_t fallback) const;

  // `text` as comma-separated integers each in [min, max] ("1,8,32"); Fail()s
  // naming `flag` otherwise.
  std::vector<int64_t> IntList(const std::string& flag, const std::string& text, int64_t min,
                               int64_t max) const;

 private:
  std::string program_;
  po::options_description options_;
  po::variables_map vm_;
  int* threads_ = nullptr;
};

// The flags every Google Benchmark program shares.
struct BenchFlags {
  int threads = 2;
  bool smoke = false;
};

// --threads and --smoke for a Google Benchmark program without flags of its
// own; the rest of argv stays for benchmark::Initialize.
BenchFlags ParseBenchFlags(const std::string& program, int* argc, char** argv);

}  // namespace retort

#endif  // RETORT_BENCHMARKS_BENCH_FLAGS_H_
