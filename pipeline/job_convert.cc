// `retort convert` as a JobCommand (stage_job.h) over quantize/model_convert.h.
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/process.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "pipeline/recipe.h"
#include "pipeline/stage_fields.h"
#include "pipeline/stage_job.h"
#include "quantize/model_convert.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;

class ConvertJob : public JobCommand {
 public:
  void AddOptions(po::options_description& opts, bool command_line) override {
    opts.add_options()("in", RequiredOnCommandLine(&in_, command_line),
                       "HF model directory or .gguf file");
    out_.AddOptions(opts, command_line, "output .gguf file or HF directory");
    opts.add_options()("to", po::value(&to_), "gguf or hf (default: the other format than IN)")(
        "type", po::value(&type_)->default_value("f16"),
        "GGUF tensor types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k")(
        "dtype", po::value(&dtype_)->default_value("auto"),
        "HF weight dtype: f32, bf16, f16, auto (the GGUF's float type, else bf16)")(
        "pre", po::value(&pre_),
        "tokenizer.ggml.pre name (default: recognised from tokenizer.json)")(
        "name", po::value(&name_), "general.name (default: the input folder's name)")(
        "verbose", po::bool_switch(&verbose_), "print every tensor's type")(
        "threads", po::value(&threads_)->default_value(0), "worker threads (0 = all cores)");
  }
  std::vector<std::string> Positionals() const override { return {"in", "output"}; }
  const OutputOption* Output() const override { return &out_; }

  absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                         const po::variables_map& vm) override {
    const proto::Convert& c = stage.convert();
    StageFields f(vm);
    f.Text("in", c.model(), &in_);
    f.Fixed("output", (fs::path(context.dir) / StageMainOutput(stage)).string(), &out_.path());
    f.Text("to", c.to().empty() ? "gguf" : c.to(), &to_);
    f.Text("type", c.type(), &type_);
    f.Text("dtype", c.dtype(), &dtype_);
    f.Num("threads", context.threads > 0, context.threads, &threads_);
    return f.status();
  }

  absl::Status Run(const po::variables_map&, const JobIo& io) override {
    if (threads_ > 0) SetNumThreads(threads_);
    const bool in_gguf = quant::IsGgufInput(in_);
    if (to_.empty()) to_ = in_gguf ? "hf" : "gguf";
    const std::string& out = out_.path();
    quant::ConvertOptions o;
    o.in = in_;
    o.out = out;
    o.dtype = dtype_;
    if (to_ == "gguf") {
      if (in_gguf) return OptionError("IN is already a GGUF file (use --to hf)");
      absl::StatusOr<GgufPreset> preset = ParseGgufPreset(type_);
      if (!preset.ok()) return OptionError(preset.status().message());
      o.preset = *preset;
      o.pre = pre_;
      o.name = name_;
      o.verbose = verbose_;
    } else if (to_ == "hf") {
      std::error_code ec;
      if (!in_gguf && !fs::is_directory(in_, ec)) {
        return OptionError(absl::StrCat(in_, " is neither a GGUF file nor a directory"));
      }
      o.to = quant::ConvertTarget::kHf;
    } else {
      return OptionError("--to must be gguf or hf");
    }
    const auto t0 = std::chrono::steady_clock::now();
    // An HF directory is written whole under a temporary name and renamed
    // into place (over an existing OUT with --force); a .gguf is one file
    // written the same way by its writer.
    std::optional<StagedDirectory> staged;
    if (o.to == quant::ConvertTarget::kHf) {
      absl::StatusOr<StagedDirectory> dir =
          StagedDirectory::Create(out, {.temp_path = {}, .replace_existing = out_.force()});
      if (!dir.ok()) return dir.status();
      staged.emplace(*std::move(dir));
      o.out = staged->path();
    }
    ASSIGN_OR_RETURN(quant::ConvertStats stats, quant::ConvertModel(o, *io.progress));
    if (staged) RETURN_IF_ERROR(staged->Commit());
    *io.out << absl::StrFormat(
        "wrote %s: %d tensors, %s parameters, %s (%.2f bits per weight) in %.1f s\n", out,
        stats.tensors, HumanCount(stats.params), HumanBytes(stats.bytes),
        stats.params > 0 ? 8.0 * stats.bytes / stats.params : 0.0, SecondsSince(t0));
    return absl::OkStatus();
  }

 private:
  std::string in_, to_, type_, dtype_, pre_, name_;
  OutputOption out_{OutputOption::Kind::kModel};
  bool verbose_ = false;
  int threads_ = 0;
};

}  // namespace

std::unique_ptr<JobCommand> NewConvertJob() { return std::make_unique<ConvertJob>(); }

}  // namespace retort::pipeline
