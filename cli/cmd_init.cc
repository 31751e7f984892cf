// retort init OUT_DIR --family F --size S [--tokenizer bytes|PATH]
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/progress.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "model/init.h"
#include "model/model_files.h"
#include "text/tokenizer_bytes.h"

namespace retort::cli {
namespace {
namespace fs = std::filesystem;

// Writes the model into a temporary sibling folder and renames it into place,
// so a failure never leaves a half-written model at `out`.
absl::Status InitInto(const std::string& out, ModelConfig config, const std::string& tokenizer_src,
                      DType dtype, uint64_t seed, bool force) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec))
      return absl::AlreadyExistsError(absl::StrCat(out, ": exists and is not a directory"));
    if (!fs::is_empty(out, ec) && !force) {
      return absl::AlreadyExistsError(
          absl::StrCat(out, ": directory is not empty (use --force to replace it)"));
    }
  }
  std::string tokenizer_json, tokenizer_config;
  if (tokenizer_src == "bytes") {
    tokenizer_json = ByteTokenizerJson().dump(2, ' ', false);
    tokenizer_config = ByteTokenizerConfigJson().dump(2, ' ', false);
  } else {
    ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadTokenizer(tokenizer_src));
    fs::path dir = fs::is_directory(tokenizer_src, ec) ? fs::path(tokenizer_src)
                                                       : fs::path(tokenizer_src).parent_path();
    std::string json_path =
        fs::is_directory(tokenizer_src, ec) ? (dir / "tokenizer.json").string() : tokenizer_src;
    ASSIGN_OR_RETURN(tokenizer_json, ReadFileToString(json_path));
    if (fs::exists(dir / "tokenizer_config.json", ec)) {
      ASSIGN_OR_RETURN(tokenizer_config,
                       ReadFileToString((dir / "tokenizer_config.json").string()));
    }
    config.vocab_size = tok->vocab_size();
    config.bos_token_id = tok->bos_id();
    config.eos_token_ids.clear();
    if (tok->eos_id() >= 0) config.eos_token_ids.push_back(tok->eos_id());
  }
  if (tokenizer_src == "bytes") {
    config.vocab_size = kByteTokenizerVocab;
    config.bos_token_id = -1;
    config.eos_token_ids = {258};  // <|im_end|>
  }
  RETURN_IF_ERROR(config.Validate("--family/--size"));

  ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out));
  const fs::path tmp = staged.path();
  RETURN_IF_ERROR(InitModelDirectory(config, tmp.string(), seed, dtype));
  RETURN_IF_ERROR(WriteFileAtomically((tmp / "tokenizer.json").string(), tokenizer_json));
  if (!tokenizer_config.empty()) {
    RETURN_IF_ERROR(
        WriteFileAtomically((tmp / "tokenizer_config.json").string(), tokenizer_config));
  }
  return staged.Commit();
}

}  // namespace

int RunInit(const Args& args, const CommandIo& io) {
  CommandSpec spec{"init", "OUT_DIR --family FAMILY --size SIZE [options]",
                   "Write a randomly initialised model (config.json, model.safetensors, tokenizer) "
                   "as a Hugging Face directory."};
  po::options_description opts("options");
  std::string out, family, size, tokenizer, dtype_name;
  uint64_t seed = 0;
  SizeOverrides sizes;
  opts.add_options()("out", po::value(&out)->required(), "output directory")(
      "family", po::value(&family)->default_value("llama"), "llama, qwen2, qwen3 or mistral")(
      "size", po::value(&size)->default_value("tiny"),
      absl::StrCat("size preset: ", absl::StrJoin(PresetSizes(), ", ")).c_str())(
      "tokenizer", po::value(&tokenizer)->default_value("bytes"),
      "\"bytes\" (built-in byte-level tokenizer with ChatML) or a tokenizer.json / model directory "
      "to copy; sets the vocabulary size")("dtype", po::value(&dtype_name)->default_value("bf16"),
                                           "weight dtype: f32, bf16, f16")(
      "hidden", po::value(&sizes.hidden),
      "override the preset's hidden size (head size = hidden / heads)")(
      "layers", po::value(&sizes.layers), "override the preset's number of layers")(
      "heads", po::value(&sizes.heads), "override the preset's attention heads")(
      "kv-heads", po::value(&sizes.kv_heads),
      "override the preset's key/value heads (default: the preset's if it divides --heads, else "
      "--heads)")("intermediate", po::value(&sizes.intermediate),
                  "override the preset's MLP intermediate size")(
      "context", po::value(&sizes.context), "override max_position_embeddings")(
      "rope-theta", po::value(&sizes.rope_theta),
      "override the RoPE base (llama preset: 500000; 10000 suits short contexts)")(
      "seed", po::value(&seed)->default_value(0), "random seed")(
      "force", po::bool_switch(), "replace OUT_DIR if it is not empty");
  po::positional_options_description pos;
  pos.add("out", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, opts, pos, vm)) return *exit;

  auto config = PresetConfig(family, size);
  if (!config.ok()) return Fail(io, spec.name, config.status());
  if (auto s = ApplySizeOverrides(sizes, &*config); !s.ok()) return Fail(io, spec.name, s);
  auto dtype = ParseWeightDType(dtype_name);
  if (!dtype.ok()) return Fail(io, spec.name, dtype.status());
  if (auto s = InitInto(out, *config, tokenizer, *dtype, seed, vm["force"].as<bool>()); !s.ok()) {
    return Fail(io, spec.name, s);
  }
  auto written =
      ModelConfig::FromJson(nlohmann::json::parse(*ReadFileToString(out + "/config.json")), out);
  *io.out << "wrote " << out << ": " << ArchClassName(config->arch) << ", "
          << HumanCount(written.ok() ? written->ParameterCount() : config->ParameterCount())
          << " parameters, " << DTypeName(*dtype) << ", vocab "
          << (written.ok() ? written->vocab_size : config->vocab_size) << "\n";
  return kExitOk;
}

}  // namespace retort::cli
