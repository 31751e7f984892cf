// retort convert IN OUT [--to gguf|hf] [--type PRESET] [--dtype DTYPE] [--pre NAME]
//
// HF directory -> GGUF: the metadata, tensor names, llama q/k row order and
// per-tensor types of llama.cpp's convert_hf_to_gguf + llama-quantize.
// GGUF -> HF directory: weights dequantized to --dtype, q/k rows back in HF
// order, config.json, tokenizer.json rebuilt from the GGUF vocabulary,
// tokenizer_config.json with the chat template.
// Quantized HF checkpoint -> plain HF directory (--to hf): compressed-tensors,
// GPTQ, AWQ and DeepSeek-V3/R1 FP8 block weights dequantized to --dtype.
// Memory: the input is memory-mapped; only the converted output is held (a
// tensor already in the target type is written straight from the mapping).
#include <chrono>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "quantize/model_convert.h"

namespace retort::cli {

int RunConvert(const Args& args, const CommandIo& io) {
  CommandSpec spec{
      "convert", "IN OUT [--to gguf|hf] [--type TYPE] [--dtype DTYPE] [options]",
      "Convert an HF directory to a GGUF file (llama.cpp's names, layouts, metadata and "
      "quantization presets), a GGUF file to an HF directory (dequantized), or a quantized HF "
      "checkpoint (compressed-tensors, GPTQ, AWQ, DeepSeek FP8 blocks) to a plain one (--to hf)."};
  spec.default_model = true;
  po::options_description opts("options");
  std::string in, out, to, type = "f16", dtype = "auto", pre, name;
  int threads = 0;
  opts.add_options()("in", po::value(&in)->required(), "HF model directory or .gguf file")(
      "out", po::value(&out)->required(), "output .gguf file or HF directory")(
      "to", po::value(&to), "gguf or hf (default: the other format than IN)")(
      "type", po::value(&type)->default_value("f16"),
      "GGUF tensor types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k")(
      "dtype", po::value(&dtype)->default_value("auto"),
      "HF weight dtype: f32, bf16, f16, auto (the GGUF's float type, else bf16)")(
      "pre", po::value(&pre), "tokenizer.ggml.pre name (default: recognised from tokenizer.json)")(
      "name", po::value(&name), "general.name (default: the input folder's name)")(
      "verbose", po::bool_switch(), "print every tensor's type")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  po::positional_options_description pos;
  pos.add("in", 1).add("out", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, opts, pos, vm)) return *exit;
  if (threads > 0) SetNumThreads(threads);
  const bool in_gguf = quant::IsGgufInput(in);
  if (to.empty()) to = in_gguf ? "hf" : "gguf";
  quant::ConvertOptions o;
  o.in = in;
  o.out = out;
  o.dtype = dtype;
  if (to == "gguf") {
    if (in_gguf) return UsageError(io, spec.name, "IN is already a GGUF file (use --to hf)");
    auto preset = ParseGgufPreset(type);
    if (!preset.ok()) return UsageError(io, spec.name, std::string(preset.status().message()));
    o.preset = *preset;
    o.pre = pre;
    o.name = name;
    o.verbose = vm["verbose"].as<bool>();
  } else if (to == "hf") {
    std::error_code ec;
    if (!in_gguf && !std::filesystem::is_directory(in, ec)) {
      return UsageError(io, spec.name, absl::StrCat(in, " is neither a GGUF file nor a directory"));
    }
    o.to = quant::ConvertTarget::kHf;
  } else {
    return UsageError(io, spec.name, "--to must be gguf or hf");
  }
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<quant::ConvertStats> stats = quant::ConvertModel(o, *io.progress);
  if (!stats.ok()) return Fail(io, spec.name, stats.status());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  *io.out << absl::StrFormat(
      "wrote %s: %d tensors, %s parameters, %s (%.2f bits per weight) in %.1f s\n", out,
      stats->tensors, HumanCount(stats->params), HumanBytes(stats->bytes),
      stats->params > 0 ? 8.0 * stats->bytes / stats->params : 0.0, secs);
  return kExitOk;
}

}  // namespace retort::cli
