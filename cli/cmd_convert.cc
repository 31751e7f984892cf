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

#include "cli/cli_util.h"
#include "cli/commands.h"

namespace retort::cli {

int RunConvert(const Args& args, const CommandIo& io) {
  CommandSpec spec{
      .name = "convert",
      .usage = "IN OUT [--to gguf|hf] [--type TYPE] [--dtype DTYPE] [--force] [options]",
      .summary =
          "Convert an HF directory to a GGUF file (llama.cpp's names, layouts, metadata and "
          "quantization presets), a GGUF file to an HF directory (dequantized), or a quantized HF "
          "checkpoint (compressed-tensors, GPTQ, AWQ, DeepSeek FP8 blocks) to a plain one (--to "
          "hf).",
      .default_model = true};
  return RunJobCommand(io, spec, *pipeline::NewConvertJob(), args);
}

}  // namespace retort::cli
