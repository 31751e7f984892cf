// retort prune MODEL OUT --method magnitude|wanda|sparsegpt
//                        (--sparsity S | --layer-sparsity SCHEDULE | --pattern N:M)
//                        [--calib FILE ...] [options]
// retort prune MODEL OUT --structured (--target-params N | --num-layers L --num-heads H
//                        --num-kv-heads K --intermediate-size I --hidden-size D) --calib FILE ...
//
// A typed job: pipeline/job_prune.cc over prune/prune_job.h.

#include "cli/cli_util.h"
#include "cli/commands.h"

namespace retort::cli {
namespace {
constexpr char kSummary[] =
    "Prune a model (an HF directory, or a GGUF whose quantized weights are dequantized to f32). "
    "Unstructured or N:M (--method magnitude|wanda|sparsegpt with --sparsity 0.5 "
    "or --pattern 2:4|4:8): zeros in the decoder layers' linears, layer by layer on calibration "
    "data (wanda, sparsegpt), written as a dense HF directory. Structured (--structured with "
    "--target-params or target dimensions): removes layers, attention heads (whole KV groups "
    "where GQA needs it), MLP channels and hidden channels by activation importance, giving a "
    "smaller dense HF model.\n\n"
    "Recovering quality after structured pruning (Minitron's recipe: distill from the unpruned "
    "model):\n"
    "  retort prune BASE PRUNED --structured --target-params 50% --calib data.txt\n"
    "  retort distill PRUNED RECOVERED --teacher BASE --kd-weight 1 --ce-weight 0 --data "
    "data.txt --max-steps 500\n"
    "(the student is written to RECOVERED/final; the teacher must share the tokenizer, which a "
    "pruned model does).";

}  // namespace

int RunPrune(const Args& args, const CommandIo& io) {
  CommandSpec spec{.name = "prune",
                   .usage =
                       "MODEL OUT (--method M --sparsity S | --pattern N:M | --structured TARGET) "
                       "[--calib FILE ...] [--force] [options]",
                   .summary = kSummary,
                   .default_model = true,
                   .device = true};
  return RunJobCommand(io, spec, *pipeline::NewPruneJob(), args);
}

}  // namespace retort::cli
