#include "core/staged_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/status.h"

namespace retort {
namespace {

namespace fs = std::filesystem;

}  // namespace

absl::StatusOr<std::string> MoveAside(const std::string& path) {
  const fs::path p(path);
  const fs::path aside = fs::absolute(p).parent_path() /
                         absl::StrCat(".", p.filename().string(), ".replaced-", ::getpid());
  std::error_code ec;
  fs::remove_all(aside, ec);
  fs::rename(p, aside, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(path, ": cannot move it aside to replace it: ", ec.message()));
  }
  return aside.string();
}

absl::StatusOr<StagedDirectory> StagedDirectory::Create(const std::string& destination,
                                                        Options options) {
  std::error_code ec;
  if (options.must_be_new && fs::exists(destination, ec) &&
      !(fs::is_directory(destination, ec) && fs::is_empty(destination, ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat(destination, " already exists (remove it or choose another OUT)"));
  }
  const fs::path parent = fs::absolute(destination).parent_path();
  fs::create_directories(parent, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(parent.string(), ": cannot create the folder: ", ec.message()));
  }
  RemoveStaleTemporaries(parent.string());
  StagedDirectory d;
  d.destination_ = destination;
  d.replace_existing_ = options.replace_existing;
  d.temp_path_ = !options.temp_path.empty()
                     ? options.temp_path
                     : (parent / absl::StrCat(".", fs::path(destination).filename().string(),
                                              ".partial-", ::getpid()))
                           .string();
  if (!options.keep_contents) fs::remove_all(d.temp_path_, ec);
  fs::create_directories(d.temp_path_, ec);
  if (ec) {
    const std::string tmp = std::move(d.temp_path_);
    d.temp_path_.clear();
    return absl::InternalError(absl::StrCat(tmp, ": cannot create the folder: ", ec.message()));
  }
  return d;
}

StagedDirectory::StagedDirectory(StagedDirectory&& other) noexcept
    : destination_(std::move(other.destination_)),
      temp_path_(std::move(other.temp_path_)),
      replace_existing_(other.replace_existing_),
      keep_(other.keep_) {
  other.temp_path_.clear();
}

StagedDirectory::~StagedDirectory() {
  std::error_code ec;
  if (!temp_path_.empty() && !keep_) fs::remove_all(temp_path_, ec);
}

absl::Status StagedDirectory::Commit() {
  std::error_code ec;
  SyncDirectory(temp_path_);
  // What is replaced moves aside first and goes only once the new folder is
  // in place: a failed rename puts it back, so the destination is never lost.
  std::string replaced;
  if (replace_existing_ && fs::exists(fs::symlink_status(destination_, ec))) {
    ASSIGN_OR_RETURN(replaced, MoveAside(destination_));
  } else {
    fs::remove(destination_, ec);  // only an empty folder goes
  }
  fs::rename(temp_path_, destination_, ec);
  if (ec) {
    std::error_code restore;
    if (!replaced.empty()) fs::rename(replaced, destination_, restore);
    return absl::InternalError(
        absl::StrCat(destination_, ": cannot move ", temp_path_, " into place: ", ec.message()));
  }
  temp_path_.clear();
  if (!replaced.empty()) fs::remove_all(replaced, ec);
  SyncDirectory(fs::absolute(destination_).parent_path().string());
  return absl::OkStatus();
}

}  // namespace retort
