#include "distill/trace_output_dir.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"

namespace retort {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::Status FsyncFile(std::FILE* f, const std::string& path) {
  if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0) {
    return absl::InternalError(absl::StrCat(path, ": write/fsync failed"));
  }
  return absl::OkStatus();
}

absl::Status WriteAll(std::FILE* f, const std::string& data, const std::string& path) {
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) {
    return absl::InternalError(absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

// Splits `text` into complete lines ('\n'-terminated): (offset, line) pairs;
// *tail_start is where the unterminated rest begins.
std::vector<std::pair<size_t, std::string>> CompleteLines(const std::string& text,
                                                          size_t* tail_start) {
  std::vector<std::pair<size_t, std::string>> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;
    lines.emplace_back(pos, text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  *tail_start = pos;
  return lines;
}

absl::StatusOr<TraceDoneEntry> ParseDoneLine(const std::string& line) {
  Json j = ParseOrderedJson(line, "done.jsonl").value_or(Json());
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string() || !j.contains("sample") ||
      !j["sample"].is_number_integer() || !j.contains("kept") || !j["kept"].is_boolean()) {
    return absl::DataLossError("not a done record");
  }
  TraceDoneEntry e;
  e.id = j["id"].get<std::string>();
  e.sample = j["sample"].get<int64_t>();
  e.kept = j["kept"].get<bool>();
  if (j.contains("reject_reason") && j["reject_reason"].is_string())
    e.rejected = j["reject_reason"].get<std::string>();
  if (j.contains("correct") && j["correct"].is_boolean()) e.correct = j["correct"].get<bool>();
  if (j.contains("finish_reason") && j["finish_reason"].is_string())
    e.finish_reason = j["finish_reason"].get<std::string>();
  if (j.contains("prompt_tokens") && j["prompt_tokens"].is_number_integer())
    e.prompt_tokens = j["prompt_tokens"].get<int64_t>();
  if (j.contains("completion_tokens") && j["completion_tokens"].is_number_integer())
    e.completion_tokens = j["completion_tokens"].get<int64_t>();
  if (j.contains("time_s") && j["time_s"].is_number()) e.time_s = j["time_s"].get<double>();
  return e;
}

std::string DoneLine(const TraceDoneEntry& e) {
  Json j = {{"id", e.id}, {"sample", e.sample}, {"kept", e.kept}};
  if (!e.kept) j["reject_reason"] = e.rejected;
  j["correct"] = e.correct ? Json(*e.correct) : Json(nullptr);
  j["finish_reason"] = e.finish_reason;
  j["prompt_tokens"] = e.prompt_tokens;
  j["completion_tokens"] = e.completion_tokens;
  j["time_s"] = e.time_s;
  return Dump(j);
}

// Cuts the JSONL file at `path` back to the lines of `entries` (which must
// match them line by line, by id and sample); returns the bytes cut.
absl::StatusOr<int64_t> TrimJsonlTo(const std::string& path,
                                    const std::vector<const TraceDoneEntry*>& entries,
                                    const char* what) {
  std::string text;
  if (fs::exists(path)) {
    ASSIGN_OR_RETURN(text, ReadFileToString(path));
  }
  size_t tail = 0;
  const auto lines = CompleteLines(text, &tail);
  if (lines.size() < entries.size()) {
    return absl::DataLossError(absl::StrFormat(
        "%s has %d complete lines but done.jsonl commits %d %s samples; the folder is damaged",
        path, lines.size(), entries.size(), what));
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    Json j = ParseOrderedJson(lines[i].second, path).value_or(Json());
    bool match = j.is_object() && j.value("id", "") == entries[i]->id && j.contains("sample") &&
                 j["sample"].is_number_integer() &&
                 j["sample"].get<int64_t>() == entries[i]->sample;
    if (!match) {
      return absl::DataLossError(absl::StrFormat(
          "%s:%d is not sample %d of \"%s\" as done.jsonl says; the folder is damaged", path, i + 1,
          entries[i]->sample, entries[i]->id));
    }
  }
  const size_t keep = entries.empty() ? 0
                                      : lines[entries.size() - 1].first +
                                            lines[entries.size() - 1].second.size() + 1;
  if (keep >= text.size()) return 0;
  fs::resize_file(path, keep);
  return static_cast<int64_t>(text.size() - keep);
}

}  // namespace

TraceOutputDir::~TraceOutputDir() { (void)Close(); }

absl::Status TraceOutputDir::Close() {
  absl::Status s;
  if (jsonl_) {
    if (std::fclose(jsonl_) != 0) s = absl::InternalError(Path("traces.jsonl") + ": close failed");
    jsonl_ = nullptr;
  }
  if (rejected_) {
    if (std::fclose(rejected_) != 0)
      s = absl::InternalError(Path("rejected.jsonl") + ": close failed");
    rejected_ = nullptr;
  }
  if (done_log_) {
    if (std::fclose(done_log_) != 0) s = absl::InternalError(Path("done.jsonl") + ": close failed");
    done_log_ = nullptr;
  }
  if (shard_) {
    absl::Status c = shard_->Close();
    if (s.ok()) s = c;
    shard_.reset();
  }
  return s;
}

bool TraceOutputDir::IsDone(const std::string& id, int64_t sample) const {
  return done_index_.count({id, sample}) > 0;
}

absl::StatusOr<std::unique_ptr<TraceOutputDir>> TraceOutputDir::Open(
    const std::string& dir, const nlohmann::ordered_json& job, bool write_shard) {
  std::unique_ptr<TraceOutputDir> out(new TraceOutputDir());
  out->dir_ = dir;
  out->write_shard_ = write_shard;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat(dir, ": cannot create the folder: ", ec.message()));
  // One writer at a time: two generate runs into one folder would write the
  // same samples twice and leave it unresumable.
  ASSIGN_OR_RETURN(DirectoryLock lock, DirectoryLock::Acquire(dir));
  out->lock_.emplace(std::move(lock));
  RemoveStaleTemporaries(dir);
  const std::string job_path = out->Path("job.json");
  if (fs::exists(job_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(job_path));
    Json old = ParseOrderedJson(text, job_path).value_or(Json());
    if (!old.is_object()) {
      return absl::DataLossError(absl::StrCat(job_path, ": not a JSON object"));
    }
    for (auto it = job.begin(); it != job.end(); ++it) {
      if (!old.contains(it.key()) || old[it.key()] != it.value()) {
        return absl::FailedPreconditionError(absl::StrCat(
            dir, " holds a job with other parameters: ", it.key(), " was ",
            old.contains(it.key()) ? Dump(old[it.key()]) : std::string("unset"), ", now ",
            Dump(it.value()), " (use another --output folder, or the same parameters to resume)"));
      }
    }
  } else {
    if (fs::exists(out->Path("done.jsonl")) || fs::exists(out->Path("traces.jsonl"))) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " holds traces but no job.json; refusing to add to it (use another --output)"));
    }
    RETURN_IF_ERROR(WriteFileAtomically(job_path, job.dump(2) + "\n"));
  }
  RETURN_IF_ERROR(out->Recover(write_shard));
  return out;
}

