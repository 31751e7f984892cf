#include "formats/trace_shards.h"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/status.h"
#include "core/utf8.h"
#include "formats/proto/trace.pb.h"
#include "formats/varint.h"

namespace retort {

// ---- public: shard writer ----------------------------------------------------------

namespace {

absl::Status ErrnoStatus(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

absl::Status RecordError(const TraceTokens& r, const std::string& problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("trace record \"", r.id, "\" sample ", r.sample, ": ", problem));
}

}  // namespace

absl::StatusOr<TraceShardWriter> TraceShardWriter::Open(const std::string& path, bool append,
                                                        TopKEncoding encoding, int zstd_level) {
  if (absl::Status st = ValidateTopKEncoding(encoding); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  TraceShardWriter w;
  w.path_ = path;
  w.encoding_ = encoding;
  w.zstd_level_ = zstd_level;
  if (append && ::access(path.c_str(), F_OK) == 0) {
    ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(path));
    while (true) {
      TraceTokens scratch;
      absl::StatusOr<bool> more = reader.Next(&scratch);
      if (!more.ok()) {
        if (!absl::IsDataLoss(more.status())) return more.status();
        break;
      }
      if (!*more) break;
    }
    const int64_t keep = reader.valid_bytes();
    w.truncated_bytes_ = reader.file_bytes() - keep;
    if (w.truncated_bytes_ > 0 && ::truncate(path.c_str(), keep) != 0) {
      return ErrnoStatus(path, "cannot cut the damaged tail");
    }
  }
  w.file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  if (w.file_ == nullptr) return ErrnoStatus(path, "cannot open for writing");
  return w;
}

TraceShardWriter::TraceShardWriter(TraceShardWriter&& other) noexcept { *this = std::move(other); }

TraceShardWriter& TraceShardWriter::operator=(TraceShardWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) (void)Close();
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, nullptr);
    encoding_ = other.encoding_;
    zstd_level_ = other.zstd_level_;
    pending_ = std::move(other.pending_);
    other.pending_.clear();
    records_ = other.records_;
    truncated_bytes_ = other.truncated_bytes_;
  }
  return *this;
}

TraceShardWriter::~TraceShardWriter() {
  if (file_ != nullptr) (void)Close();
}

absl::Status TraceShardWriter::Append(const TraceTokens& r) {
  if (file_ == nullptr)
    return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is closed"));
  const int64_t completion = static_cast<int64_t>(r.completion_ids.size());
  if (r.top_k < 0) return RecordError(r, absl::StrCat("top_k ", r.top_k, " < 0"));
  const uint64_t topk_n = static_cast<uint64_t>(completion) * static_cast<uint64_t>(r.top_k);
  if (r.topk_ids.size() != topk_n || r.topk_logprobs.size() != topk_n) {
    return RecordError(r, absl::StrCat("expected completion ", completion, " x top_k ", r.top_k,
                                       " = ", topk_n, " top-k ids and log-probs, got ",
                                       r.topk_ids.size(), " and ", r.topk_logprobs.size()));
  }
  if (!r.sampled_logprobs.empty() &&
      static_cast<int64_t>(r.sampled_logprobs.size()) != completion) {
    return RecordError(r,
                       absl::StrCat("expected ", completion, " sampled log-probs (or none), got ",
                                    r.sampled_logprobs.size()));
  }
  if (const size_t bad = ValidUtf8Prefix(r.id); bad < r.id.size()) {
    return RecordError(r, absl::StrCat("id is not UTF-8 (byte ", bad, ")"));
  }
  proto::TraceTokens msg;
  msg.set_id(r.id);
  msg.set_sample(r.sample);
  msg.mutable_prompt_ids()->Add(r.prompt_ids.begin(), r.prompt_ids.end());
  msg.mutable_completion_ids()->Add(r.completion_ids.begin(), r.completion_ids.end());
  msg.set_top_k(r.top_k);
  if (r.top_k > 0 && completion > 0) {
    absl::StatusOr<std::string> topk =
        EncodeTopK(r.topk_ids, r.topk_logprobs, completion, r.top_k, encoding_);
    if (!topk.ok()) return RecordError(r, std::string(topk.status().message()));
    msg.set_topk_encoded(std::move(*topk));
  }
  msg.mutable_sampled_logprobs()->Add(r.sampled_logprobs.begin(), r.sampled_logprobs.end());
  std::string bytes;
  if (!msg.SerializeToString(&bytes)) return RecordError(r, "protobuf serialisation failed");
  PutVarint(bytes.size(), &pending_);
  pending_ += bytes;
  ++records_;
  if (pending_.size() >= kAutoFrameBytes) return WriteFrame();
  return absl::OkStatus();
}

