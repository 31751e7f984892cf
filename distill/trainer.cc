#include "distill/trainer.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "core/tensor.h"
#include "formats/hf_dir.h"
#include "formats/safetensors.h"
#include "kernels/backend.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int sig) {
  if (g_stop.exchange(true)) {
    // Second signal: the default action (terminate).
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string CheckpointName(int64_t step) { return absl::StrFormat("checkpoint-%07d", step); }

// Checkpoints in `dir`, by step (complete ones only: written under a
// temporary name and renamed).
std::map<int64_t, std::string> ListCheckpoints(const std::string& dir) {
  std::map<int64_t, std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0 || !e.is_directory()) continue;
    char* end = nullptr;
    const long long step = std::strtoll(name.c_str() + 11, &end, 10);
    if (end == nullptr || *end != '\0') continue;
    if (!fs::exists(e.path() / "trainer_state.json")) continue;
    out[step] = e.path().string();
  }
  return out;
}

}  // namespace

void InstallTrainerSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}
bool TrainerStopRequested() { return g_stop.load(); }
void RequestTrainerStop() { g_stop.store(true); }
void ClearTrainerStopRequest() { g_stop.store(false); }

Trainer::Trainer(TrainModel* student, TrainModel* teacher, DataLoader* train, DataLoader* eval,
                 Collective* collective, TrainerOptions options)
    : student_(student),
      teacher_(teacher),
      train_(train),
      eval_(eval),
      collective_(collective),
      options_(std::move(options)) {}

void Trainer::RecordSparsity() {
  sparse_zeros_.clear();
  std::set<std::string> linears;  // the decoder linears, what prune zeroes
  for (int64_t l = 0; l < student_->config().num_layers; ++l) {
    for (LinearSlot slot : kLinearSlots) linears.insert(LinearWeightName(l, slot));
  }
  const float* base = student_->param_arena();
  for (const TrainModel::Parameter& p : student_->parameters()) {
    if (linears.count(p.name) == 0) continue;
    const int64_t offset = p.value - base;
    for (int64_t i = 0; i < p.size; ++i) {
      if (p.value[i] == 0.0f) sparse_zeros_.push_back(offset + i);
    }
  }
}

void Trainer::ApplySparsity(float* arena) {
  for (int64_t i : sparse_zeros_) arena[i] = 0.0f;
}

int64_t Trainer::TotalSteps() const {
  if (options_.max_steps > 0) return options_.max_steps;
  const double per_step = static_cast<double>(options_.grad_accum) * collective_->world_size();
  if (train_ == nullptr) {  // on-policy only: epochs over the prompts
    const double samples = static_cast<double>(on_policy_->num_prompts()) * options_.epochs;
    return std::max<int64_t>(
        1,
        static_cast<int64_t>(std::ceil(
            samples / (per_step * static_cast<double>(on_policy_->options().prompts_per_batch)))));
  }
  const double batches = static_cast<double>(train_->BatchesInEpoch(0)) * options_.epochs;
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(batches / per_step)));
}

absl::StatusOr<Trainer::StepStats> Trainer::RunMicroBatch(const PackedBatch& batch, bool backward,
                                                          const LossOptions& loss) {
  const ModelConfig& c = student_->config();
  const int64_t n = static_cast<int64_t>(batch.tokens.size());
  const int64_t d = c.hidden_size;
  hidden_.resize(n * d);
  dhidden_.resize(n * d);
  RETURN_IF_ERROR(student_->Forward(batch.tokens.data(), batch.positions.data(),
                                    batch.doc_start.data(), n, hidden_.data()));
  TeacherSignal teacher;
  StepStats s;
  if (teacher_ != nullptr && loss.kd_weight > 0) {
    const auto t0 = Clock::now();
    const int64_t td = teacher_->config().hidden_size;
    teacher_hidden_.resize(n * td);
    RETURN_IF_ERROR(teacher_->Forward(batch.tokens.data(), batch.positions.data(),
                                      batch.doc_start.data(), n, teacher_hidden_.data()));
    // A teacher whose vocabulary is the student's plus padding rows (Qwen2.5:
    // 152,064 vs 151,936; train_student checks the tokenizers) is read over
    // the student's ids: the first rows of its row-major head.
    teacher = TeacherSignal::Dense(teacher_hidden_.data(), td, teacher_->lm_head(),
                                   std::min(teacher_->config().vocab_size, c.vocab_size));
    s.teacher_s = Seconds(t0, Clock::now());
  } else if (!batch.teacher_token_logprobs.empty() && loss.kd_weight > 0) {
    teacher = TeacherSignal::TokenLogprobs(batch.teacher_token_logprobs.data());
  } else if (batch.top_k > 0 && loss.kd_weight > 0) {
    // Rows without teacher data hold only empty slots (-1): their KD term is
    // zero (teacher and student both put all mass in the tail bucket).
    teacher = TeacherSignal::TopK(batch.topk_ids.data(), batch.topk_logprobs.data(), batch.top_k);
  }
  ASSIGN_OR_RETURN(LossResult r,
                   ComputeLoss(hidden_.data(), n, d, student_->lm_head(), c.vocab_size,
                               batch.targets.data(), teacher, loss, 1.0f, dhidden_.data(),
                               backward ? student_->lm_head_grad() : nullptr));
  if (backward) RETURN_IF_ERROR(student_->Backward(dhidden_.data()));
  s.loss_sum = r.loss_sum;
  s.ce_sum = r.ce_sum;
  s.kd_sum = r.kd_sum;
  s.tokens = static_cast<double>(r.tokens);
  return s;
}