absl::Status TraceOutputDir::Recover(bool write_shard) {
  // 1. The commit log.
  const std::string done_path = Path("done.jsonl");
  std::string text;
  if (fs::exists(done_path)) {
    ASSIGN_OR_RETURN(text, ReadFileToString(done_path));
  }
  size_t tail = 0;
  auto lines = CompleteLines(text, &tail);
  size_t keep_bytes = tail;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StatusOr<TraceDoneEntry> e = ParseDoneLine(lines[i].second);
    if (!e.ok()) {
      if (i + 1 == lines.size()) {  // a torn last write
        keep_bytes = lines[i].first;
        break;
      }
      return absl::DataLossError(
          absl::StrCat(done_path, ":", i + 1, ": not a done record; the folder is damaged"));
    }
    if (!done_index_.emplace(std::make_pair(e->id, e->sample), done_.size()).second) {
      return absl::DataLossError(absl::StrCat(done_path, ":", i + 1, ": sample ", e->sample,
                                              " of \"", e->id, "\" is listed twice"));
    }
    done_.push_back(*std::move(e));
  }
  if (keep_bytes < text.size()) {
    recovery_.done_log_cut_bytes = static_cast<int64_t>(text.size() - keep_bytes);
    fs::resize_file(done_path, keep_bytes);
  }
  std::vector<const TraceDoneEntry*> kept;
  for (const TraceDoneEntry& e : done_)
    if (e.kept) kept.push_back(&e);
  recovery_.done = static_cast<int64_t>(done_.size());
  recovery_.kept = static_cast<int64_t>(kept.size());

  // 2. traces.jsonl and rejected.jsonl: the kept and the rejected samples'
  // lines, in the same order. A folder from before rejected.jsonl existed
  // (rejected samples done, no file) goes on without it.
  const std::string jsonl_path = Path("traces.jsonl"), rejected_path = Path("rejected.jsonl");
  ASSIGN_OR_RETURN(recovery_.jsonl_cut_bytes, TrimJsonlTo(jsonl_path, kept, "kept"));
  std::vector<const TraceDoneEntry*> rejected;
  for (const TraceDoneEntry& e : done_)
    if (!e.kept) rejected.push_back(&e);
  const bool legacy = !rejected.empty() && !fs::exists(rejected_path);
  if (!legacy) {
    ASSIGN_OR_RETURN(recovery_.rejected_cut_bytes,
                     TrimJsonlTo(rejected_path, rejected, "rejected"));
  }

  // 3. tokens.shard: the kept samples' records, in the same order.
  const std::string shard_path = Path("tokens.shard");
  if (write_shard) {
    if (fs::exists(shard_path)) {
      ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(shard_path));
      const int64_t file_bytes = reader.file_bytes();
      int64_t keep = 0, frames_at_keep = 0;
      TraceTokens rec;
      for (size_t i = 0; i < kept.size(); ++i) {
        absl::StatusOr<bool> more = reader.Next(&rec);
        if (!more.ok() || !*more) {
          return absl::DataLossError(absl::StrFormat(
              "%s has %d readable records but done.jsonl commits %d kept samples%s", shard_path, i,
              kept.size(), more.ok() ? "" : absl::StrCat(" (", more.status().message(), ")")));
        }
        if (rec.id != kept[i]->id || rec.sample != kept[i]->sample) {
          return absl::DataLossError(absl::StrFormat(
              "%s record %d is sample %d of \"%s\", done.jsonl says sample %d of \"%s\"",
              shard_path, i, rec.sample, rec.id, kept[i]->sample, kept[i]->id));
        }
        keep = reader.valid_bytes();
        frames_at_keep = reader.frames_read();
      }
      // Anything after the K-th record is uncommitted.
      absl::StatusOr<bool> more = reader.Next(&rec);
      bool rewrite = more.ok() && *more && reader.frames_read() == frames_at_keep;
      if (more.ok() && *more) {
        int64_t dropped = 1;
        while (true) {
          absl::StatusOr<bool> m = reader.Next(&rec);
          if (!m.ok() || !*m) break;
          ++dropped;
        }
        recovery_.shard_dropped_records = dropped;
      }
      if (rewrite) {
        // The K-th record shares its frame with uncommitted ones: copy the
        // first K records into a fresh shard.
        const std::string tmp = shard_path + ".rewrite";
        {
          ASSIGN_OR_RETURN(TraceShardReader again, TraceShardReader::Open(shard_path));
          ASSIGN_OR_RETURN(TraceShardWriter w, TraceShardWriter::Open(tmp, /*append=*/false));
          for (size_t i = 0; i < kept.size(); ++i) {
            ASSIGN_OR_RETURN(bool ok, again.Next(&rec));
            if (!ok) return absl::DataLossError(absl::StrCat(shard_path, ": short on rewrite"));
            RETURN_IF_ERROR(w.Append(rec));
          }
          RETURN_IF_ERROR(w.Close());
        }
        fs::rename(tmp, shard_path);
        recovery_.shard_cut_bytes = file_bytes - static_cast<int64_t>(fs::file_size(shard_path));
      } else if (keep < file_bytes) {
        recovery_.shard_cut_bytes = file_bytes - keep;
        fs::resize_file(shard_path, static_cast<uintmax_t>(keep));
      }
    } else if (!kept.empty()) {
      return absl::DataLossError(absl::StrFormat(
          "%s is missing but done.jsonl commits %d kept samples", shard_path, kept.size()));
    }
    ASSIGN_OR_RETURN(TraceShardWriter w, TraceShardWriter::Open(shard_path, /*append=*/true));
    shard_.emplace(std::move(w));
  }

  jsonl_ = std::fopen(jsonl_path.c_str(), "ab");
  if (!jsonl_) return absl::InternalError(absl::StrCat(jsonl_path, ": cannot open for append"));
  if (!legacy) {
    rejected_ = std::fopen(rejected_path.c_str(), "ab");
    if (!rejected_)
      return absl::InternalError(absl::StrCat(rejected_path, ": cannot open for append"));
  }
  done_log_ = std::fopen(done_path.c_str(), "ab");
  if (!done_log_) return absl::InternalError(absl::StrCat(done_path, ": cannot open for append"));
  return absl::OkStatus();
}

