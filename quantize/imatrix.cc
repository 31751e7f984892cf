#include "quantize/imatrix.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "formats/gguf.h"
#include "model/calibration.h"
#include "model/gguf_model.h"

namespace retort::quant {
namespace {

constexpr char kSum2[] = ".in_sum2";
constexpr char kCounts[] = ".counts";

// The linears reading each observed input.
std::vector<LinearSlot> Readers(LinearSlot input) {
  switch (input) {
    case LinearSlot::kQ:
      return {LinearSlot::kQ, LinearSlot::kK, LinearSlot::kV};
    case LinearSlot::kGate:
      return {LinearSlot::kGate, LinearSlot::kUp};
    default:
      return {input};
  }
}

}  // namespace

std::vector<float> ImportanceMatrix::Importance(const std::string& name) const {
  auto it = entries.find(name);
  if (it == entries.end() || it->second.count <= 0) return {};
  std::vector<float> out(it->second.sum2.size());
  for (size_t j = 0; j < out.size(); ++j) {
    out[j] = static_cast<float>(it->second.sum2[j] / it->second.count);
  }
  return out;
}

absl::StatusOr<ImportanceMatrix> CollectImportance(
    const Transformer& model, const std::vector<std::vector<int32_t>>& samples,
    const std::function<void(int64_t, int64_t)>& progress) {
  ASSIGN_OR_RETURN(LayerwiseRunner runner, LayerwiseRunner::Start(model, samples));
  ImportanceMatrix m;
  m.chunk_count = static_cast<int64_t>(samples.size());
  for (const auto& s : samples) {
    m.chunk_size = std::max<int64_t>(m.chunk_size, static_cast<int64_t>(s.size()));
  }
  const int64_t layers = model.config().num_layers;
  for (int64_t l = 0; l < layers; ++l) {
    std::map<LinearSlot, ImportanceMatrix::Entry> sums;
    LinearInputObserver observe = [&](LinearSlot slot, const float* x, int64_t rows, int64_t cols) {
      ImportanceMatrix::Entry& e = sums[slot];
      e.sum2.resize(cols, 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < cols; ++j) {
          const double v = x[r * cols + j];
          e.sum2[j] += v * v;
        }
      }
      e.count += static_cast<double>(rows);
    };
    RETURN_IF_ERROR(runner.Advance(&observe).status());
    for (auto& [input, e] : sums) {
      for (LinearSlot reader : Readers(input)) {
        ASSIGN_OR_RETURN(std::string name, GgufTensorName(LinearWeightName(l, reader)));
        m.entries[name] = e;
      }
    }
    if (progress) progress(l + 1, layers);
  }
  return m;
}

absl::Status WriteImportanceMatrix(const ImportanceMatrix& m, const std::string& path) {
  GgufWriter writer;
  writer.AddMetadata("general.type", GgufValue::String("imatrix"));
  writer.AddMetadata("imatrix.datasets", GgufValue::StringArray(m.datasets));
  writer.AddMetadata("imatrix.chunk_count", GgufValue::U32(static_cast<uint32_t>(m.chunk_count)));
  writer.AddMetadata("imatrix.chunk_size", GgufValue::U32(static_cast<uint32_t>(m.chunk_size)));
  for (const auto& [name, e] : m.entries) {
    const int64_t cols = static_cast<int64_t>(e.sum2.size());
    Tensor sum2 = Tensor::Zeros(DType::kF32, {1, cols});
    for (int64_t j = 0; j < cols; ++j)
      sum2.mutable_data<float>()[j] = static_cast<float>(e.sum2[j]);
    Tensor count = Tensor::Zeros(DType::kF32, {1, 1});
    count.mutable_data<float>()[0] = static_cast<float>(e.count);
    RETURN_IF_ERROR(writer.AddTensor(name + kSum2, sum2));
    RETURN_IF_ERROR(writer.AddTensor(name + kCounts, count));
  }
  return writer.Write(path);
}

absl::StatusOr<ImportanceMatrix> ReadImportanceMatrix(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufReader> reader, GgufReader::Open(path));
  auto type = reader->GetString("general.type");
  if (!type.ok() || *type != "imatrix") {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": not an importance matrix (general.type is not \"imatrix\"; the legacy .dat "
                     "format is not read: convert it with llama-imatrix --output-format gguf)"));
  }
  ImportanceMatrix m;
  if (reader->Find("imatrix.datasets") != nullptr) {
    ASSIGN_OR_RETURN(m.datasets, reader->GetStringArray("imatrix.datasets"));
  }
  if (reader->Find("imatrix.chunk_count") != nullptr) {
    ASSIGN_OR_RETURN(m.chunk_count, reader->GetInt("imatrix.chunk_count"));
  }
  if (reader->Find("imatrix.chunk_size") != nullptr) {
    ASSIGN_OR_RETURN(m.chunk_size, reader->GetInt("imatrix.chunk_size"));
  }
  for (const GgufTensorInfo& info : reader->tensors()) {
    if (!absl::EndsWith(info.name, kSum2)) continue;
    const std::string name = info.name.substr(0, info.name.size() - sizeof(kSum2) + 1);
    ASSIGN_OR_RETURN(Tensor sum2, reader->Get(info.name));
    auto counts = reader->Get(name + kCounts);
    if (!counts.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", info.name, " has no matching ", name, kCounts));
    }
    if (sum2.dtype() != DType::kF32 || counts->dtype() != DType::kF32 || counts->numel() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", name, ": in_sum2 and counts must be F32"));
    }
    if (counts->numel() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", name, " has ", counts->numel(),
                       " counts (a mixture-of-experts imatrix); dense models have one"));
    }
    ImportanceMatrix::Entry e;
    e.count = counts->data<float>()[0];
    e.sum2.assign(sum2.data<float>(), sum2.data<float>() + sum2.numel());
    for (double v : e.sum2) {
      if (!(v >= 0) || !std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": ", name, ".in_sum2 holds a negative or non-finite value"));
      }
    }
    m.entries[name] = std::move(e);
  }
  if (m.entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no <name>.in_sum2 tensors"));
  }
  return m;
}

}  // namespace retort::quant
