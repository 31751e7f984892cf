// retort distill STUDENT --data FILE... --output DIR [options]
//
// Trains a student (HF directory, GGUF dequantized to f32, or the output of
// `retort init`) on chat/trace JSONL, plain text or trace shards: SFT
// (cross-entropy on completion tokens) and/or logit distillation from an
// online teacher (--teacher) or the teacher top-k stored in trace shards.
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/process.h"
#include "core/progress.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "distill/train_student.h"
#include "distill/trainer.h"
#include "kernels/collective.h"

namespace retort::cli {

int RunDistill(const Args& args, const CommandIo& io) {
  CommandSpec spec{"distill", "STUDENT --data FILE... --output DIR [options]",
                   "train a student on traces, chats or text (SFT and logit distillation)"};
  spec.default_model = true;
  spec.device = true;
  TrainStudentOptions a;
  po::options_description opts("options");
  opts.add_options()(
      "student", po::value(&a.student)->required(),
      "student model: HF directory (e.g. from `retort init`) or GGUF (dequantized to f32)")(
      "data", po::value(&a.data)->multitoken()->required(),
      "training files: *.jsonl (chats/traces: OpenAI messages, ShareGPT, open-r1, retort "
      "traces), *.txt (plain text), trace shards (token ids + teacher top-k)")(
      "output,o", po::value(&a.output)->required(),
      "output directory (checkpoints, final/, metrics.jsonl)")(
      "teacher", po::value(&a.teacher), "online teacher for logit distillation (same tokenizer)")(
      "seq-len", po::value(&a.seq_len)->default_value(512), "tokens per packed row")(
      "batch-rows", po::value(&a.rows)->default_value(4), "rows per micro-batch")(
      "grad-accum", po::value(&a.grad_accum)->default_value(1),
      "micro-batches per optimizer step (per rank)")(
      "max-steps", po::value(&a.max_steps)->default_value(0), "optimizer steps (0: --epochs)")(
      "epochs", po::value(&a.epochs)->default_value(1), "passes over the training split")(
      "lr", po::value(&a.lr)->default_value(3e-4f), "peak learning rate")(
      "min-lr-ratio", po::value(&a.min_lr_ratio)->default_value(0.1f),
      "final lr / peak lr (cosine, linear)")(
      "warmup-steps", po::value(&a.warmup_steps)->default_value(0), "linear warmup steps")(
      "schedule", po::value(&a.schedule)->default_value("cosine"), "cosine, linear or constant")(
      "weight-decay", po::value(&a.weight_decay)->default_value(0.0f),
      "AdamW decoupled weight decay")("decay-all", po::bool_switch(&a.decay_all),
                                      "also decay norms, biases and embeddings")(
      "adam-beta1", po::value(&a.beta1)->default_value(0.9f), "AdamW beta1")(
      "adam-beta2", po::value(&a.beta2)->default_value(0.95f), "AdamW beta2")(
      "adam-eps", po::value(&a.adam_eps)->default_value(1e-8f), "AdamW epsilon")(
      "clip-grad-norm", po::value(&a.clip)->default_value(1.0f),
      "global gradient norm clip (0: off)")("ce-weight",
                                            po::value(&a.ce_weight)->default_value(1.0f),
                                            "weight of the cross-entropy loss")(
      "kd-weight", po::value(&a.kd_weight)->default_value(0.0f), "weight of the distillation loss")(
      "divergence", po::value(&a.divergence)->default_value("forward_kl"),
      "forward_kl, reverse_kl or jsd")("jsd-beta", po::value(&a.jsd_beta)->default_value(0.5f),
                                       "teacher weight of the JSD mixture")(
      "temperature", po::value(&a.temperature)->default_value(1.0f), "distillation temperature")(
      "topk-tail", po::value(&a.topk_tail)->default_value("bucket"),
      "offline top-k tail: bucket or renormalize")(
      "overlong", po::value(&a.overlong)->default_value("truncate"),
      "examples longer than --seq-len: truncate or split")(
      "text-chunk-tokens", po::value(&a.chunk_tokens)->default_value(0),
      "plain text: documents of this many tokens (0: paragraphs)")(
      "all-assistant-turns", po::bool_switch(&a.all_turns),
      "train every assistant turn, not only the last")(
      "answers-only", po::bool_switch(&a.answers_only),
      "drop the reasoning (reasoning_content and <think>...</think> blocks) from chat/trace "
      "samples: train the answer alone (the baseline of a traces-vs-answers experiment)")(
      "keep-sparsity", po::bool_switch(&a.keep_sparsity),
      "the zeros of the student's decoder linears stay zero (recovery after unstructured or "
      "2:4 pruning keeps the pattern)")("eval-fraction",
                                        po::value(&a.eval_fraction)->default_value(0.05),
                                        "held-out share of the examples (by id hash)")(
      "eval-every", po::value(&a.eval_every)->default_value(0),
      "steps between held-out evaluations (0: at the end)")(
      "eval-batches", po::value(&a.eval_batches)->default_value(0),
      "micro-batches per evaluation (0: all)")("save-every",
                                               po::value(&a.save_every)->default_value(0),
                                               "steps between checkpoints (0: at the end)")(
      "keep-checkpoints", po::value(&a.keep_checkpoints)->default_value(2),
      "checkpoints kept (oldest removed)")("save-dtype",
                                           po::value(&a.save_dtype)->default_value("f32"),
                                           "dtype of saved weights: f32, bf16, f16")(
      "resume", po::bool_switch(&a.resume), "continue from the newest checkpoint in --output")(
      "seed", po::value(&a.seed)->default_value(0), "data order seed")(
      "threads", po::value(&a.threads)->default_value(0),
      "worker threads per rank (0 = all cores / ranks)")("quiet,q", po::bool_switch(&a.quiet),
                                                         "no progress output");
  po::positional_options_description pos;
  pos.add("student", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, opts, pos, vm)) return *exit;
  if (a.threads > 0) {
    SetNumThreads(a.threads);
  } else if (LaunchedByMpiRunner()) {
    // Ranks share the machine's cores.
    const char* size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const int local = size != nullptr ? std::max(1, std::atoi(size)) : 1;
    SetNumThreads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local));
  }
  std::string command_line = "retort distill";
  for (const std::string& s : args) absl::StrAppend(&command_line, " ", s);
  a.command_line = command_line;
  if (absl::Status s = TrainStudent(a, *io.progress); !s.ok()) {
    if (absl::IsCancelled(s)) return 130;
    return Fail(io, spec.name, s);
  }
  return kExitOk;
}

}  // namespace retort::cli
