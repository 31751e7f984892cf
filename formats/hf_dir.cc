#include "formats/hf_dir.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"

namespace retort {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string Join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return absl::StrCat(dir, "/", name);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= 120) return out + "...";
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return out;
}

std::string Quoted(const std::string& s) { return absl::StrCat("\"", Printable(s), "\""); }

// Reads a JSON file that must hold an object.
absl::StatusOr<json> ReadJsonObject(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  ASSIGN_OR_RETURN(json j, ParseJson(text, path));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a JSON object, got ", j.type_name()));
  }
  return j;
}

// A shard name from an index must stay inside the model directory.
bool IsSafeRelativePath(const std::string& name) {
  if (name.empty() || name[0] == '/') return false;
  for (const auto& part : fs::path(name)) {
    if (part == "..") return false;
  }
  return true;
}

std::string ShardName(size_t i, size_t n) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", static_cast<int>(i + 1),
                         static_cast<int>(n));
}

// "model-00001-of-00003.safetensors" and the like.
bool LooksLikeShard(const std::string& name) {
  auto digits = [&](size_t pos) {
    for (size_t i = pos; i < pos + 5; ++i)
      if (name[i] < '0' || name[i] > '9') return false;
    return true;
  };
  return name.size() == 32 && absl::StartsWith(name, "model-") && digits(6) &&
         name.compare(11, 4, "-of-") == 0 && digits(15) && absl::EndsWith(name, ".safetensors");
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfDirectory>> HfDirectory::Open(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    return absl::NotFoundError(absl::StrCat(dir, ": no such directory"));
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": not a directory (expected a Hugging Face model folder)"));
  }
  std::unique_ptr<HfDirectory> d(new HfDirectory());
  d->dir_ = dir;
  const std::string config_path = Join(dir, kHfConfigFile);
  if (!IsRegularFile(config_path)) {
    return absl::NotFoundError(
        absl::StrCat(config_path, ": no such file (a model folder needs config.json)"));
  }
  ASSIGN_OR_RETURN(d->config_, ReadJsonObject(config_path));
  RETURN_IF_ERROR(d->OpenWeights());
  return d;
}

absl::Status HfDirectory::OpenWeights() {
  if (IsRegularFile(Join(dir_, kHfSingleWeightsFile))) {
    ASSIGN_OR_RETURN(const SafetensorsReader* r, OpenShard(kHfSingleWeightsFile));
    for (const SafetensorsEntry& e : r->entries()) tensors_[e.name] = r;
    return absl::OkStatus();
  }
  const std::string index_path = Join(dir_, kHfIndexFile);
  if (IsRegularFile(index_path)) return OpenIndex(index_path);

  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::error_code file_ec;
    const std::string name = entry.path().filename().string();
    if (absl::EndsWith(name, ".safetensors") && entry.is_regular_file(file_ec))
      found.push_back(name);
  }
  if (ec) return absl::InternalError(absl::StrCat(dir_, ": cannot list directory: ", ec.message()));
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat(
        dir_, ": no model.safetensors, model.safetensors.index.json or other *.safetensors file"));
  }
  if (found.size() > 1) {
    std::sort(found.begin(), found.end());
    return absl::InvalidArgumentError(
        absl::StrCat(dir_, ": ", found.size(), " *.safetensors files (", found[0], ", ", found[1],
                     ", ...) but no model.safetensors.index.json to join them"));
  }
  ASSIGN_OR_RETURN(const SafetensorsReader* r, OpenShard(found[0]));
  for (const SafetensorsEntry& e : r->entries()) tensors_[e.name] = r;
  return absl::OkStatus();
}

absl::Status HfDirectory::OpenIndex(const std::string& index_path) {
  ASSIGN_OR_RETURN(json index, ReadJsonObject(index_path));
  auto wm = index.find("weight_map");
  if (wm == index.end())
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing \"weight_map\""));
  if (!wm->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": \"weight_map\" must be an object, got ", wm->type_name()));
  }
  for (const auto& [name, file] : wm->items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map entry for tensor ", Quoted(name),
                       " must be a file name string, got ", file.type_name()));
    }
    const std::string& shard = file.get_ref<const std::string&>();
    if (!IsSafeRelativePath(shard)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": shard ", Quoted(shard),
                                                     " for tensor ", Quoted(name),
                                                     " is not a file inside the model folder"));
    }
    if (!readers_.count(shard) && !IsRegularFile(Join(dir_, shard))) {
      return absl::NotFoundError(absl::StrCat(index_path, ": shard ", Quoted(shard),
                                              " (for tensor ", Quoted(name), ") does not exist"));
    }
    ASSIGN_OR_RETURN(const SafetensorsReader* r, OpenShard(shard));
    if (!r->Has(name)) {
      return absl::NotFoundError(absl::StrCat(index_path, ": tensor ", Quoted(name),
                                              " is mapped to ", Quoted(shard), ", but ", r->path(),
                                              " has no such tensor"));
    }
    tensors_[name] = r;
  }
  return absl::OkStatus();
}

