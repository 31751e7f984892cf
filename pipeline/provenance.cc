#include "pipeline/provenance.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "kernels/backend.h"
#include "pipeline/sha256.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// Reads a JSON object from `path`; errors name the file.
absl::StatusOr<Json> ReadJsonObject(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  Json j = ParseOrderedJson(text, path).value_or(Json());
  if (!j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

// Typed field access that never throws: a missing field keeps the default,
// a field of the wrong type is an error naming it.
template <typename T>
absl::Status Get(const Json& j, const char* key, const std::string& where, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  bool ok;
  if constexpr (std::is_same_v<T, std::string>) {
    ok = it->is_string();
  } else {
    ok = it->is_number();
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" has the wrong type"));
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<FileRecord>> GetFiles(const Json& j, const char* key,
                                                 const std::string& where) {
  std::vector<FileRecord> files;
  auto it = j.find(key);
  if (it == j.end()) return files;
  if (!it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" is not an array"));
  }
  for (const Json& f : *it) {
    if (!f.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": \"", key, "\" holds an entry that is not an object"));
    }
    FileRecord r;
    const std::string at = absl::StrCat(where, ": ", key);
    RETURN_IF_ERROR(Get(f, "path", at, &r.path));
    RETURN_IF_ERROR(Get(f, "sha256", at, &r.sha256));
    RETURN_IF_ERROR(Get(f, "bytes", at, &r.bytes));
    files.push_back(std::move(r));
  }
  return files;
}

Json FilesJson(const std::vector<FileRecord>& files) {
  Json a = Json::array();
  for (const FileRecord& f : files) {
    Json e = {{"path", f.path}, {"sha256", f.sha256}};
    if (f.bytes >= 0) e["bytes"] = f.bytes;
    a.push_back(std::move(e));
  }
  return a;
}

}  // namespace

absl::StatusOr<PathDigest> HashPath(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    PathDigest d;
    ASSIGN_OR_RETURN(d.sha256, Sha256File(path));
    d.bytes = fs::file_size(path, ec);
    return d;
  }
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or folder"));
  }
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(path, fs::directory_options::follow_directory_symlink, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot list: ", ec.message()));
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat(path, ": cannot list: ", ec.message()));
    if (it->is_regular_file(ec)) {
      files.push_back(it->path().lexically_relative(path).generic_string());
    }
  }
  std::sort(files.begin(), files.end());
  Sha256 h;
  PathDigest d;
  for (const std::string& rel : files) {
    const std::string full = (fs::path(path) / rel).string();
    ASSIGN_OR_RETURN(std::string file_hash, Sha256File(full));
    h.Update(rel);
    h.Update("\0", 1);
    h.Update(file_hash);
    h.Update("\n");
    d.bytes += fs::file_size(full, ec);
  }
  d.sha256 = h.HexDigest();
  return d;
}

absl::StatusOr<uint64_t> ModelBytes(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return static_cast<uint64_t>(fs::file_size(path, ec));
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such model file or folder"));
  }
  uint64_t bytes = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(path, ec)) {
    if (e.is_regular_file(ec) && absl::EndsWith(e.path().filename().string(), ".safetensors")) {
      bytes += e.file_size(ec);
    }
  }
  return bytes;
}

Json StageRecord::ToJson() const {
  Json j = {{"name", name},
            {"kind", kind},
            {"status", status},
            {"fingerprint", fingerprint},
            {"started", started},
            {"seconds", seconds},
            {"settings", settings},
            {"inputs", FilesJson(inputs)},
            {"outputs", FilesJson(outputs)},
            {"metrics", metrics},
            {"label", label}};
  if (!error.empty()) j["error"] = error;
  return j;
}

