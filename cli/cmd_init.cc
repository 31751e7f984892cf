// retort init OUT_DIR --family F --size S [--tokenizer bytes|PATH]

#include "cli/cli_util.h"
#include "cli/commands.h"

namespace retort::cli {

int RunInit(const Args& args, const CommandIo& io) {
  CommandSpec spec{"init", "OUT_DIR --family FAMILY --size SIZE [options]",
                   "Write a randomly initialised model (config.json, model.safetensors, tokenizer) "
                   "as a Hugging Face directory."};
  return RunJobCommand(io, spec, *pipeline::NewInitJob(), args);
}

}  // namespace retort::cli