absl::Status TraceShardWriter::WriteFrame() {
  if (pending_.empty()) return absl::OkStatus();
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (cctx == nullptr)
    return absl::ResourceExhaustedError(absl::StrCat(path_, ": cannot create a zstd context"));
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, zstd_level_);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  std::string frame(ZSTD_compressBound(pending_.size()), '\0');
  const size_t n =
      ZSTD_compress2(cctx.get(), frame.data(), frame.size(), pending_.data(), pending_.size());
  if (ZSTD_isError(n)) {
    return absl::InternalError(
        absl::StrCat(path_, ": zstd compression failed: ", ZSTD_getErrorName(n)));
  }
  const long before = std::ftell(file_);
  if (std::fwrite(frame.data(), 1, n, file_) != n || std::fflush(file_) != 0) {
    absl::Status err = ErrnoStatus(path_, "write failed");
    // Leave the file at its last whole frame if we can.
    if (before >= 0 && ::ftruncate(::fileno(file_), before) == 0) std::clearerr(file_);
    return err;
  }
  pending_.clear();
  return absl::OkStatus();
}

absl::Status TraceShardWriter::Commit() {
  if (file_ == nullptr)
    return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is closed"));
  RETURN_IF_ERROR(WriteFrame());
  if (::fsync(::fileno(file_)) != 0) return ErrnoStatus(path_, "fsync failed");
  return absl::OkStatus();
}

absl::Status TraceShardWriter::Close() {
  if (file_ == nullptr) return absl::OkStatus();
  absl::Status status = Commit();
  if (std::fclose(file_) != 0 && status.ok()) status = ErrnoStatus(path_, "close failed");
  file_ = nullptr;
  return status;
}

// ---- public: shard reader ----------------------------------------------------------

absl::StatusOr<TraceShardReader> TraceShardReader::Open(const std::string& path) {
  TraceShardReader r;
  r.path_ = path;
  ASSIGN_OR_RETURN(r.file_, MappedFile::Open(path));
  return r;
}

TraceShardReader::TraceShardReader(TraceShardReader&&) noexcept = default;
TraceShardReader& TraceShardReader::operator=(TraceShardReader&&) noexcept = default;
TraceShardReader::~TraceShardReader() = default;

int64_t TraceShardReader::file_bytes() const {
  return file_ ? static_cast<int64_t>(file_->size()) : 0;
}

absl::StatusOr<bool> TraceShardReader::LoadNextFrame() {
  const int64_t size = file_bytes();
  frame_.clear();
  frame_pos_ = 0;
  if (frame_offset_ >= size) return false;
  const uint8_t* src = file_->data() + frame_offset_;
  const size_t avail = static_cast<size_t>(size - frame_offset_);
  auto damaged = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(
        path_, ": truncated or corrupt zstd frame at byte ", frame_offset_, " of ", size, " (", why,
        "); the first ", valid_bytes_, " bytes hold ", records_read_, " complete records"));
  };
  const size_t compressed = ZSTD_findFrameCompressedSize(src, avail);
  if (ZSTD_isError(compressed)) return damaged(ZSTD_getErrorName(compressed));
  const unsigned long long content = ZSTD_getFrameContentSize(src, avail);
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
    return damaged("frame without a content size");
  }
  // A damaged header must not make us allocate: every zstd block holds at
  // most 128 KiB and costs at least a 3-byte header.
  if (content > (compressed / 3 + 1) * (128ull << 10)) {
    return damaged(
        absl::StrCat("content size ", content, " impossible for ", compressed, " bytes"));
  }
  // Decompress aside: frame_ only ever holds a verified frame.
  std::string frame(content, '\0');
  const size_t got = ZSTD_decompress(frame.data(), frame.size(), src, compressed);
  if (ZSTD_isError(got)) return damaged(ZSTD_getErrorName(got));
  if (got != content) return damaged("content size mismatch");
  // The frame must be whole records.
  std::string_view rest(frame);
  while (!rest.empty()) {
    uint64_t len;
    if (!GetVarint(&rest, &len) || len > rest.size()) return damaged("frame ends inside a record");
    rest.remove_prefix(len);
  }
  frame_ = std::move(frame);
  frame_start_ = frame_offset_;
  frame_offset_ += static_cast<int64_t>(compressed);
  ++frames_read_;
  valid_bytes_ = frame_offset_;
  return true;
}