absl::StatusOr<StageRecord> StageRecord::FromJson(const Json& j, const std::string& where) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": not an object"));
  StageRecord r;
  RETURN_IF_ERROR(Get(j, "name", where, &r.name));
  RETURN_IF_ERROR(Get(j, "kind", where, &r.kind));
  RETURN_IF_ERROR(Get(j, "status", where, &r.status));
  RETURN_IF_ERROR(Get(j, "fingerprint", where, &r.fingerprint));
  RETURN_IF_ERROR(Get(j, "started", where, &r.started));
  RETURN_IF_ERROR(Get(j, "seconds", where, &r.seconds));
  RETURN_IF_ERROR(Get(j, "label", where, &r.label));
  RETURN_IF_ERROR(Get(j, "error", where, &r.error));
  if (r.name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": no stage \"name\""));
  if (auto it = j.find("settings"); it != j.end()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": \"settings\" is not an object"));
    }
    r.settings = *it;
  }
  if (auto it = j.find("metrics"); it != j.end()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": \"metrics\" is not an object"));
    }
    r.metrics = *it;
  }
  ASSIGN_OR_RETURN(r.inputs, GetFiles(j, "inputs", where));
  ASSIGN_OR_RETURN(r.outputs, GetFiles(j, "outputs", where));
  return r;
}

Json Manifest::ToJson() const {
  Json stage_list = Json::array();
  for (const StageRecord& s : stages) stage_list.push_back(s.ToJson());
  return {{"recipe", {{"name", recipe_name}, {"path", recipe_path}, {"sha256", recipe_sha256}}},
          {"retort_version", retort_version},
          {"machine", machine},
          {"status", status},
          {"stages", std::move(stage_list)}};
}

absl::StatusOr<Manifest> Manifest::FromJson(const Json& j, const std::string& where) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": not an object"));
  Manifest m;
  if (auto it = j.find("recipe"); it != j.end()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": \"recipe\" is not an object"));
    }
    const std::string at = absl::StrCat(where, ": recipe");
    RETURN_IF_ERROR(Get(*it, "name", at, &m.recipe_name));
    RETURN_IF_ERROR(Get(*it, "path", at, &m.recipe_path));
    RETURN_IF_ERROR(Get(*it, "sha256", at, &m.recipe_sha256));
  }
  RETURN_IF_ERROR(Get(j, "retort_version", where, &m.retort_version));
  RETURN_IF_ERROR(Get(j, "machine", where, &m.machine));
  RETURN_IF_ERROR(Get(j, "status", where, &m.status));
  if (auto it = j.find("stages"); it != j.end()) {
    if (!it->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": \"stages\" is not an array"));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(StageRecord r,
                       StageRecord::FromJson((*it)[i], absl::StrCat(where, ": stages[", i, "]")));
      m.stages.push_back(std::move(r));
    }
  }
  return m;
}

absl::Status WriteManifest(const std::string& path, const Manifest& manifest) {
  return WriteFileAtomically(path, manifest.ToJson().dump(2) + "\n");
}

absl::StatusOr<Manifest> ReadManifest(const std::string& path) {
  ASSIGN_OR_RETURN(Json j, ReadJsonObject(path));
  return Manifest::FromJson(j, path);
}

absl::Status WriteProvenance(const std::string& path, const StageRecord& record) {
  return WriteFileAtomically(path, record.ToJson().dump(2) + "\n");
}

absl::StatusOr<StageRecord> ReadProvenance(const std::string& path) {
  ASSIGN_OR_RETURN(Json j, ReadJsonObject(path));
  return StageRecord::FromJson(j, path);
}

std::string StageFingerprint(const std::string& retort_version, const Json& settings,
                             const std::vector<FileRecord>& inputs) {
  Json hashed = settings;
  if (hashed.is_object()) hashed.erase("label");
  Sha256 h;
  h.Update(absl::StrCat("retort stage fingerprint v1\nversion ", retort_version, "\nsettings ",
                        hashed.dump(), "\n"));
  for (const FileRecord& in : inputs) h.Update(absl::StrCat("input ", in.sha256, "\n"));
  return h.HexDigest();
}

std::string MachineDescription() {
  std::string cpu = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos)
        cpu = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      break;
    }
  }
  return absl::StrCat(cpu, " | ", DefaultBackend().Describe());
}

std::string UtcNow() {
  std::time_t now = std::time(nullptr);
  std::tm tm;
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace retort::pipeline
