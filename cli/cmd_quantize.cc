// retort quantize MODEL OUT [--scheme S] [--method rtn|gptq|awq] [--calib FILE ...]
//                           [--to ct|gguf] [--type PRESET] [--imatrix FILE] [options]
// retort calibrate MODEL --calib FILE ... -o imatrix.gguf
//
// `quantize` to compressed-tensors (the default; what vLLM loads): the
// model's linears become QuantizedMatrix weights (quantize/model_quantizer.h)
// and are packed with formats/compressed_tensors.h; everything else is
// written in the model's float dtype with config.json + quantization_config
// and the tokenizer files. To GGUF: llama.cpp's k-quant presets, weighted by
// an importance matrix from `retort calibrate` when --imatrix is given.
// Nothing is written until everything has succeeded: the output directory is
// built under a temporary name beside OUT and renamed into place.
#include <chrono>
#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/calibration_args.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/process.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "quantize/quantize_job.h"

namespace retort::cli {
namespace fs = std::filesystem;

int RunQuantize(const Args& args, const CommandIo& io) {
  CommandSpec spec{
      "quantize", "MODEL OUT [--scheme S] [--method rtn|gptq|awq] [--calib FILE ...] [options]",
      "Quantize a model's linear layers (RTN, GPTQ, AWQ; int4/int8/fp8) into a compressed-tensors "
      "directory, or into GGUF k-quants weighted by an importance matrix."};
  spec.default_model = true;
  spec.device = true;
  po::options_description opts("options");
  std::string model_path, out, scheme_name = "int4-g128", method_name = "rtn", to, type, imatrix,
                               activations = "none";
  quant::QuantizeJobOptions job;
  quant::ModelQuantOptions& o = job.quant;
  CalibrationFiles& calib = job.calib;
  int threads = 0;
  opts.add_options()("model", po::value(&model_path)->required(), "HF directory or .gguf file")(
      "out", po::value(&out)->required(), "output HF directory (compressed-tensors) or .gguf file")(
      "scheme", po::value(&scheme_name)->default_value("int4-g128"),
      "int4-g32/g64/g128[-asym], int8-channel, fp8-channel, fp8-tensor, fp8-block128, ...")(
      "method", po::value(&method_name)->default_value("rtn"), "rtn, gptq or awq")(
      "act-order", po::bool_switch(&o.gptq.act_order),
      "GPTQ: quantize columns by descending "
      "Hessian diagonal (writes g_idx)")(
      "static-groups", po::bool_switch(&o.gptq.static_groups),
      "GPTQ act-order with groups fixed before reordering (no g_idx)")(
      "dampening", po::value(&o.gptq.dampening)->default_value(0.01),
      "GPTQ: fraction of the mean Hessian diagonal added to it")(
      "gptq-block", po::value(&o.gptq.block_size)->default_value(128), "GPTQ lazy-batch width")(
      "awq-grid", po::value(&o.awq.grid)->default_value(20), "AWQ: scale search grid points")(
      "awq-tokens", po::value(&o.awq_search_tokens)->default_value(4096),
      "AWQ: calibration tokens kept per layer input for the scale search")(
      "awq-clip-tokens", po::value(&o.awq.max_tokens)->default_value(512),
      "AWQ: tokens the weight-clipping search uses")(
      "activations", po::value(&activations)->default_value("none"),
      "fp8: activation scales for runtimes: none, dynamic (per token) or static (calibrated)")(
      "quantize-lm-head", po::bool_switch(&o.quantize_lm_head),
      "quantize an untied lm_head too (RTN)")(
      "allow-requantize", po::bool_switch(&o.allow_requantize),
      "accept weights that are already quantized (GGUF blocks): dequantize, then quantize")(
      "to", po::value(&to), "ct (compressed-tensors directory) or gguf (default: from OUT's name)")(
      "type", po::value(&type)->default_value("q4_k_m"),
      "--to gguf: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k, ...")(
      "imatrix", po::value(&imatrix), "--to gguf: importance matrix from `retort calibrate`")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  AddCalibOptions(opts, calib);
  po::positional_options_description pos;
  pos.add("model", 1).add("out", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, opts, pos, vm)) return *exit;
  if (threads > 0) SetNumThreads(threads);
  if (to.empty()) to = absl::EndsWith(out, ".gguf") ? "gguf" : "ct";

