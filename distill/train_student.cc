#include "distill/train_student.h"

#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/process.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "distill/data.h"
#include "distill/trainer.h"
#include "kernels/collective.h"
#include "model/model_files.h"
#include "model/train_model.h"

namespace retort {
namespace {

std::string MB(size_t bytes) { return absl::StrFormat("%.1f MiB", bytes / 1048576.0); }

absl::StatusOr<std::unique_ptr<TrainModel>> LoadTrainModel(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> engine, LoadEngine(path));
  return TrainModel::FromTransformer(*engine);
}

}  // namespace

absl::Status TrainStudent(const TrainStudentOptions& a, ProgressSink& sink) {
  ASSIGN_OR_RETURN(std::unique_ptr<Collective> collective, NewDefaultCollective());
  const bool rank0 = collective->rank() == 0;
  const bool progress = !a.quiet && rank0;

  // The student and its tokenizer.
  ASSIGN_OR_RETURN(std::unique_ptr<TrainModel> student, LoadTrainModel(a.student));
  student->SetActivationCheckpointing(a.gradient_checkpointing);
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
    teacher->SetActivationCheckpointing(true);  // forward only: nothing to keep
    teacher->ReleaseGradients();
  }

  // Data.
  DatasetOptions dopt;
  dopt.eval_fraction = a.eval_fraction;
  dopt.student_vocab = student->config().vocab_size;
  dopt.chat.train_all_assistant_turns = a.all_turns;
  dopt.chat.answers_only = a.answers_only;
  dopt.text.chunk_tokens = a.chunk_tokens;
  dopt.progress_every = progress ? 10000 : 0;
  dopt.sink = &sink;
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
  t.sink = &sink;
  ASSIGN_OR_RETURN(t.extra_files, TokenizerFiles(a.student));
  t.run_description = a.command_line;

  Trainer trainer(student.get(), teacher.get(), train.get(), eval.get(), collective.get(), t);
  if (progress) {
    DataSummary summary = data.summary();
    summary.Merge(train->packing_summary());
    const ModelConfig& c = student->config();
    std::ostringstream text;
    text << "student: " << a.student << " (" << HumanCount(student->num_parameters())
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
         << ", activations " << MB(student->ActivationBytes(a.rows * a.seq_len))
         << (a.gradient_checkpointing ? " (gradient checkpointing)"
                                      : " (--gradient-checkpointing: less)")
         << (teacher
                 ? absl::StrCat("; teacher weights ", MB(teacher->num_parameters() * 4ull),
                                ", activations ", MB(teacher->ActivationBytes(a.rows * a.seq_len)))
                 : std::string());
    sink.Line(text.str());
  }
  InstallTrainerSignalHandlers();
  ASSIGN_OR_RETURN(TrainerSummary s, trainer.Run());
  if (progress) {
    sink.Line(absl::StrFormat(
        "%s after %lld steps: loss %.4f (first step %.4f)%s; %lld tokens in %.1f s (%.0f tok/s); "
        "peak RSS %s; model in %s",
        s.interrupted ? "interrupted" : "done", static_cast<long long>(s.steps), s.last_loss,
        s.first_loss,
        s.eval_loss >= 0 ? absl::StrFormat(", eval loss %.4f", s.eval_loss) : std::string(),
        static_cast<long long>(s.tokens), s.seconds, s.seconds > 0 ? s.tokens / s.seconds : 0.0,
        MB(PeakRssBytes()), s.final_dir));
  }
  if (s.interrupted) return absl::CancelledError("interrupted; continue with --resume");
  return absl::OkStatus();
}

}  // namespace retort
