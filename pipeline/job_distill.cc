// `retort distill` as a JobCommand (stage_job.h) over distill/train_student.h.
#include <cstdlib>
#include <thread>

#include "core/status.h"
#include "core/thread_pool.h"
#include "distill/train_student.h"
#include "kernels/collective.h"
#include "pipeline/stage_fields.h"
#include "pipeline/stage_job.h"

namespace retort::pipeline {
namespace {

class DistillJob : public JobCommand {
 public:
  void AddOptions(po::options_description& opts, bool command_line) override {
    TrainStudentOptions& a = a_;
    opts.add_options()(
        "student", RequiredOnCommandLine(&a.student, command_line),
        "student model: HF directory (e.g. from `retort init`) or GGUF (dequantized to f32)")(
        "data", po::value(&a.data)->multitoken(),
        "training files: *.jsonl (chats/traces: OpenAI messages, ShareGPT, open-r1, retort "
        "traces), *.txt (plain text), trace shards (token ids + teacher top-k); optional only "
        "with --on-policy at --lambda 1");
    out_.AddOptions(opts, command_line, "output directory (checkpoints, final/, metrics.jsonl)");
    opts.add_options()("teacher", po::value(&a.teacher),
                       "online teacher for logit distillation (same tokenizer)")(
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
        "gradient-checkpointing", po::bool_switch(&a.gradient_checkpointing),
        "keep only each layer's input and recompute its activations in the backward pass: "
        "much less memory, about a third more compute per step")(
        "adam-beta1", po::value(&a.beta1)->default_value(0.9f), "AdamW beta1")(
        "adam-beta2", po::value(&a.beta2)->default_value(0.95f), "AdamW beta2")(
        "adam-eps", po::value(&a.adam_eps)->default_value(1e-8f), "AdamW epsilon")(
        "clip-grad-norm", po::value(&a.clip)->default_value(1.0f),
        "global gradient norm clip (0: off)")("ce-weight",
                                              po::value(&a.ce_weight)->default_value(1.0f),
                                              "weight of the cross-entropy loss")(
        "kd-weight", po::value(&a.kd_weight)->default_value(0.0f),
        "weight of the distillation loss")(
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
    po::options_description op("On-policy distillation (the student samples, the teacher scores)");
    op.add_options()("on-policy", po::bool_switch(&a.on_policy),
                     "train on the student's own completions of --prompts, scored by --teacher")(
        "prompts", po::value(&a.sampling.prompts),
        "prompts JSONL ({\"id\", \"prompt\" or \"messages\", optional \"answer\"})")(
        "on-policy-loss", po::value(&a.on_policy_loss)->default_value("sampled_reverse_kl"),
        "sampled_reverse_kl (per-token log p - log q as the cost of each sampled token), "
        "reverse_kl or jsd (--jsd-beta) over the vocabulary")(
        "lambda", po::value(&a.sampling.lambda)->default_value(1.0),
        "probability that a micro-batch is on-policy; the others are off-policy from --data "
        "with --ce-weight/--kd-weight (GKD's lambda)")(
        "prompts-per-batch", po::value(&a.sampling.prompts_per_batch)->default_value(8),
        "student samples per on-policy micro-batch (one per prompt)")(
        "sample-temperature", po::value(&a.sampling.temperature)->default_value(1.0f),
        "the student's sampling temperature (0: greedy)")(
        "sample-top-p", po::value(&a.sampling.top_p)->default_value(1.0f), "nucleus sampling")(
        "max-new-tokens", po::value(&a.sampling.max_new_tokens)->default_value(256),
        "longest student completion")(
        "verifier", po::value(&a.sampling.verifier),
        "check each sample against the prompt's \"answer\" (math, exact, regex:..., "
        "command:...): the metrics get the sampled accuracy (logged, not optimised)")(
        "teacher-endpoint", po::value(&a.teacher_endpoint.base_url),
        "instead of --teacher: an OpenAI-compatible server (vLLM, `retort serve`) that scores "
        "the samples through /v1/completions prompt_logprobs, e.g. http://localhost:8000/v1")(
        "teacher-model-name", po::value(&a.teacher_endpoint.model),
        "the \"model\" of the endpoint's requests (default: the first it serves)")(
        "api-key-env", po::value(&a.teacher_endpoint.api_key_env)->default_value("OPENAI_API_KEY"),
        "environment variable holding the endpoint's API key")(
        "concurrency", po::value(&a.teacher_endpoint.max_in_flight)->default_value(8),
        "endpoint requests in flight")(
        "teacher-top-k", po::value(&a.teacher_top_k)->default_value(20),
        "reverse_kl / jsd from an endpoint: the teacher's top-K per token (the rest is one "
        "tail bucket)")(
        "think-prefix", po::value(&a.think)->default_value("auto"),
        "open the student's assistant turn with \"<think>\\n\": auto (when the template "
        "mentions <think>), on or off (the student writes it)");
    opts.add(op);
  }
  std::vector<std::string> Positionals() const override { return {"student", "output"}; }
  const OutputOption* Output() const override { return &out_; }

  absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                         const po::variables_map& vm) override {
    const proto::Distill& d = stage.distill();
    TrainStudentOptions& a = a_;
    StageFields f(vm);
    f.Text("student", d.student(), &a.student);
    f.List("data", d.data(), &a.data);
    f.Fixed("output", context.dir, &out_.path());
    f.Text("teacher", d.teacher(), &a.teacher);
    f.Num("max-steps", d.has_max_steps(), d.max_steps(), &a.max_steps);
    f.Num("epochs", d.has_epochs(), d.epochs(), &a.epochs);
    f.Num("lr", d.has_lr(), d.lr(), &a.lr);
    f.Num("seq-len", d.has_seq_len(), d.seq_len(), &a.seq_len);
    f.Num("batch-rows", d.has_batch_rows(), d.batch_rows(), &a.rows);
    f.Num("grad-accum", d.has_grad_accum(), d.grad_accum(), &a.grad_accum);
    f.Num("warmup-steps", d.has_warmup_steps(), d.warmup_steps(), &a.warmup_steps);
    f.Text("schedule", d.schedule(), &a.schedule);
    f.Num("min-lr-ratio", d.has_min_lr_ratio(), d.min_lr_ratio(), &a.min_lr_ratio);
    f.Num("weight-decay", d.has_weight_decay(), d.weight_decay(), &a.weight_decay);
    f.Num("seed", d.has_seed(), d.seed(), &a.seed);
    f.Flag("answers-only", d.answers_only(), &a.answers_only);
    f.Num("ce-weight", d.has_ce_weight(), d.ce_weight(), &a.ce_weight);
    f.Num("kd-weight", d.has_kd_weight(), d.kd_weight(), &a.kd_weight);
    f.Text("divergence", d.divergence(), &a.divergence);
    f.Num("temperature", d.has_temperature(), d.temperature(), &a.temperature);
    f.Num("eval-fraction", d.has_eval_fraction(), d.eval_fraction(), &a.eval_fraction);
    f.Num("eval-every", d.has_eval_every(), d.eval_every(), &a.eval_every);
    f.Text("save-dtype", d.save_dtype(), &a.save_dtype);
    f.Text("overlong", d.overlong(), &a.overlong);
    f.Flag("all-assistant-turns", d.all_assistant_turns(), &a.all_turns);
    f.Flag("keep-sparsity", d.keep_sparsity(), &a.keep_sparsity);
    f.Flag("on-policy", d.on_policy(), &a.on_policy);
    f.Text("prompts", d.prompts(), &a.sampling.prompts);
    f.Text("on-policy-loss", d.on_policy_loss(), &a.on_policy_loss);
    f.Num("lambda", d.has_lambda(), d.lambda(), &a.sampling.lambda);
    f.Num("prompts-per-batch", d.has_prompts_per_batch(), d.prompts_per_batch(),
          &a.sampling.prompts_per_batch);
    f.Num("sample-temperature", d.has_sample_temperature(), d.sample_temperature(),
          &a.sampling.temperature);
    f.Num("sample-top-p", d.has_sample_top_p(), d.sample_top_p(), &a.sampling.top_p);
    f.Num("max-new-tokens", d.has_max_new_tokens(), d.max_new_tokens(), &a.sampling.max_new_tokens);
    f.Text("verifier", d.verifier(), &a.sampling.verifier);
    f.Num("jsd-beta", d.has_jsd_beta(), d.jsd_beta(), &a.jsd_beta);
    f.Text("think-prefix", d.think_prefix(), &a.think);
    f.Num("save-every", d.has_save_every(), d.save_every(), &a.save_every);
    f.Text("teacher-endpoint", d.teacher_endpoint(), &a.teacher_endpoint.base_url);
    f.Text("teacher-model-name", d.teacher_model_name(), &a.teacher_endpoint.model);
    f.Num("teacher-top-k", d.has_teacher_top_k(), d.teacher_top_k(), &a.teacher_top_k);
    f.Num("keep-checkpoints", d.has_keep_checkpoints(), d.keep_checkpoints(), &a.keep_checkpoints);
    f.Num("threads", context.threads > 0, context.threads, &a.threads);
    if (context.resume) a.resume = true;
    return f.status();
  }

  absl::Status Run(const po::variables_map&, const JobIo& io) override {
    if (a_.threads > 0) {
      SetNumThreads(a_.threads);
    } else if (LaunchedByMpiRunner()) {
      // Ranks share the machine's cores.
      const char* size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
      const int local = size != nullptr ? std::max(1, std::atoi(size)) : 1;
      SetNumThreads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local));
    }
    a_.command_line = io.invocation;
    a_.output = out_.path();
    return out_.RunReplacing([&] { return TrainStudent(a_, *io.progress); });
  }

 private:
  TrainStudentOptions a_;
  OutputOption out_{OutputOption::Kind::kFolder, &a_.resume};
};

}  // namespace

std::unique_ptr<JobCommand> NewDistillJob() { return std::make_unique<DistillJob>(); }

}  // namespace retort::pipeline
