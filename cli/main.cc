// retort: distill, compress and ship reasoning models.
#include <cstring>
#include <iostream>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "pipeline/runner.h"

namespace {

struct Entry {
  const char* name;
  const char* summary;
  int (*run)(const retort::cli::Args&);
};

constexpr Entry kCommands[] = {
    {"init", "write a randomly initialised model of a given family and size (HF directory)",
     retort::cli::RunInit},
    {"inspect", "show a model's architecture, parameter count and tensors",
     retort::cli::RunInspect},
    {"tokenize", "turn text or a chat into token ids", retort::cli::RunTokenize},
    {"generate", "generate text from a prompt or a chat", retort::cli::RunGenerate},
    {"eval", "perplexity of a model on a text, or dump its logits", retort::cli::RunEval},
    {"convert", "HF directory <-> GGUF file (llama.cpp layouts and quantization presets)",
     retort::cli::RunConvert},
    {"serve", "serve a model over an OpenAI-compatible HTTP API", retort::cli::RunServe},
    {"distill", "train a student on traces, chats or text (SFT and logit distillation)",
     retort::cli::RunDistill},
    {"traces", "import, export and summarise trace files (JSONL and token shards)",
     retort::cli::RunTraces},
    {"quantize",
     "quantize a model: RTN/GPTQ/AWQ int4/int8/fp8 (compressed-tensors) or GGUF k-quants",
     retort::cli::RunQuantize},
    {"calibrate", "compute an importance matrix (llama.cpp imatrix) from calibration text",
     retort::cli::RunCalibrate},
    {"prune",
     "prune a model: magnitude/Wanda/SparseGPT sparsity and 2:4, or structured to a "
     "smaller dense model",
     retort::cli::RunPrune},
    {"run",
     "run a recipe (generate, distill, prune, quantize, convert, eval) with per-stage "
     "resume and provenance",
     retort::cli::RunRun},
    {"report", "write one self-contained HTML page about a `retort run` directory",
     retort::cli::RunReport},
};

void PrintUsage(std::ostream& out) {
  out << "usage: retort COMMAND [options]   (retort COMMAND --help for details; --version)\n\n"
         "commands:\n";
  for (const Entry& e : kCommands) {
    out << "  " << e.name << std::string(12 - std::strlen(e.name), ' ') << e.summary << "\n";
  }
}

// Runs a command. A file may declare sizes that pass every plausibility
// bound and still not fit this machine; the allocation then throws, and the
// user gets one line and a failure exit instead of an abort. Outputs are
// staged under temporary names, so the unwinding leaves none behind.
int RunCommand(const char* name, int (*run)(const retort::cli::Args&),
               const retort::cli::Args& args) {
  try {
    return run(args);
  } catch (const std::bad_alloc&) {
    std::cerr << "retort " << name << ": error: out of memory while running " << name << "\n";
  } catch (const std::length_error& e) {
    // std::vector and std::string refuse sizes beyond max_size() this way.
    std::cerr << "retort " << name << ": error: out of memory while running " << name
              << " (a size beyond what can be allocated: " << e.what() << ")\n";
  }
  return retort::cli::kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(std::cerr);
    return retort::cli::kExitUsage;
  }
  std::string name = argv[1];
  if (name == "--version") {
    std::cout << "retort " << retort::pipeline::RetortVersion() << "\n";
    return retort::cli::kExitOk;
  }
  if (name == "--help" || name == "-h" || name == "help") {
    PrintUsage(std::cout);
    return retort::cli::kExitOk;
  }
  for (const Entry& e : kCommands) {
    if (name == e.name) return RunCommand(e.name, e.run, retort::cli::Args(argv + 2, argv + argc));
  }
  // Not listed: the ranks of a multi-rank recipe stage (`retort run`).
  if (name == "stage-job")
    return RunCommand("stage-job", retort::cli::RunStageJobCommand,
                      retort::cli::Args(argv + 2, argv + argc));
  std::cerr << "retort: unknown command \"" << name << "\"\n";
  PrintUsage(std::cerr);
  return retort::cli::kExitUsage;
}