absl::StatusOr<bool> TraceShardReader::Next(TraceTokens* record) {
  while (frame_pos_ >= frame_.size()) {
    if (done_) return false;
    absl::StatusOr<bool> loaded = LoadNextFrame();
    if (!loaded.ok()) {
      done_ = true;
      tail_status_ = loaded.status();
      return loaded.status();
    }
    if (!*loaded) {
      done_ = true;
      return false;
    }
  }
  std::string_view rest(frame_);
  rest.remove_prefix(frame_pos_);
  uint64_t len = 0;
  GetVarint(&rest, &len);  // checked in LoadNextFrame
  const std::string_view bytes = rest.substr(0, len);
  frame_pos_ = frame_.size() - rest.size() + len;

  auto corrupt = [&](const std::string& why) {
    done_ = true;
    frame_.clear();
    frame_pos_ = 0;
    valid_bytes_ = frame_start_;
    tail_status_ = absl::DataLossError(
        absl::StrCat(path_, ": corrupt record in the frame at byte ", frame_start_, ": ", why));
    return tail_status_;
  };
  proto::TraceTokens msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return corrupt("not a TraceTokens message");
  }
  record->id = msg.id();
  record->sample = msg.sample();
  record->prompt_ids.assign(msg.prompt_ids().begin(), msg.prompt_ids().end());
  record->completion_ids.assign(msg.completion_ids().begin(), msg.completion_ids().end());
  record->top_k = msg.top_k();
  record->sampled_logprobs.assign(msg.sampled_logprobs().begin(), msg.sampled_logprobs().end());
  const int64_t completion = static_cast<int64_t>(record->completion_ids.size());
  if (record->top_k < 0) return corrupt(absl::StrCat("top_k ", record->top_k));
  if (record->top_k > 0 && completion > 0) {
    absl::Status st = DecodeTopK(msg.topk_encoded(), completion, record->top_k, &record->topk_ids,
                                 &record->topk_logprobs);
    if (!st.ok()) return corrupt(absl::StrCat("record \"", record->id, "\": ", st.message()));
  } else {
    record->topk_ids.clear();
    record->topk_logprobs.clear();
    if (!msg.topk_encoded().empty()) return corrupt("top-k bytes without top_k or completion");
  }
  ++records_read_;
  return true;
}

bool StartsLikeTraceShard(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  unsigned char head[4] = {0, 0, 0, 0};
  f.read(reinterpret_cast<char*>(head), sizeof(head));
  const uint32_t magic = head[0] | head[1] << 8 | head[2] << 16 | uint32_t{head[3]} << 24;
  return f.gcount() == sizeof(head) && magic == ZSTD_MAGICNUMBER;
}

absl::StatusOr<TraceShardStats> ComputeTraceShardStats(const std::string& path) {
  ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(path));
  TraceShardStats stats;
  TraceTokens r;
  while (true) {
    absl::StatusOr<bool> more = reader.Next(&r);
    if (!more.ok()) {
      if (!absl::IsDataLoss(more.status())) return more.status();
      stats.tail = std::string(more.status().message());
      break;
    }
    if (!*more) break;
    ++stats.records;
    stats.prompt_tokens += static_cast<int64_t>(r.prompt_ids.size());
    stats.completion_tokens += static_cast<int64_t>(r.completion_ids.size());
    stats.topk_entries += static_cast<int64_t>(r.completion_ids.size()) * r.top_k;
  }
  stats.frames = reader.frames_read();
  stats.file_bytes = reader.file_bytes();
  stats.valid_bytes = reader.valid_bytes();
  if (stats.completion_tokens > 0) {
    stats.bytes_per_completion_token =
        static_cast<double>(stats.valid_bytes) / static_cast<double>(stats.completion_tokens);
  }
  return stats;
}

}  // namespace retort
