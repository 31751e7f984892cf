#include "distill/train_student.h"

#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/process.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "distill/data.h"
#include "distill/on_policy.h"
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

// Logit distillation compares the two models id by id: the teacher's
// vocabulary must be the student's, or the student's plus padding rows
// (Qwen2.5: 152,064 vs 151,936), with the same token at every shared id.
absl::Status CheckTeacherVocabulary(const TrainStudentOptions& a, const Tokenizer& student_tok,
                                    int64_t student_vocab, int64_t teacher_vocab,
                                    ProgressSink& sink, bool progress) {
  if (teacher_vocab == student_vocab) return absl::OkStatus();
  if (teacher_vocab < student_vocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--teacher ", a.teacher, " has a vocabulary of ", teacher_vocab, " tokens, the student ",
        student_vocab, ": logit distillation needs the student's vocabulary in the teacher's"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> teacher_tok, LoadTokenizer(a.teacher));
  const int32_t shared = std::min(student_tok.vocab_size(), teacher_tok->vocab_size());
  // Teacher tokens past the student's rows are real tokens, not padding.
  if (teacher_tok->vocab_size() > student_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("--teacher ", a.teacher, "'s tokenizer has ", teacher_tok->vocab_size(),
                     " tokens, more than the student's vocabulary of ", student_vocab,
                     ": logit distillation needs the same tokenizer"));
  }
  for (int32_t id = 0; id < shared; ++id) {
    if (student_tok.TokenText(id) != teacher_tok->TokenText(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--teacher ", a.teacher, "'s tokenizer differs from the student's at id ",
                       id, ": logit distillation needs the same tokenizer"));
    }
  }
  if (progress) {
    sink.Line(absl::StrCat("teacher vocabulary ", teacher_vocab, " = the student's ", student_vocab,
                           " + ", teacher_vocab - student_vocab,
                           " padding rows (same tokenizer): compared over the student's ids"));
  }
  return absl::OkStatus();
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
    RETURN_IF_ERROR(CheckTeacherVocabulary(a, *tokenizer, student->config().vocab_size,
                                           teacher->config().vocab_size, sink, progress));
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
  if (a.on_policy && teacher == nullptr && a.teacher_endpoint.base_url.empty()) {
    return absl::InvalidArgumentError(
        "--on-policy needs --teacher MODEL or --teacher-endpoint URL: the teacher scores the "
        "student's samples");
  }
  if (!a.teacher_endpoint.base_url.empty() && (!a.on_policy || teacher != nullptr)) {
    return absl::InvalidArgumentError(
        !a.on_policy ? "--teacher-endpoint scores on-policy samples: add --on-policy (offline "
                       "distillation from an endpoint: `retort generate --endpoint` writes "
                       "trace shards)"
                     : "give --teacher or --teacher-endpoint, not both");
  }
  if (a.data.empty() && !(a.on_policy && a.sampling.lambda >= 1)) {
    return absl::InvalidArgumentError(
        a.on_policy ? "--lambda below 1 takes off-policy batches from --data: give --data"
                    : "no training data: give --data FILE...");
  }
  ASSIGN_OR_RETURN(Dataset data, a.data.empty()
                                     ? absl::StatusOr<Dataset>(Dataset())
                                     : Dataset::Load(a.data, *tokenizer, tmpl.get(), dopt));
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
  std::unique_ptr<DataLoader> train;
  if (!a.data.empty()) {
    ASSIGN_OR_RETURN(train, DataLoader::Create(&data.train(), popt));
  }
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
  if (a.kd_weight > 0 && teacher == nullptr && (train == nullptr || train->top_k() == 0)) {
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

  std::unique_ptr<OnPolicySampler> sampler;
  std::unique_ptr<EndpointClient> endpoint;
  if (a.on_policy) {
    OnPolicyOptions o = a.sampling;
    ASSIGN_OR_RETURN(o.think, ParseThinkPrefix(a.think));
    o.seed = a.seed;
    ASSIGN_OR_RETURN(sampler,
                     OnPolicySampler::Create(o, *tokenizer, tmpl.get(),
                                             student->config().max_position_embeddings,
                                             collective->rank(), collective->world_size()));
    t.on_policy_loss.ce_weight = 0;
    t.on_policy_loss.kd_weight = 1;
    ASSIGN_OR_RETURN(t.on_policy_loss.divergence, ParseKdDivergence(a.on_policy_loss));
    if (t.on_policy_loss.divergence == KdDivergence::kForwardKl) {
      return absl::InvalidArgumentError(
          "--on-policy-loss: expected sampled_reverse_kl, reverse_kl or jsd (forward KL is "
          "what off-policy distillation on traces minimises)");
    }
    t.on_policy_loss.jsd_beta = a.jsd_beta;
    if (!a.teacher_endpoint.base_url.empty()) {
      ASSIGN_OR_RETURN(endpoint, ConnectEndpoint(a.teacher_endpoint));
      const bool sampled = t.on_policy_loss.divergence == KdDivergence::kSampledReverseKl;
      if (!sampled && a.teacher_top_k < 1) {
        return absl::InvalidArgumentError(absl::StrCat("--teacher-top-k must be >= 1 for ",
                                                       a.on_policy_loss, " from an endpoint"));
      }
      sampler->set_teacher_endpoint(endpoint.get(), sampled ? 0 : a.teacher_top_k,
                                    student->config().vocab_size);
    }
  }

  Trainer trainer(student.get(), teacher.get(), train.get(), eval.get(), collective.get(), t);
  if (sampler != nullptr) trainer.set_on_policy(sampler.get());
  if (progress) {
    DataSummary summary = data.summary();
    if (train) summary.Merge(train->packing_summary());
    const ModelConfig& c = student->config();
    std::ostringstream text;
    text << "student: " << a.student << " (" << HumanCount(student->num_parameters())
         << " parameters, " << c.num_layers << " layers, vocab " << c.vocab_size << ")\n"
         << (teacher ? absl::StrCat("teacher: ", a.teacher, " (online, ",
                                    HumanCount(teacher->num_parameters()), " parameters)\n")
                     : std::string())
         << (endpoint ? absl::StrCat("teacher: ", a.teacher_endpoint.base_url,
                                     " (endpoint, prompt_logprobs; ",
                                     a.teacher_endpoint.max_in_flight, " requests in flight)\n")
                      : std::string())
         << (train ? summary.ToString() + "\n" : std::string())
         << (sampler ? absl::StrFormat(
                           "on-policy: %d prompts from %s, %d per micro-batch, loss %s, lambda "
                           "%g, sampling at temperature %g top-p %g, up to %d new tokens%s\n",
                           sampler->num_prompts(), a.sampling.prompts, a.sampling.prompts_per_batch,
                           a.on_policy_loss, a.sampling.lambda, a.sampling.temperature,
                           a.sampling.top_p, a.sampling.max_new_tokens,
                           a.sampling.verifier.empty() ? "" : ", verifier " + a.sampling.verifier)
                     : std::string())
         << "ranks: " << collective->Describe() << ", threads per rank: " << NumThreads() << "\n"
         << "steps: " << trainer.TotalSteps() << " of " << a.grad_accum << " x "
         << collective->world_size() << " micro-batches of "
         << (!sampler ? absl::StrCat(a.rows, " x ", a.seq_len, " tokens")
             : train
                 ? absl::StrCat(a.sampling.prompts_per_batch, " student samples (on-policy) or ",
                                a.rows, " x ", a.seq_len, " tokens")
                 : absl::StrCat(a.sampling.prompts_per_batch, " student samples"))
         << "\n"
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