absl::Status TraceOutputDir::Commit(std::vector<Pending> group) {
  if (group.empty()) return absl::OkStatus();
  const std::string jsonl_path = Path("traces.jsonl"), done_path = Path("done.jsonl");
  bool any_kept = false;
  for (const Pending& p : group) {
    if (done_index_.count({p.entry.id, p.entry.sample})) {
      return absl::InternalError(
          absl::StrCat("sample ", p.entry.sample, " of \"", p.entry.id, "\" committed twice"));
    }
    any_kept |= p.entry.kept;
  }
  if (any_kept && shard_) {
    for (const Pending& p : group) {
      if (p.entry.kept) RETURN_IF_ERROR(shard_->Append(p.tokens));
    }
    RETURN_IF_ERROR(shard_->Commit());
  }
  for (const bool kept : {true, false}) {
    std::FILE* f = kept ? jsonl_ : rejected_;
    std::string lines;
    for (const Pending& p : group) {
      if (p.entry.kept == kept) absl::StrAppend(&lines, p.jsonl_line, "\n");
    }
    if (f == nullptr || lines.empty()) continue;
    const std::string path = kept ? jsonl_path : Path("rejected.jsonl");
    RETURN_IF_ERROR(WriteAll(f, lines, path));
    RETURN_IF_ERROR(FsyncFile(f, path));
  }
  std::string done_lines;
  for (const Pending& p : group) absl::StrAppend(&done_lines, DoneLine(p.entry), "\n");
  RETURN_IF_ERROR(WriteAll(done_log_, done_lines, done_path));
  RETURN_IF_ERROR(FsyncFile(done_log_, done_path));
  for (Pending& p : group) {
    done_index_.emplace(std::make_pair(p.entry.id, p.entry.sample), done_.size());
    done_.push_back(std::move(p.entry));
  }
  return absl::OkStatus();
}

}  // namespace retort