absl::StatusOr<const SafetensorsReader*> HfDirectory::OpenShard(const std::string& filename) {
  auto it = readers_.find(filename);
  if (it != readers_.end()) return it->second.get();
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> r,
                   SafetensorsReader::Open(Join(dir_, filename)));
  const SafetensorsReader* p = r.get();
  readers_[filename] = std::move(r);
  return p;
}

std::vector<std::string> HfDirectory::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, r] : tensors_) names.push_back(name);
  return names;  // std::map keeps them sorted
}

const SafetensorsEntry* HfDirectory::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second->Find(name);
}

std::string HfDirectory::FileOf(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? "" : it->second->path();
}

std::vector<std::string> HfDirectory::WeightFiles() const {
  std::vector<std::string> files;
  for (const auto& [name, r] : readers_) files.push_back(r->path());
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<Tensor> HfDirectory::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": model has no tensor ", Quoted(name)));
  }
  return it->second->Get(name);
}

absl::StatusOr<Tensor> HfDirectory::GetWithShape(const std::string& name,
                                                 const Shape& expected) const {
  ASSIGN_OR_RETURN(Tensor t, Get(name));
  if (t.shape() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(FileOf(name), ": tensor ", name, " has shape ",
                                                   ShapeString(t.shape()), ", expected ",
                                                   ShapeString(expected)));
  }
  return t;
}

std::string HfDirectory::FilePath(const std::string& filename) const {
  std::string path = Join(dir_, filename);
  return IsRegularFile(path) ? path : "";
}

absl::Status WriteHfDirectory(const std::string& dir, const nlohmann::json& config,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const HfWriteOptions& options) {
  // Validate everything before touching the disk.
  if (!config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        Join(dir, kHfConfigFile), ": config must be a JSON object, got ", config.type_name()));
  }
  std::string config_text;
  try {
    config_text = config.dump(2) + "\n";
  } catch (const json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat(Join(dir, kHfConfigFile), ": config holds invalid UTF-8"));
  }
  {
    std::set<std::string> names;
    for (const auto& [name, t] : tensors) {
      if (!names.insert(name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": duplicate tensor name ", Quoted(name)));
      }
    }
  }

  // Plan shards: start a new one when the next tensor would overflow the limit.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& nt : tensors) {
    const uint64_t n = nt.second.nbytes();
    if (!shards.back().empty() && shard_bytes + n > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(nt);
    shard_bytes += n;
    total_bytes += n;
  }
  const bool sharded = shards.size() > 1;
  std::vector<std::string> files;
  for (size_t i = 0; i < shards.size(); ++i)
    files.push_back(sharded ? ShardName(i, shards.size()) : kHfSingleWeightsFile);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  for (size_t i = 0; i < shards.size(); ++i) {
    auto header = SafetensorsHeader(shards[i], metadata);
    if (!header.ok()) {
      return absl::Status(header.status().code(),
                          absl::StrCat(Join(dir, files[i]), ": ", header.status().message()));
    }
  }
  std::string index_text;
  if (sharded) {
    json index;
    index["metadata"]["total_size"] = total_bytes;
    index["weight_map"] = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      for (const auto& [name, t] : shards[i]) index["weight_map"][name] = files[i];
    }
    index_text = index.dump(2) + "\n";  // names were checked as UTF-8 above
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat(dir, ": cannot create directory: ", ec.message()));

  std::vector<std::string> written;
  auto fail = [&](const absl::Status& s) {
    for (const std::string& f : written) std::remove(Join(dir, f).c_str());
    return s;
  };
  for (size_t i = 0; i < shards.size(); ++i) {
    if (absl::Status s = WriteSafetensors(Join(dir, files[i]), shards[i], metadata); !s.ok())
      return fail(s);
    written.push_back(files[i]);
  }
  if (sharded) {
    if (absl::Status s = WriteFileAtomically(Join(dir, kHfIndexFile), index_text); !s.ok())
      return fail(s);
  }
  if (absl::Status s = WriteFileAtomically(Join(dir, kHfConfigFile), config_text); !s.ok())
    return fail(s);

  // Remove weights of an earlier save that loaders could pick up instead.
  const std::set<std::string> keep(files.begin(), files.end());
  if (sharded) {
    std::remove(Join(dir, kHfSingleWeightsFile).c_str());
  } else {
    std::remove(Join(dir, kHfIndexFile).c_str());
  }
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (LooksLikeShard(name) && !keep.count(name)) std::remove(entry.path().c_str());
  }
  return absl::OkStatus();
}

}  // namespace retort
