#include "pipeline/stage_command.h"

#include <charconv>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file.h"
#include "core/status.h"
#include "pipeline/provenance.h"
#include "pipeline/recipe.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// Shortest text that reads back as the same value, without exponents
// ("0.0003", not "0.000300" or "3e-04").
template <typename T>
std::string Number(T v) {
  char buf[64];
  std::to_chars_result r;
  if constexpr (std::is_floating_point_v<T>) {
    r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  } else {
    r = std::to_chars(buf, buf + sizeof(buf), v);
  }
  return std::string(buf, r.ptr);
}

// Builds an argv, appending options only for settings the recipe gives.
class Argv {
 public:
  explicit Argv(std::string command) { args_.push_back(std::move(command)); }
  void Positional(const std::string& value) { args_.push_back(value); }
  void Flag(const char* name, bool on) {
    if (on) args_.push_back(name);
  }
  void Text(const char* name, const std::string& value) {
    if (value.empty()) return;
    args_.push_back(name);
    args_.push_back(value);
  }
  template <typename T>
  void Num(const char* name, bool has, T value) {
    if (!has) return;
    args_.push_back(name);
    args_.push_back(Number(value));
  }
  // A repeated option given once with every value (Boost multitoken).
  void List(const char* name, const std::vector<std::string>& values) {
    if (values.empty()) return;
    args_.push_back(name);
    args_.insert(args_.end(), values.begin(), values.end());
  }
  std::vector<std::string> Take() && { return std::move(args_); }

 private:
  std::vector<std::string> args_;
};

template <typename Repeated>
std::vector<std::string> Resolved(const Repeated& values, const InputResolver& resolve) {
  std::vector<std::string> out;
  for (const std::string& v : values) out.push_back(resolve(v));
  return out;
}

// Reads a JSON object from `path` without throwing.
absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