absl::StatusOr<double> Trainer::Evaluate() {
  if (eval_ == nullptr) return -1.0;
  const DataPosition saved = eval_->position();
  RETURN_IF_ERROR(eval_->Seek(DataPosition{}));
  double sums[2] = {0, 0};
  const int64_t limit =
      options_.eval_batches > 0 ? options_.eval_batches : std::numeric_limits<int64_t>::max();
  PackedBatch batch;
  for (int64_t i = 0; i < limit; ++i) {
    if (!eval_->Next(&batch)) break;
    ASSIGN_OR_RETURN(StepStats s, RunMicroBatch(batch, /*backward=*/false, options_.loss));
    sums[0] += s.loss_sum;
    sums[1] += s.tokens;
  }
  RETURN_IF_ERROR(eval_->Seek(saved));
  RETURN_IF_ERROR(collective_->AllReduceSum(sums, 2));
  if (sums[1] == 0) return -1.0;
  return sums[0] / sums[1];
}

absl::Status Trainer::AppendMetrics(const std::string& json_line) {
  if (collective_->rank() != 0) return absl::OkStatus();
  const std::string path = (fs::path(options_.output_dir) / "metrics.jsonl").string();
  std::ofstream f(path, std::ios::app);
  f << json_line << "\n";
  f.flush();
  if (!f) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::Status Trainer::SaveCheckpoint(int64_t step, const std::string& name) {
  RETURN_IF_ERROR(collective_->Barrier());
  if (collective_->rank() == 0) {
    const fs::path out = fs::path(options_.output_dir) / name;
    StagedDirectory::Options staging;
    staging.temp_path = (fs::path(options_.output_dir) / ("." + name + ".tmp")).string();
    ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out.string(), staging));
    const fs::path tmp = staged.path();
    // config.json names the dtype the weights are written in (transformers
    // loads torch_dtype "auto" from it), not the f32 the trainer holds.
    ModelConfig saved = student_->config();
    saved.torch_dtype = options_.save_dtype;
    RETURN_IF_ERROR(WriteHfDirectory(tmp.string(), saved.ToJson(),
                                     student_->NamedWeights(options_.save_dtype)));
    for (const auto& [file, contents] : options_.extra_files) {
      RETURN_IF_ERROR(WriteFileAtomically((tmp / file).string(), contents));
    }
    const bool is_checkpoint = name.rfind("checkpoint-", 0) == 0;
    if (is_checkpoint) {
      // f32 master weights + optimizer state: what a bit-exact resume needs.
      const int64_t np = student_->num_parameters();
      RETURN_IF_ERROR(WriteSafetensors(
          (tmp / "master.safetensors").string(),
          {{"master", Tensor::View(DType::kF32, Shape{np}, student_->param_arena(), nullptr)}},
          {{"format", "retort-master"}}));
      RETURN_IF_ERROR(optimizer_->SaveState((tmp / "optimizer.bin").string()));
      nlohmann::ordered_json ts;
      ts["step"] = step;
      ts["optimizer_step"] = optimizer_->step();
      if (train_ != nullptr) ts["data_position"] = train_->position().ToJson();
      if (on_policy_ != nullptr) {
        ts["on_policy"] = {
            {"next_sample", on_policy_->FirstSampleOfStep(step, options_.grad_accum)},
            {"seed", on_policy_->options().seed}};
      }
      ts["tokens"] = tokens_before_;
      ts["elapsed_s"] = elapsed_at_save_;
      ts["num_parameters"] = np;
      ts["world_size"] = collective_->world_size();
      ts["settings"] = ResumeSettings();
      RETURN_IF_ERROR(
          WriteFileAtomically((tmp / "trainer_state.json").string(), ts.dump(2) + "\n"));
    }
    RETURN_IF_ERROR(staged.Commit());
    std::error_code ec;
    if (is_checkpoint && options_.keep_checkpoints > 0) {
      auto all = ListCheckpoints(options_.output_dir);
      while (static_cast<int>(all.size()) > options_.keep_checkpoints) {
        fs::remove_all(all.begin()->second, ec);
        all.erase(all.begin());
      }
    }
  }
  return collective_->Barrier();
}

