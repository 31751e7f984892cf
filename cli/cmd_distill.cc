// retort distill STUDENT OUT --data FILE... [--resume | --force] [options]
//
// Trains a student (HF directory, GGUF dequantized to f32, or the output of
// `retort init`) on chat/trace JSONL, plain text or trace shards: SFT
// (cross-entropy on completion tokens) and/or logit distillation from an
// online teacher (--teacher) or the teacher top-k stored in trace shards.

#include "cli/cli_util.h"
#include "cli/commands.h"

namespace retort::cli {

int RunDistill(const Args& args, const CommandIo& io) {
  // No default model: a missing STUDENT must not train the bundled teacher.
  CommandSpec spec{.name = "distill",
                   .usage = "STUDENT OUT --data FILE... [--resume | --force] [options]",
                   .summary =
                       "Train a student on traces, chats or text (SFT and logit distillation) into "
                       "OUT (or -o OUT): checkpoints, final/, metrics.jsonl. An existing OUT is "
                       "continued with --resume, started over with --force, refused otherwise.",
                   .device = true};
  return RunJobCommand(io, spec, *pipeline::NewDistillJob(), args);
}

}  // namespace retort::cli
