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
#include "distill/data.h"
#include "distill/trainer.h"
#include "kernels/collective.h"
#include "model/model_files.h"
#include "model/train_model.h"

namespace retort::cli {
namespace {
namespace fs = std::filesystem;

struct DistillArgs {
  std::string student, teacher, output;
  std::vector<std::string> data;
  int64_t seq_len = 512, rows = 4, grad_accum = 1, max_steps = 0;
  double epochs = 1, eval_fraction = 0.05;
  int64_t eval_every = 0, eval_batches = 0, save_every = 0;
  int keep_checkpoints = 2;
  std::string save_dtype = "f32", overlong = "truncate", schedule = "cosine";
  std::string divergence = "forward_kl", topk_tail = "bucket";
  float lr = 3e-4f, min_lr_ratio = 0.1f, weight_decay = 0.0f, beta1 = 0.9f, beta2 = 0.95f,
        adam_eps = 1e-8f, clip = 1.0f;
  int64_t warmup_steps = 0;
  bool decay_all = false;
  float ce_weight = 1, kd_weight = 0, jsd_beta = 0.5f, temperature = 1;
  int64_t chunk_tokens = 0;
  uint64_t seed = 0;
  int threads = 0;
  bool resume = false, quiet = false, all_turns = false, answers_only = false,
       keep_sparsity = false;
};

std::string MB(size_t bytes) { return absl::StrFormat("%.1f MiB", bytes / 1048576.0); }

absl::StatusOr<std::unique_ptr<TrainModel>> LoadTrainModel(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> engine, LoadEngine(path));
  return TrainModel::FromTransformer(*engine);
}

absl::Status Distill(const DistillArgs& a, const std::string& command_line, const CommandIo& io) {
  ASSIGN_OR_RETURN(std::unique_ptr<Collective> collective, NewDefaultCollective());
  const bool rank0 = collective->rank() == 0;
  const bool progress = !a.quiet && rank0;

  // The student and its tokenizer.
  ASSIGN_OR_RETURN(std::unique_ptr<TrainModel> student, LoadTrainModel(a.student));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(a.student));
  std::unique_ptr<ChatTemplate> tmpl;
  if (auto t = LoadChatTemplate(a.student); t.ok()) {
    tmpl = std::make_unique<ChatTemplate>(*std::move(t));
  }
  std::unique_ptr<TrainModel> teacher;
  if (!a.teacher.empty()) {
    ASSIGN_OR_RETURN(teacher, LoadTrainModel(a.teacher));
    if (teacher->config().vocab_size != student->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--teacher ", a.teacher, " has a vocabulary of ", teacher->config().vocab_size,
          " tokens, the student ", student->config().vocab_size,
          ": logit distillation needs the same tokenizer"));
    }
  }

  // Data.
  DatasetOptions dopt;
  dopt.eval_fraction = a.eval_fraction;
  dopt.student_vocab = student->config().vocab_size;
  dopt.chat.train_all_assistant_turns = a.all_turns;
  dopt.chat.answers_only = a.answers_only;
  dopt.text.chunk_tokens = a.chunk_tokens;
  dopt.progress_every = progress ? 10000 : 0;
  dopt.sink = io.progress;
  ASSIGN_OR_RETURN(Dataset data, Dataset::Load(a.data, *tokenizer, tmpl.get(), dopt));
  PackingOptions popt;
  popt.seq_len = a.seq_len;
  popt.rows_per_batch = a.rows;
  if (a.overlong == "split") {
    popt.overlong = OverlongPolicy::kSplit;
  } else if (a.overlong != "truncate") {
    return absl::InvalidArgumentError(
        absl::StrCat("--overlong: expected truncate or split, got \"", a.overlong, "\""));
  }
  if (a.seq_len > student->config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--seq-len ", a.seq_len, " exceeds the student's context (max_position_embeddings ",
        student->config().max_position_embeddings, ")"));
  }
  popt.pad_id = tokenizer->eos_id() >= 0 ? tokenizer->eos_id() : 0;
  popt.seed = a.seed;
  popt.rank = collective->rank();
  popt.world_size = collective->world_size();
  ASSIGN_OR_RETURN(std::unique_ptr<DataLoader> train, DataLoader::Create(&data.train(), popt));
  std::unique_ptr<DataLoader> eval;
  if (!data.eval().empty()) {
    PackingOptions eopt = popt;
    eopt.shuffle = false;
    eopt.repeat = false;
    ASSIGN_OR_RETURN(eval, DataLoader::Create(&data.eval(), eopt));
  }

  TrainerOptions t;
  t.output_dir = a.output;
  t.max_steps = a.max_steps;
  t.epochs = a.epochs;
  t.grad_accum = a.grad_accum;
  t.optimizer.beta1 = a.beta1;
  t.optimizer.beta2 = a.beta2;
  t.optimizer.eps = a.adam_eps;
  t.optimizer.weight_decay = a.weight_decay;
  t.decay_all = a.decay_all;
  t.keep_sparsity = a.keep_sparsity;
  ASSIGN_OR_RETURN(t.schedule.kind, ParseLrSchedule(a.schedule));
  t.schedule.peak_lr = a.lr;
  t.schedule.min_lr = a.lr * a.min_lr_ratio;
  t.schedule.warmup_steps = a.warmup_steps;
  t.clip_grad_norm = a.clip;
  t.loss.ce_weight = a.ce_weight;
  t.loss.kd_weight = a.kd_weight;
  ASSIGN_OR_RETURN(t.loss.divergence, ParseKdDivergence(a.divergence));
  t.loss.jsd_beta = a.jsd_beta;
  t.loss.temperature = a.temperature;
  if (a.topk_tail == "renormalize") {
    t.loss.topk_tail = TopKTail::kRenormalize;
  } else if (a.topk_tail != "bucket") {
    return absl::InvalidArgumentError(
        absl::StrCat("--topk-tail: expected bucket or renormalize, got \"", a.topk_tail, "\""));
  }
  if (a.kd_weight > 0 && teacher == nullptr && train->top_k() == 0) {
    return absl::InvalidArgumentError(
        "--kd-weight > 0 needs a teacher: --teacher MODEL, or trace shards with top-k log-probs "
        "in --data");
  }
  t.save_every = a.save_every;
  t.keep_checkpoints = a.keep_checkpoints;
  t.eval_every = a.eval_every;
  t.eval_batches = a.eval_batches;
  ASSIGN_OR_RETURN(t.save_dtype, ParseWeightDType(a.save_dtype));
  t.resume = a.resume;
  t.progress = progress;
  t.sink = io.progress;
  ASSIGN_OR_RETURN(t.extra_files, TokenizerFiles(a.student));
  t.run_description = command_line;

  Trainer trainer(student.get(), teacher.get(), train.get(), eval.get(), collective.get(), t);
  if (progress) {
    DataSummary summary = data.summary();
    summary.Merge(train->packing_summary());
    const ModelConfig& c = student->config();
    *io.err << "student: " << a.student << " (" << HumanCount(student->num_parameters())
            << " parameters, " << c.num_layers << " layers, vocab " << c.vocab_size << ")\n"
            << (teacher ? absl::StrCat("teacher: ", a.teacher, " (online, ",
                                       HumanCount(teacher->num_parameters()), " parameters)\n")
                        : std::string())
            << summary.ToString() << "\n"
            << "ranks: " << collective->Describe() << ", threads per rank: " << NumThreads() << "\n"
            << "steps: " << trainer.TotalSteps() << " of " << a.grad_accum << " x "
            << collective->world_size() << " micro-batches of " << a.rows << " x " << a.seq_len
            << " tokens\n"
            << "memory: weights+grads+adam " << MB(student->num_parameters() * 16ull)
            << ", activations " << MB(student->ActivationBytes(a.rows * a.seq_len)) << "\n";
  }
  InstallTrainerSignalHandlers();
  ASSIGN_OR_RETURN(TrainerSummary s, trainer.Run());
  if (progress) {
    *io.err << absl::StrFormat(
        "%s after %lld steps: loss %.4f (first step %.4f)%s; %lld tokens in %.1f s (%.0f tok/s); "
        "peak RSS %s; model in %s\n",
        s.interrupted ? "interrupted" : "done", static_cast<long long>(s.steps), s.last_loss,
        s.first_loss,
        s.eval_loss >= 0 ? absl::StrFormat(", eval loss %.4f", s.eval_loss) : std::string(),
        static_cast<long long>(s.tokens), s.seconds, s.seconds > 0 ? s.tokens / s.seconds : 0.0,
        MB(PeakRssBytes()), s.final_dir);
  }
  if (s.interrupted) return absl::CancelledError("interrupted; continue with --resume");
  return absl::OkStatus();
}

}  // namespace

int RunDistill(const Args& args, const CommandIo& io) {
  CommandSpec spec{"distill", "STUDENT --data FILE... --output DIR [options]",
                   "train a student on traces, chats or text (SFT and logit distillation)"};
  spec.default_model = true;
  spec.device = true;
  DistillArgs a;
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
  if (absl::Status s = Distill(a, command_line, io); !s.ok()) {
    if (absl::IsCancelled(s)) return 130;
    return Fail(io, spec.name, s);
  }
  return kExitOk;
}

}  // namespace retort::cli