nlohmann::json Trainer::ResumeSettings() {
  nlohmann::json j;
  if (train_ != nullptr) {
    if (data_hash_ == 0) data_hash_ = train_->ContentHash();
    j["data"] = absl::StrFormat("%016x", data_hash_);
    j["batches_per_epoch"] = train_->BatchesInEpoch(0);
  }
  if (on_policy_ != nullptr) {
    const OnPolicyOptions& o = on_policy_->options();
    j["prompts"] = absl::StrFormat("%016x", on_policy_->ContentHash());
    j["prompts_per_batch"] = o.prompts_per_batch;
    j["lambda"] = o.lambda;
    j["on_policy_loss"] = KdDivergenceName(options_.on_policy_loss.divergence);
  }
  j["steps"] = TotalSteps();
  j["lr"] = options_.schedule.peak_lr;
  j["min_lr"] = options_.schedule.min_lr;
  j["warmup_steps"] = options_.schedule.warmup_steps;
  j["schedule"] = LrScheduleName(options_.schedule.kind);
  j["grad_accum"] = options_.grad_accum;
  return j;
}

absl::Status Trainer::CheckResumeSettings(const std::string& dir, const nlohmann::json& saved) {
  const nlohmann::json now = ResumeSettings();
  // Other data (or packing) makes the saved data position meaningless.
  for (const char* key : {"data", "batches_per_epoch", "prompts"}) {
    if (saved.contains(key) && saved[key] != now[key]) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": the checkpoint was trained on other data (", key, " ", saved[key].dump(),
          ", now ", now[key].dump(),
          "): resume with the same --data, --prompts and --seq-len/--batch-rows, or choose "
          "another --output"));
    }
  }
  // Other lengths and rates are allowed, and said loudly.
  std::string changed;
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (saved.contains(it.key()) && saved[it.key()] != it.value()) {
      absl::StrAppend(&changed, changed.empty() ? "" : ", ", it.key(), " ", saved[it.key()].dump(),
                      " -> ", it.value().dump());
    }
  }
  if (!changed.empty() && collective_->rank() == 0) {
    Sink().Line(absl::StrCat("warning: resuming ", dir, " with changed settings: ", changed,
                             " (the run continues with the new values; the learning-rate "
                             "schedule is recomputed over the new length)"));
  }
  return absl::OkStatus();
}

std::string Trainer::LatestCheckpoint() const {
  auto all = ListCheckpoints(options_.output_dir);
  return all.empty() ? std::string() : all.rbegin()->second;
}