void CopyNumber(const nlohmann::json& from, const char* key, const char* as, Json* to) {
  auto it = from.find(key);
  if (it != from.end() && it->is_number()) (*to)[as] = *it;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> StageCommand(const proto::Stage& stage,
                                                      const InputResolver& resolve,
                                                      const std::string& stage_dir, int threads,
                                                      const std::string& device) {
  const std::string out = (fs::path(stage_dir) / StageMainOutput(stage)).string();
  // The CPU is every command's default: its command lines stay as they were.
  const std::string device_flag = StageTakesDevice(stage) && device != "cpu" ? device : "";
  std::vector<std::string> args;
  switch (stage.step_case()) {
    case proto::Stage::kGenerate: {
      const proto::Generate& g = stage.generate();
      Argv a("generate");
      if (!g.model().empty()) a.Positional(resolve(g.model()));
      a.Text("--prompts", resolve(g.prompts()));
      a.Text("--output", stage_dir);
      a.Num("--samples", g.has_samples(), g.samples());
      a.Num("--temperature", g.has_temperature(), g.temperature());
      a.Num("--top-p", g.has_top_p(), g.top_p());
      a.Num("--max-tokens", g.has_max_tokens(), g.max_tokens());
      a.Num("--seed", g.has_seed(), g.seed());
      a.Text("--verifier", g.verifier());
      a.Text("--keep", g.keep());
      a.Num("--max-batch", g.has_max_batch(), g.max_batch());
      a.Num("--top-logprobs", g.has_top_logprobs(), g.top_logprobs());
      a.Text("--think-prefix", g.think_prefix());
      a.Flag("--no-shard", g.no_shard());
      a.Text("--endpoint", g.endpoint());
      a.Text("--model-name", g.model_name());
      a.Text("--api-key-env", g.api_key_env());
      a.Num("--concurrency", g.has_concurrency(), g.concurrency());
      a.Num("--threads", threads > 0, threads);
      a.Text("--device", device_flag);
      args = std::move(a).Take();
      break;
    }
    case proto::Stage::kDistill: {
      const proto::Distill& d = stage.distill();
      Argv a("distill");
      a.Positional(resolve(d.student()));
      a.List("--data", Resolved(d.data(), resolve));
      a.Text("--output", stage_dir);
      if (!d.teacher().empty()) a.Text("--teacher", resolve(d.teacher()));
      a.Num("--max-steps", d.has_max_steps(), d.max_steps());
      a.Num("--epochs", d.has_epochs(), d.epochs());
      a.Num("--lr", d.has_lr(), d.lr());
      a.Num("--seq-len", d.has_seq_len(), d.seq_len());
      a.Num("--batch-rows", d.has_batch_rows(), d.batch_rows());
      a.Num("--grad-accum", d.has_grad_accum(), d.grad_accum());
      a.Num("--warmup-steps", d.has_warmup_steps(), d.warmup_steps());
      a.Text("--schedule", d.schedule());
      a.Num("--min-lr-ratio", d.has_min_lr_ratio(), d.min_lr_ratio());
      a.Num("--weight-decay", d.has_weight_decay(), d.weight_decay());
      a.Num("--seed", d.has_seed(), d.seed());
      a.Flag("--answers-only", d.answers_only());
      a.Num("--ce-weight", d.has_ce_weight(), d.ce_weight());
      a.Num("--kd-weight", d.has_kd_weight(), d.kd_weight());
      a.Text("--divergence", d.divergence());
      a.Num("--temperature", d.has_temperature(), d.temperature());
      a.Num("--eval-fraction", d.has_eval_fraction(), d.eval_fraction());
      a.Num("--eval-every", d.has_eval_every(), d.eval_every());
      a.Text("--save-dtype", d.save_dtype());
      a.Text("--overlong", d.overlong());
      a.Flag("--all-assistant-turns", d.all_assistant_turns());
      a.Flag("--keep-sparsity", d.keep_sparsity());
      a.Num("--threads", threads > 0, threads);
      a.Text("--device", device_flag);
      args = std::move(a).Take();
      if (d.has_ranks() && d.ranks() > 1) {
        // The runner starts "mpirun ... retort distill ..." as a process group.
        args.insert(args.begin(), {"mpirun", "-np", Number(d.ranks()), "retort"});
      }
      break;
    }
    case proto::Stage::kPrune: {
      const proto::Prune& p = stage.prune();
      Argv a("prune");
      a.Positional(resolve(p.model()));
      a.Positional(out);
      a.Text("--method", p.method());
      a.Num("--sparsity", p.has_sparsity(), p.sparsity());
      a.Text("--pattern", p.pattern());
      a.Flag("--structured", p.structured());
      a.Text("--target-params", p.target_params());
      a.Num("--num-layers", p.has_num_layers(), p.num_layers());
      a.Num("--num-heads", p.has_num_heads(), p.num_heads());
      a.Num("--num-kv-heads", p.has_num_kv_heads(), p.num_kv_heads());
      a.Num("--intermediate-size", p.has_intermediate_size(), p.intermediate_size());
      a.Num("--hidden-size", p.has_hidden_size(), p.hidden_size());
      a.List("--calib", Resolved(p.calib(), resolve));
      a.Num("--calib-samples", p.has_calib_samples(), p.calib_samples());
      a.Num("--calib-seq-len", p.has_calib_seq_len(), p.calib_seq_len());
      a.Text("--dtype", p.dtype());
      a.Num("--threads", threads > 0, threads);
      a.Text("--device", device_flag);
      args = std::move(a).Take();
      break;
    }
    case proto::Stage::kQuantize: {
      const proto::Quantize& q = stage.quantize();
      Argv a("quantize");
      a.Positional(resolve(q.model()));
      a.Positional(out);
      a.Text("--scheme", q.scheme());
      a.Text("--method", q.method());
      a.List("--calib", Resolved(q.calib(), resolve));
      a.Num("--calib-samples", q.has_calib_samples(), q.calib_samples());
      a.Num("--calib-seq-len", q.has_calib_seq_len(), q.calib_seq_len());
      a.Num("--threads", threads > 0, threads);
      a.Text("--device", device_flag);
      args = std::move(a).Take();
      break;
    }
    case proto::Stage::kConvert: {
      const proto::Convert& c = stage.convert();
      Argv a("convert");
      a.Positional(resolve(c.model()));
      a.Positional(out);
      a.Text("--to", c.to().empty() ? "gguf" : c.to());
      a.Text("--type", c.type());
      a.Text("--dtype", c.dtype());
      a.Num("--threads", threads > 0, threads);
      args = std::move(a).Take();
      break;
    }
    case proto::Stage::kEval: {
      const proto::Eval& e = stage.eval();
      Argv a("generate");
      a.Positional(resolve(e.model()));
      a.Text("--prompts", resolve(e.prompts()));
      a.Text("--output", (fs::path(stage_dir) / "gen").string());
      a.Flag("--greedy", true);
      a.Text("--keep", "all");
      a.Text("--verifier", e.verifier().empty() ? "math" : e.verifier());
      a.Flag("--no-shard", true);
      a.Num("--max-tokens", e.has_max_tokens(), e.max_tokens());
      a.Num("--max-batch", e.has_max_batch(), e.max_batch());
      a.Text("--think-prefix", e.think_prefix());
      a.Num("--threads", threads > 0, threads);
      a.Text("--device", device_flag);
      args = std::move(a).Take();
      break;
    }
    case proto::Stage::kInit: {
      const proto::Init& i = stage.init();
      Argv a("init");
      a.Positional(out);
      a.Text("--family", i.family());
      a.Text("--size", i.size());
      if (!i.tokenizer().empty()) {
        a.Text("--tokenizer", i.tokenizer() == "bytes" ? "bytes" : resolve(i.tokenizer()));
      }
      a.Num("--seed", i.has_seed(), i.seed());
      a.Text("--dtype", i.dtype());
      a.Num("--layers", i.has_layers(), i.layers());
      a.Num("--context", i.has_context(), i.context());
      a.Num("--hidden", i.has_hidden(), i.hidden());
      a.Num("--heads", i.has_heads(), i.heads());
      a.Num("--kv-heads", i.has_kv_heads(), i.kv_heads());
      a.Num("--intermediate", i.has_intermediate(), i.intermediate());
      a.Num("--rope-theta", i.has_rope_theta(), i.rope_theta());
      args = std::move(a).Take();
      break;
    }
    case proto::Stage::STEP_NOT_SET:
      return absl::InvalidArgumentError(absl::StrCat("stage \"", stage.name(), "\" has no step"));
  }
  args.insert(args.end(), stage.extra_args().begin(), stage.extra_args().end());
  return args;
}

absl::StatusOr<Json> EvalResult(const nlohmann::json& summary, uint64_t model_bytes,
                                const std::string& model_name) {
  auto v = summary.find("verification");
  if (v == summary.end() || !v->is_object()) {
    return absl::InvalidArgumentError(
        "the generation summary has no verification: eval prompts need answers");
  }
  auto number = [](const nlohmann::json& j, const char* key) -> double {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
  };
  const double total = number(*v, "samples");
  const double correct = number(*v, "correct");
  double tokens_per_s = 0;
  if (auto run = summary.find("this_run"); run != summary.end() && run->is_object()) {
    tokens_per_s = number(*run, "tokens_per_second");
  }
  Json r;
  r["accuracy"] = total > 0 ? correct / total : 0.0;
  r["correct"] = static_cast<int64_t>(correct);
  r["total"] = static_cast<int64_t>(total);
  r["tokens_per_s"] = tokens_per_s;
  r["model_bytes"] = model_bytes;
  r["model"] = model_name;
  return r;
}

absl::StatusOr<Json> StageMetrics(const proto::Stage& stage, const std::string& stage_dir) {
  Json m = Json::object();
  const fs::path dir(stage_dir);
  std::error_code ec;
  switch (stage.step_case()) {
    case proto::Stage::kDistill: {
      const std::string path = (dir / "metrics.jsonl").string();
      ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
      int64_t tokens = 0;
      for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
        nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
        if (!j.is_object()) return absl::DataLossError(absl::StrCat(path, ": a line is not JSON"));
        if (j.contains("loss")) {
          CopyNumber(j, "loss", "final_loss", &m);
          CopyNumber(j, "step", "steps", &m);
          CopyNumber(j, "tokens_per_s", "tokens_per_s", &m);
          if (auto t = j.find("tokens"); t != j.end() && t->is_number())
            tokens += t->get<int64_t>();
        }
        CopyNumber(j, "eval_loss", "eval_loss", &m);
      }
      m["tokens"] = tokens;
      break;
    }
    case proto::Stage::kGenerate: {
      ASSIGN_OR_RETURN(nlohmann::json s, ReadJson((dir / "summary.json").string()));
      CopyNumber(s, "prompts", "prompts", &m);
      CopyNumber(s, "samples", "samples", &m);
      CopyNumber(s, "kept", "kept", &m);
      if (auto v = s.find("verification"); v != s.end() && v->is_object()) {
        CopyNumber(*v, "accuracy", "accuracy", &m);
      }
      if (auto run = s.find("this_run"); run != s.end() && run->is_object()) {
        CopyNumber(*run, "tokens_per_second", "tokens_per_s", &m);
      }
      break;
    }
    case proto::Stage::kEval: {
      ASSIGN_OR_RETURN(nlohmann::json r, ReadJson((dir / "result.json").string()));
      for (auto it = r.begin(); it != r.end(); ++it) {
        if (it->is_number()) m[it.key()] = it.value();
      }
      break;
    }
    default:
      break;
  }
  if (stage.step_case() != proto::Stage::kGenerate && stage.step_case() != proto::Stage::kEval) {
    ASSIGN_OR_RETURN(uint64_t bytes, ModelBytes((dir / StageMainOutput(stage)).string()));
    m["model_bytes"] = bytes;
  }
  return m;
}

}  // namespace retort::pipeline
