#include "model/init.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "formats/gguf.h"
#include "formats/hf_dir.h"
#include "model/gguf_model.h"
#include "model/model_files.h"
#include "model/transformer.h"
#include "text/tokenizer_bytes.h"

namespace retort {
namespace {

struct Preset {
  const char* name;
  int64_t hidden, layers, heads, kv_heads, intermediate, vocab, max_positions;
};

// head_dim = hidden / heads = 64 except tiny (16).
constexpr Preset kPresets[] = {
    {"tiny", 64, 2, 4, 2, 128, 512, 2048},        {"20m", 384, 6, 6, 2, 1024, 32000, 4096},
    {"30m", 512, 6, 8, 2, 1024, 32000, 4096},     {"100m", 768, 12, 12, 4, 2048, 32000, 4096},
    {"350m", 1024, 24, 16, 4, 3584, 32000, 4096}, {"1b", 2048, 16, 32, 8, 8192, 32000, 4096},
};

}  // namespace

std::vector<std::string> PresetSizes() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.push_back(p.name);
  return names;
}

absl::StatusOr<ModelConfig> PresetConfig(const std::string& family, const std::string& size) {
  auto arch = ParseArch(family);
  if (!arch.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown model family \"", family,
                                                   "\" (expected llama, qwen2, qwen3 or mistral)"));
  }
  const Preset* preset = nullptr;
  for (const Preset& p : kPresets) {
    if (size == p.name) preset = &p;
  }
  if (preset == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown model size \"", size,
                                                   "\" (expected one of ",
                                                   absl::StrJoin(PresetSizes(), ", "), ")"));
  }
  ModelConfig c;
  c.arch = *arch;
  c.architecture_name = ArchClassName(c.arch);
  c.vocab_size = preset->vocab;
  c.hidden_size = preset->hidden;
  c.intermediate_size = preset->intermediate;
  c.num_layers = preset->layers;
  c.num_heads = preset->heads;
  c.num_kv_heads = preset->kv_heads;
  c.head_dim = preset->hidden / preset->heads;
  c.max_position_embeddings = preset->max_positions;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = true;
  c.rope_theta = c.arch == Arch::kLlama ? 500000.0 : 1000000.0;
  switch (c.arch) {
    case Arch::kLlama:
    case Arch::kMistral:  // the Llama vocabulary: <s> = 1, </s> = 2
      c.rms_norm_eps = 1e-5;
      c.bos_token_id = 1;
      c.eos_token_ids = {2};
      break;
    case Arch::kQwen2:
      c.attention_bias = true;
      break;
    case Arch::kQwen3:
      c.qk_norm = true;
      break;
  }
  RETURN_IF_ERROR(c.Validate(absl::StrCat("preset ", family, "/", size)));
  return c;
}

absl::Status ApplySizeOverrides(const SizeOverrides& o, ModelConfig* config) {
  const std::pair<const char*, int64_t> given[] = {{"--hidden", o.hidden},
                                                   {"--layers", o.layers},
                                                   {"--heads", o.heads},
                                                   {"--kv-heads", o.kv_heads},
                                                   {"--intermediate", o.intermediate},
                                                   {"--context", o.context}};
  for (const auto& [name, value] : given) {
    if (value < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be positive, got ", value));
    }
  }
  if (o.rope_theta < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rope-theta must be positive, got ", o.rope_theta));
  }
  ModelConfig c = *config;
  if (o.rope_theta > 0) c.rope_theta = o.rope_theta;
  if (o.hidden > 0) c.hidden_size = o.hidden;
  if (o.layers > 0) c.num_layers = o.layers;
  if (o.heads > 0) c.num_heads = o.heads;
  if (o.intermediate > 0) c.intermediate_size = o.intermediate;
  if (o.context > 0) c.max_position_embeddings = o.context;
  if (o.kv_heads > 0) {
    c.num_kv_heads = o.kv_heads;
  } else if (c.num_heads % c.num_kv_heads != 0) {
    c.num_kv_heads = c.num_heads;
  }
  if (o.hidden > 0 || o.heads > 0) {
    if (c.hidden_size % c.num_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--hidden ", c.hidden_size, " is not a multiple of --heads ", c.num_heads));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--heads ", c.num_heads, " is not a multiple of --kv-heads ", c.num_kv_heads));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("head size ", c.hidden_size, " / ", c.num_heads,
                                                   " = ", c.head_dim, " must be even (RoPE)"));
  }
  RETURN_IF_ERROR(c.Validate("--hidden/--layers/--heads/--kv-heads/--intermediate/--context"));
  *config = std::move(c);
  return absl::OkStatus();
}

absl::Status InitModelDirectory(const ModelConfig& config, const std::string& dir, uint64_t seed,
                                DType dtype) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model,
                   Transformer::RandomInit(config, seed, dtype));
  return WriteHfDirectory(dir, model->config().ToJson(), model->NamedWeights());
}

absl::Status WriteInitialModel(const std::string& out, ModelConfig config,
                               const std::string& tokenizer_src, DType dtype, uint64_t seed,
                               bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec))
      return absl::AlreadyExistsError(absl::StrCat(out, ": exists and is not a directory"));
    if (!fs::is_empty(out, ec) && !force) {
      return absl::AlreadyExistsError(
          absl::StrCat(out, ": directory is not empty (use --force to replace it)"));
    }
  }
  // The tokenizer files to write: the built-in byte tokenizer, a model
  // directory's or a GGUF's (its vocabulary as tokenizer.json and
  // tokenizer_config.json, never the GGUF's bytes), or a tokenizer.json with
  // the tokenizer_config.json beside it.
  std::vector<std::pair<std::string, std::string>> files;
  if (tokenizer_src == "bytes") {
    files = {{"tokenizer.json", ByteTokenizerJson().dump(2, ' ', false)},
             {"tokenizer_config.json", ByteTokenizerConfigJson().dump(2, ' ', false)}};
    config.vocab_size = kByteTokenizerVocab;
    config.bos_token_id = -1;
    config.eos_token_ids = {258};  // <|im_end|>
  } else {
    ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadTokenizer(tokenizer_src));
    config.vocab_size = tok->vocab_size();
    config.bos_token_id = tok->bos_id();
    config.eos_token_ids.clear();
    if (tok->eos_id() >= 0) config.eos_token_ids.push_back(tok->eos_id());
    if (fs::is_directory(tokenizer_src, ec) || IsGgufFile(tokenizer_src)) {
      ASSIGN_OR_RETURN(files, TokenizerFiles(tokenizer_src));
      // The tokenizer's files only: a new model has no generation defaults.
      std::erase_if(files, [](const auto& f) { return f.first == "generation_config.json"; });
    } else {
      ASSIGN_OR_RETURN(std::string json, ReadFileToString(tokenizer_src));
      files.emplace_back("tokenizer.json", std::move(json));
      const fs::path beside = fs::path(tokenizer_src).parent_path() / "tokenizer_config.json";
      if (fs::exists(beside, ec)) {
        ASSIGN_OR_RETURN(std::string tc, ReadFileToString(beside.string()));
        files.emplace_back("tokenizer_config.json", std::move(tc));
      }
    }
  }
  RETURN_IF_ERROR(config.Validate("--family/--size"));

  ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out));
  const fs::path tmp = staged.path();
  RETURN_IF_ERROR(InitModelDirectory(config, tmp.string(), seed, dtype));
  for (const auto& [name, contents] : files) {
    RETURN_IF_ERROR(WriteFileAtomically((tmp / name).string(), contents));
  }
  return staged.Commit();
}

}  // namespace retort