  if (to == "gguf") {
    if (vm.count("method") && !vm["method"].defaulted()) {
      return UsageError(spec.name,
                        "--method applies to compressed-tensors output; GGUF k-quants "
                        "use --type and optionally --imatrix");
    }
    std::error_code ec;
    if (!fs::is_directory(model_path, ec)) {
      return UsageError(spec.name,
                        "--to gguf reads an HF directory (convert a GGUF with "
                        "`retort convert MODEL.gguf DIR --to hf` first)");
    }
    auto preset = ParseGgufPreset(type);
    if (!preset.ok()) return UsageError(io, spec.name, std::string(preset.status().message()));
    job.model_path = model_path;
    job.out = out;
    job.to_gguf = true;
    job.preset = *preset;
    job.imatrix = imatrix;
    auto r = quant::QuantizeToDirectory(job, *io.progress);
    if (!r.ok()) return Fail(io, spec.name, r.status());
    *io.out << absl::StrFormat(
        "wrote %s: %s (%s), %d tensors, %s parameters, %s (%.2f bits per weight) in %.1f s\n", out,
        GgufPresetName(*preset),
        r->with_imatrix ? "with importance matrix" : "no importance matrix", r->tensors,
        HumanCount(r->params), HumanBytes(r->bytes),
        r->params > 0 ? 8.0 * r->bytes / r->params : 0.0, r->seconds);
    return kExitOk;
  }
  if (to != "ct") return UsageError(io, spec.name, "--to must be ct or gguf");
  if (!imatrix.empty()) return UsageError(io, spec.name, "--imatrix is for --to gguf");

  auto scheme = quant::ParseQuantScheme(scheme_name);
  if (!scheme.ok()) return UsageError(io, spec.name, std::string(scheme.status().message()));
  o.scheme = *scheme;
  auto method = quant::ParseQuantMethod(method_name);
  if (!method.ok()) return UsageError(io, spec.name, std::string(method.status().message()));
  o.method = *method;
  if (activations == "none") {
    o.activations = quant::ActivationScales::kNone;
  } else if (activations == "dynamic") {
    o.activations = quant::ActivationScales::kDynamic;
  } else if (activations == "static") {
    o.activations = quant::ActivationScales::kStatic;
  } else {
    return UsageError(io, spec.name, "--activations must be none, dynamic or static");
  }
  if (o.scheme.value_type == DType::kF8E5M2) {
    return UsageError(io, spec.name, "compressed-tensors stores fp8 weights as e4m3; use fp8-*");
  }
  if (quant::NeedsCalibration(o) && calib.files.empty()) {
    return UsageError(
        io, spec.name,
        absl::StrCat(quant::QuantMethodName(o.method), " needs calibration data: --calib FILE"));
  }
  job.model_path = model_path;
  job.out = out;
  auto r = quant::QuantizeToDirectory(job, *io.progress);
  if (!r.ok()) return Fail(io, spec.name, r.status());
  *io.out << absl::StrFormat(
      "wrote %s: %s %s (compressed-tensors), %s parameters, %s (%.2f bits per weight); "
      "quantized in %.1f s (%.2f s per layer), peak RSS %s\n",
      out, o.scheme.Name(), quant::QuantMethodName(o.method), HumanCount(r->params),
      HumanBytes(r->bytes), r->params > 0 ? 8.0 * r->bytes / r->params : 0.0, r->seconds,
      r->mean_layer_seconds, HumanBytes(static_cast<double>(PeakRssBytes())));
  return kExitOk;
}

int RunCalibrate(const Args& args, const CommandIo& io) {
  CommandSpec spec{"calibrate", "MODEL --calib FILE ... -o IMATRIX.gguf [options]",
                   "Compute an importance matrix (llama.cpp's GGUF imatrix format) for "
                   "`retort quantize --to gguf --imatrix`."};
  spec.default_model = true;
  spec.device = true;
  po::options_description opts("options");
  std::string model_path, out;
  CalibrationFiles calib;
  int threads = 0;
  opts.add_options()("model", po::value(&model_path)->required(), "HF directory or .gguf file")(
      "output,o", po::value(&out)->required(), "imatrix file to write (.gguf)")(
      "threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  AddCalibOptions(opts, calib);
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, opts, pos, vm)) return *exit;
  if (threads > 0) SetNumThreads(threads);
  if (calib.files.empty()) return UsageError(io, spec.name, "give calibration data: --calib FILE");
  auto r = quant::CalibrateImportance(model_path, calib, out, *io.progress);
  if (!r.ok()) return Fail(io, spec.name, r.status());
  *io.out << absl::StrFormat("wrote %s: %d weights, %d samples x %d tokens in %.1f s\n", out,
                             r->weights, r->chunks, r->chunk_size, r->seconds);
  return kExitOk;
}

}  // namespace retort::cli