absl::Status Trainer::LoadLatestCheckpoint(int64_t* step) {
  const std::string dir = LatestCheckpoint();
  if (dir.empty()) {
    *step = 0;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string text,
                   ReadFileToString((fs::path(dir) / "trainer_state.json").string()));
  const std::string state_path = (fs::path(dir) / "trainer_state.json").string();
  absl::StatusOr<nlohmann::json> parsed = ParseJson(text, state_path);
  if (!parsed.ok()) return absl::DataLossError(parsed.status().message());
  nlohmann::json ts = *std::move(parsed);
  try {
    *step = ts.at("step").get<int64_t>();
    if (ts.contains("settings")) RETURN_IF_ERROR(CheckResumeSettings(dir, ts["settings"]));
    if (train_ != nullptr) {
      ASSIGN_OR_RETURN(DataPosition pos, DataPosition::FromJson(ts.at("data_position")));
      RETURN_IF_ERROR(train_->Seek(pos));
    }
    tokens_before_ = ts.value("tokens", int64_t{0});
    elapsed_before_ = ts.value("elapsed_s", 0.0);
    if (ts.value("num_parameters", int64_t{-1}) != student_->num_parameters()) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, ": checkpoint has ", ts.value("num_parameters", int64_t{-1}),
                       " parameters, the student has ", student_->num_parameters()));
    }
    if (ts.value("world_size", 1) != collective_->world_size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": checkpoint was written by ", ts.value("world_size", 1),
          " ranks; resume with the same number (", collective_->world_size(), " now)"));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(dir, "/trainer_state.json: ", e.what()));
  }
  const std::string master_path = (fs::path(dir) / "master.safetensors").string();
  ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(master_path));
  const int64_t np = student_->num_parameters();
  ASSIGN_OR_RETURN(Tensor master, reader->Get("master"));
  if (master.dtype() != DType::kF32 || master.numel() != np) {
    return absl::DataLossError(absl::StrCat(master_path, ": tensor master is not f32[", np, "]"));
  }
  std::copy(master.data<float>(), master.data<float>() + np, student_->param_arena());
  RETURN_IF_ERROR(optimizer_->LoadState((fs::path(dir) / "optimizer.bin").string()));
  // Metrics written after the checkpoint belong to steps that will be redone.
  if (collective_->rank() == 0) {
    const std::string mpath = (fs::path(options_.output_dir) / "metrics.jsonl").string();
    std::ifstream in(mpath);
    std::string kept, line;
    while (std::getline(in, line)) {
      try {
        absl::StatusOr<nlohmann::json> j = ParseJson(line, mpath);
        if (j.ok() && j->value("step", int64_t{0}) <= *step) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // A torn last line of a killed run: dropped.
      }
    }
    in.close();
    RETURN_IF_ERROR(WriteFileAtomically(mpath, kept));
  }
  if (options_.progress && collective_->rank() == 0) {
    Sink().Line(absl::StrFormat("resuming from %s (step %d)", dir, *step));
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainerSummary> Trainer::Run() {
  std::error_code ec;
  fs::create_directories(options_.output_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(options_.output_dir, ": cannot create: ", ec.message()));
  }
  // One run per output folder: rank 0 holds its lock until the run ends, and
  // collects the temporaries of killed runs.
  std::optional<DirectoryLock> lock;
  if (collective_->rank() == 0) {
    ASSIGN_OR_RETURN(DirectoryLock held, DirectoryLock::Acquire(options_.output_dir));
    lock.emplace(std::move(held));
    RemoveStaleTemporaries(options_.output_dir);
  }
  {
    std::vector<ParamGroup> groups;
    for (const TrainModel::Parameter& p : student_->parameters()) {
      const int64_t begin = p.value - student_->param_arena();
      const bool decay = options_.decay_all || p.decay;
      if (!groups.empty() && groups.back().decay == decay && groups.back().end == begin) {
        groups.back().end = begin + p.size;
      } else {
        groups.push_back(ParamGroup{begin, begin + p.size, decay});
      }
    }
    ASSIGN_OR_RETURN(AdamW opt, AdamW::Create(student_->num_parameters(), options_.optimizer,
                                              std::move(groups)));
    optimizer_.emplace(std::move(opt));
  }
  const int64_t total = TotalSteps();
  int64_t step = 0;
  if (options_.resume) {
    RETURN_IF_ERROR(LoadLatestCheckpoint(&step));
  } else if (collective_->rank() == 0) {
    if (!ListCheckpoints(options_.output_dir).empty()) {
      return absl::AlreadyExistsError(absl::StrCat(
          options_.output_dir,
          ": has checkpoints of an earlier run; pass --resume to continue it or choose another "
          "--output"));
    }
    fs::remove((fs::path(options_.output_dir) / "metrics.jsonl"), ec);
  }
  if (collective_->rank() == 0 && !options_.run_description.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(options_.output_dir) / "run.json").string(),
                                        options_.run_description));
  }

  TrainerSummary summary;
  const bool rank0 = collective_->rank() == 0;
  const auto t0 = Clock::now();
  int64_t run_tokens = 0, run_steps = 0;  // of this process (not before a resume)
  PackedBatch batch;
  // A non-finite loss or gradient norm ends the run without saving anything.
  auto non_finite = [&](const char* what, double value, int64_t at, const char* hint) {
    const std::string last = LatestCheckpoint();
    return absl::DataLossError(absl::StrCat(what, " is ", value, " at step ", at,
                                            "; stopped without saving. Last good checkpoint: ",
                                            last.empty() ? std::string("none") : last, hint));
  };
  if (options_.keep_sparsity) {
    RecordSparsity();
    if (rank0 && options_.progress) {
      Sink().Line(absl::StrCat("keep-sparsity: ", sparse_zeros_.size(),
                               " zero entries of the decoder linears stay zero"));
    }
  }
  std::vector<double> scalars(4);
  while (step < total) {
    const auto ts = Clock::now();
    student_->ZeroGrads();
    StepStats acc;
    OnPolicyStats op;
    std::unique_ptr<Transformer> sampler_model;  // the student's weights of this step
    for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
      const bool on =
          on_policy_ != nullptr && on_policy_->IsOnPolicy(step, micro, options_.grad_accum);
      if (on) {
        if (sampler_model == nullptr) {
          ASSIGN_OR_RETURN(sampler_model, student_->ToTransformer());
        }
        RETURN_IF_ERROR(
            on_policy_->Sample(*sampler_model, step, micro, options_.grad_accum, &batch, &op));
      } else if (train_ == nullptr || !train_->Next(&batch)) {
        return absl::InternalError("the training data stream ended (the loader must repeat)");
      }
      ASSIGN_OR_RETURN(StepStats s, RunMicroBatch(batch, /*backward=*/true,
                                                  on ? options_.on_policy_loss : options_.loss));
      acc.loss_sum += s.loss_sum;
      acc.ce_sum += s.ce_sum;
      acc.kd_sum += s.kd_sum;
      acc.tokens += s.tokens;
      op.teacher_s += s.teacher_s;
      if (on) {
        op.kd_sum += s.kd_sum;
        op.kd_tokens += s.tokens;
      }
    }
    // Sum over ranks, then the gradient of the mean loss per target token.
    scalars = {acc.loss_sum, acc.ce_sum, acc.kd_sum, acc.tokens};
    RETURN_IF_ERROR(collective_->AllReduceSum(scalars.data(), 4));
    if (on_policy_ != nullptr) {
      RETURN_IF_ERROR(collective_->AllReduceSum(op.data(), OnPolicyStats::kFields));
    }
    RETURN_IF_ERROR(collective_->AllReduceSum(student_->grad_arena(), student_->num_parameters()));
    const double tokens = scalars[3];
    const double loss = tokens > 0 ? scalars[0] / tokens : 0.0;
    if (!std::isfinite(loss)) {
      return non_finite("loss", loss, step + 1,
                        " (lower --lr, check the data, or raise --clip-grad-norm)");
    }
    if (tokens > 0) {
      const float inv = static_cast<float>(1.0 / tokens);
      RETURN_IF_ERROR(
          DefaultBackend().Scale(student_->grad_arena(), student_->num_parameters(), inv));
    }
    ApplySparsity(student_->grad_arena());  // pruned entries take no part, in the norm either
    const double grad_norm =
        ClipGradNorm(student_->grad_arena(), student_->num_parameters(), options_.clip_grad_norm);
    if (!std::isfinite(grad_norm)) return non_finite("gradient norm", grad_norm, step + 1, "");
    const float lr = static_cast<float>(LearningRate(step, total, options_.schedule));
    optimizer_->Step(student_->param_arena(), student_->grad_arena(), lr);
    ApplySparsity(student_->param_arena());  // exact zeros whatever AdamW's epsilon does
    ++step;
    run_tokens += static_cast<int64_t>(tokens);
    tokens_before_ += static_cast<int64_t>(tokens);
    const auto tn = Clock::now();
    const double elapsed = Seconds(t0, tn);
    const double tok_s = elapsed > 0 ? run_tokens / elapsed : 0;
    if (run_steps == 0) summary.first_loss = loss;
    summary.last_loss = loss;
    {
      nlohmann::ordered_json m;
      m["step"] = step;
      m["loss"] = loss;
      if (options_.loss.ce_weight > 0 && options_.loss.kd_weight > 0) {
        m["ce"] = scalars[1] / std::max(1.0, tokens);
        m["kd"] = scalars[2] / std::max(1.0, tokens);
      }
      m["lr"] = lr;
      m["grad_norm"] = grad_norm;
      m["tokens"] = static_cast<int64_t>(tokens);
      m["step_s"] = Seconds(ts, tn);
      m["tokens_per_s"] = tok_s;
      if (on_policy_ != nullptr) {
        // Seconds are summed over ranks: divided by the world size, per rank.
        const double ranks = collective_->world_size();
        const double gen_s = op.generate_s / ranks, teach_s = op.teacher_s / ranks;
        m["on_policy_batches"] = static_cast<int64_t>(op.batches);
        if (op.batches > 0) {
          // The on-policy divergence per student token: reverse KL (exact,
          // or the sampled-token estimate) or the JSD.
          const bool jsd = options_.on_policy_loss.divergence == KdDivergence::kJsd;
          m[jsd ? "jsd" : "reverse_kl"] = op.kd_sum / std::max(1.0, op.kd_tokens);
          m["sample_tokens"] = op.completion_tokens / std::max(1.0, op.samples);
          m["finish_stop"] = static_cast<int64_t>(op.stopped);
          m["finish_length"] = static_cast<int64_t>(op.truncated);
          if (op.verified > 0) m["sampled_accuracy"] = op.correct / op.verified;
          m["generate_tok_s"] = gen_s > 0 ? op.completion_tokens / ranks / gen_s : 0.0;
        }
        m["generate_s"] = gen_s;
        m["teacher_s"] = teach_s;
        m["train_s"] = std::max(0.0, Seconds(ts, tn) - gen_s - teach_s);
      }
      m["elapsed_s"] = elapsed_before_ + elapsed;
      RETURN_IF_ERROR(AppendMetrics(m.dump()));
    }
    if (on_step_) on_step_(step, loss);
    if (options_.progress && rank0) {
      const double per_step = elapsed / static_cast<double>(run_steps + 1);
      std::string on_policy;  // this step's on-policy figures, when it had any
      if (op.batches > 0) {
        on_policy = absl::StrFormat(" | sample %.0f tok", op.completion_tokens / op.samples);
        if (op.verified > 0) {
          absl::StrAppend(&on_policy,
                          absl::StrFormat(" | sampled acc %.2f", op.correct / op.verified));
        }
      }
      Sink().Status(absl::StrFormat("step %d/%d | loss %.4f%s | lr %.2e | %.0f tok/s | ETA %s",
                                    step, total, loss, on_policy, lr, tok_s,
                                    HumanDuration(per_step * (total - step))));
    }
    ++run_steps;

    const bool last_step = step == total;
    // Stop requests are agreed on by all ranks so they save the same step.
    double stop = TrainerStopRequested() ? 1 : 0;
    RETURN_IF_ERROR(collective_->AllReduceSum(&stop, 1));
    if ((options_.eval_every > 0 && step % options_.eval_every == 0) || last_step) {
      ASSIGN_OR_RETURN(double el, Evaluate());
      if (el >= 0) {
        summary.eval_loss = el;
        nlohmann::ordered_json m;
        m["step"] = step;
        m["eval_loss"] = el;
        RETURN_IF_ERROR(AppendMetrics(m.dump()));
        if (options_.progress && rank0) {
          Sink().Line(absl::StrFormat("eval at step %d: loss %.4f", step, el));
        }
      }
    }
    if ((options_.save_every > 0 && step % options_.save_every == 0) || last_step || stop > 0) {
      elapsed_at_save_ = elapsed_before_ + Seconds(t0, Clock::now());
      RETURN_IF_ERROR(SaveCheckpoint(step, CheckpointName(step)));
      summary.final_dir = LatestCheckpoint();
    }
    if (stop > 0 && !last_step) {
      summary.interrupted = true;
      if (options_.progress && rank0) {
        Sink().Line(absl::StrFormat(
            "interrupted at step %d: checkpoint saved in %s; continue with --resume", step,
            summary.final_dir));
      }
      break;
    }
  }
  if (!summary.interrupted) {
    RETURN_IF_ERROR(SaveCheckpoint(step, "final"));
    summary.final_dir = (fs::path(options_.output_dir) / "final").string();
    if (options_.progress && rank0) Sink().EndStatus();
  }
  summary.tokens = run_tokens;
  summary.seconds = Seconds(t0, Clock::now());
  summary.steps = step;
  return summary;
}

}  // namespace retort
