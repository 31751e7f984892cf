#include "model/calibration.h"

#include <cmath>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/status.h"
#include "formats/traces.h"
#include "model/model_files.h"

namespace retort {
namespace {

std::string SampleText(const TraceSample& sample) {
  std::string text;
  auto add = [&](const std::string& piece) {
    if (piece.empty()) return;
    if (!text.empty()) text += "\n\n";
    text += piece;
  };
  for (const TraceMessage& m : sample.messages) {
    add(m.reasoning_content);
    add(m.content);
  }
  return text;
}

constexpr int64_t kMinRecordTokens = 16;

}  // namespace

int64_t CountTokens(const std::vector<std::vector<int32_t>>& samples) {
  int64_t n = 0;
  for (const auto& s : samples) n += static_cast<int64_t>(s.size());
  return n;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> LoadCalibrationSamples(
    const std::vector<std::string>& paths, const Tokenizer& tokenizer, int64_t vocab_size,
    const CalibrationOptions& options) {
  if (options.samples < 1 || options.seq_len < 2) {
    return absl::InvalidArgumentError(absl::StrCat("calibration: ", options.samples, " samples of ",
                                                   options.seq_len,
                                                   " tokens (need >= 1 sample of >= 2 tokens)"));
  }
  if (paths.empty()) return absl::InvalidArgumentError("calibration: no data files given");
  std::vector<std::vector<int32_t>> out;
  std::string text;  // plain text files, concatenated
  std::vector<std::string> text_files;
  auto full = [&] { return static_cast<int64_t>(out.size()) >= options.samples; };
  auto truncate = [&](std::vector<int32_t> ids) {
    if (static_cast<int64_t>(ids.size()) > options.seq_len) ids.resize(options.seq_len);
    return ids;
  };
  for (const std::string& path : paths) {
    if (absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json")) {
      ASSIGN_OR_RETURN(std::vector<TraceSample> records, ReadTraceJsonl(path));
      for (const TraceSample& r : records) {
        if (full()) break;
        std::vector<int32_t> ids = tokenizer.Encode(SampleText(r), true);
        if (static_cast<int64_t>(ids.size()) < kMinRecordTokens) continue;
        out.push_back(truncate(std::move(ids)));
      }
    } else if (StartsLikeTraceShard(path)) {
      ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(path));
      TraceTokens rec;
      while (!full()) {
        ASSIGN_OR_RETURN(bool more, reader.Next(&rec));
        if (!more) break;
        std::vector<int32_t> ids = rec.prompt_ids;
        ids.insert(ids.end(), rec.completion_ids.begin(), rec.completion_ids.end());
        for (int32_t id : ids) {
          if (id < 0 || id >= vocab_size) {
            return absl::InvalidArgumentError(
                absl::StrCat(path, ": record ", rec.id, " has token id ", id,
                             " outside the model's vocabulary of ", vocab_size,
                             " (a shard written with another tokenizer?)"));
          }
        }
        if (static_cast<int64_t>(ids.size()) < kMinRecordTokens) continue;
        out.push_back(truncate(std::move(ids)));
      }
    } else {
      ASSIGN_OR_RETURN(std::string t, ReadFileToString(path));
      if (!text.empty() && !t.empty()) text += "\n\n";
      text += t;
      text_files.push_back(path);
    }
  }
  if (!full() && !text.empty()) {
    // One tokenization of all text, cut into consecutive chunks; each chunk
    // gets the BOS a fresh sequence would start with.
    const std::vector<int32_t> bos_probe = tokenizer.Encode("", true);
    const bool bos = !bos_probe.empty();
    const std::vector<int32_t> ids = tokenizer.Encode(text, false);
    const int64_t body = options.seq_len - (bos ? 1 : 0);
    for (int64_t begin = 0; begin + body <= static_cast<int64_t>(ids.size()) && !full();
         begin += body) {
      std::vector<int32_t> chunk;
      chunk.reserve(options.seq_len);
      if (bos) chunk.push_back(bos_probe[0]);
      chunk.insert(chunk.end(), ids.begin() + begin, ids.begin() + begin + body);
      out.push_back(std::move(chunk));
    }
    if (out.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "calibration: ", text_files.front(), (text_files.size() > 1 ? " and others" : ""),
          " hold ", ids.size(), " tokens, fewer than one sample of ", options.seq_len,
          " (use more text or a smaller --calib-seq-len)"));
    }
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration: no usable samples in ", paths.front(),
                     (paths.size() > 1 ? " and the other files" : ""),
                     " (records need >= ", kMinRecordTokens, " tokens)"));
  }
  return out;
}

absl::StatusOr<LayerwiseRunner> LayerwiseRunner::Start(const Transformer& model,
                                                       std::vector<std::vector<int32_t>> samples) {
  if (samples.empty()) return absl::InvalidArgumentError("LayerwiseRunner: no samples");
  int64_t longest = 0;
  for (const auto& s : samples) {
    if (s.empty()) return absl::InvalidArgumentError("LayerwiseRunner: an empty sample");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
  }
  LayerwiseRunner runner(model, model.NewCache(longest));
  const int64_t H = model.config().hidden_size;
  runner.hidden_.resize(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const int64_t n = static_cast<int64_t>(samples[i].size());
    runner.hidden_[i].resize(n * H);
    RETURN_IF_ERROR(model.Embed(samples[i].data(), n, runner.hidden_[i].data()));
    runner.tokens_ += n;
  }
  runner.samples_ = std::move(samples);
  return runner;
}

absl::Status LayerwiseRunner::RunLayer(bool keep_output, const LinearInputObserver* observe,
                                       double* cos_sum) {
  if (layer_ >= model_->config().num_layers) {
    return absl::FailedPreconditionError("LayerwiseRunner: every layer has run");
  }
  const int64_t H = model_->config().hidden_size;
  std::vector<float> work;
  for (auto& h : hidden_) {
    const int64_t n = static_cast<int64_t>(h.size()) / H;
    work = h;
    RETURN_IF_ERROR(model_->ForwardLayer(layer_, work.data(), n, cache_, observe));
    if (cos_sum != nullptr) {
      for (int64_t t = 0; t < n; ++t) {
        double dot = 0, a2 = 0, b2 = 0;
        for (int64_t j = 0; j < H; ++j) {
          const double a = h[t * H + j], b = work[t * H + j];
          dot += a * b;
          a2 += a * a;
          b2 += b * b;
        }
        *cos_sum += a2 > 0 && b2 > 0 ? dot / std::sqrt(a2 * b2) : 1.0;
      }
    }
    if (keep_output) h.swap(work);
  }
  return absl::OkStatus();
}

absl::Status LayerwiseRunner::Observe(const LinearInputObserver& observe) {
  return RunLayer(false, &observe, nullptr);
}

absl::StatusOr<double> LayerwiseRunner::Advance(const LinearInputObserver* observe) {
  double cos_sum = 0;
  RETURN_IF_ERROR(RunLayer(true, observe, &cos_sum));
  ++layer_;
  return cos_sum / static_cast<double>(tokens_);
}

absl::StatusOr<std::vector<std::vector<int32_t>>> LoadModelCalibration(
    const std::string& model_path, int64_t vocab_size, const CalibrationFiles& calib,
    ProgressSink& progress) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadTokenizer(model_path));
  ASSIGN_OR_RETURN(auto samples,
                   LoadCalibrationSamples(calib.files, *tok, vocab_size, calib.options));
  progress.Line(
      absl::StrFormat("[calib] %d samples, %d tokens", samples.size(), CountTokens(samples)));
  return samples;
}

}  // namespace retort
