// retort init OUT --family F --size S [--tokenizer bytes|PATH] [--force]

#include "cli/cli_util.h"
#include "cli/commands.h"

namespace retort::cli {

int RunInit(const Args& args, const CommandIo& io) {
  CommandSpec spec{.name = "init",
                   .usage = "OUT --family FAMILY --size SIZE [--force] [options]",
                   .summary =
                       "Write a randomly initialised model (config.json, model.safetensors, "
                       "tokenizer) as a Hugging Face directory."};
  return RunJobCommand(io, spec, *pipeline::NewInitJob(), args);
}

}  // namespace retort::cli
