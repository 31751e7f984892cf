// `retort init` as a JobCommand (stage_job.h) over model/init.h.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "model/init.h"
#include "model/model_files.h"
#include "pipeline/recipe.h"
#include "pipeline/stage_fields.h"
#include "pipeline/stage_job.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;

class InitJob : public JobCommand {
 public:
  void AddOptions(po::options_description& opts, bool command_line) override {
    out_.AddOptions(opts, command_line, "output directory (the model)");
    opts.add_options()("family", po::value(&family_)->default_value("llama"),
                       "llama, qwen2, qwen3 or mistral")(
        "size", po::value(&size_)->default_value("tiny"),
        absl::StrCat("size preset: ", absl::StrJoin(PresetSizes(), ", ")).c_str())(
        "tokenizer", po::value(&tokenizer_)->default_value("bytes"),
        "\"bytes\" (built-in byte-level tokenizer with ChatML) or a tokenizer.json / model "
        "directory to copy; sets the vocabulary size")(
        "dtype", po::value(&dtype_)->default_value("bf16"), "weight dtype: f32, bf16, f16")(
        "hidden", po::value(&sizes_.hidden),
        "override the preset's hidden size (head size = hidden / heads)")(
        "layers", po::value(&sizes_.layers), "override the preset's number of layers")(
        "heads", po::value(&sizes_.heads), "override the preset's attention heads")(
        "kv-heads", po::value(&sizes_.kv_heads),
        "override the preset's key/value heads (default: the preset's if it divides --heads, "
        "else --heads)")("intermediate", po::value(&sizes_.intermediate),
                         "override the preset's MLP intermediate size")(
        "context", po::value(&sizes_.context), "override max_position_embeddings")(
        "rope-theta", po::value(&sizes_.rope_theta),
        "override the RoPE base (llama preset: 500000; 10000 suits short contexts)")(
        "seed", po::value(&seed_)->default_value(0), "random seed");
  }
  std::vector<std::string> Positionals() const override { return {"output"}; }
  const OutputOption* Output() const override { return &out_; }

  absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                         const po::variables_map& vm) override {
    const proto::Init& i = stage.init();
    StageFields f(vm);
    f.Fixed("output", (fs::path(context.dir) / StageMainOutput(stage)).string(), &out_.path());
    f.Text("family", i.family(), &family_);
    f.Text("size", i.size(), &size_);
    f.Text("tokenizer", i.tokenizer(), &tokenizer_);
    f.Num("seed", i.has_seed(), i.seed(), &seed_);
    f.Text("dtype", i.dtype(), &dtype_);
    f.Num("layers", i.has_layers(), i.layers(), &sizes_.layers);
    f.Num("context", i.has_context(), i.context(), &sizes_.context);
    f.Num("hidden", i.has_hidden(), i.hidden(), &sizes_.hidden);
    f.Num("heads", i.has_heads(), i.heads(), &sizes_.heads);
    f.Num("kv-heads", i.has_kv_heads(), i.kv_heads(), &sizes_.kv_heads);
    f.Num("intermediate", i.has_intermediate(), i.intermediate(), &sizes_.intermediate);
    f.Num("rope-theta", i.has_rope_theta(), i.rope_theta(), &sizes_.rope_theta);
    return f.status();
  }

  absl::Status Run(const po::variables_map&, const JobIo& io) override {
    ASSIGN_OR_RETURN(ModelConfig config, PresetConfig(family_, size_));
    RETURN_IF_ERROR(ApplySizeOverrides(sizes_, &config));
    ASSIGN_OR_RETURN(DType dtype, ParseWeightDType(dtype_));
    const std::string& out = out_.path();
    RETURN_IF_ERROR(WriteInitialModel(out, config, tokenizer_, dtype, seed_, out_.force()));
    const std::string config_path = out + "/config.json";
    auto written =
        ModelConfig::FromJson(ParseJson(ReadFileToString(config_path).value_or("null"), config_path)
                                  .value_or(nlohmann::json()),
                              out);
    *io.out << "wrote " << out << ": " << ArchClassName(config.arch) << ", "
            << HumanCount(written.ok() ? written->ParameterCount() : config.ParameterCount())
            << " parameters, " << DTypeName(dtype) << ", vocab "
            << (written.ok() ? written->vocab_size : config.vocab_size) << "\n";
    return absl::OkStatus();
  }

 private:
  OutputOption out_{OutputOption::Kind::kFolder};
  std::string family_, size_, tokenizer_, dtype_;
  uint64_t seed_ = 0;
  SizeOverrides sizes_;
};

}  // namespace

std::unique_ptr<JobCommand> NewInitJob() { return std::make_unique<InitJob>(); }

}  // namespace retort::pipeline
