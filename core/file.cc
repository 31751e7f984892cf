#include "core/file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace retort {
namespace {
absl::Status ErrnoError(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}
}  // namespace

absl::StatusOr<std::shared_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return ErrnoError(path, "cannot open");
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoError(path, "cannot stat");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, expected a file"));
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return ErrnoError(path, "cannot mmap");
    }
    f->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return f;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

absl::StatusOr<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& path) {
  std::unique_ptr<AtomicFile> f(new AtomicFile());
  f->path_ = path;
  f->tmp_path_ = absl::StrCat(path, ".tmp.", ::getpid());
  f->file_ = std::fopen(f->tmp_path_.c_str(), "wb");
  if (!f->file_) return ErrnoError(f->tmp_path_, "cannot create");
  return f;
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

absl::Status AtomicFile::Write(const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, file_) != n) return ErrnoError(tmp_path_, "write failed");
  written_ += n;
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit() {
  if (std::fflush(file_) != 0) return ErrnoError(tmp_path_, "flush failed");
  if (::fsync(::fileno(file_)) != 0) return ErrnoError(tmp_path_, "fsync failed");
  std::fclose(file_);
  file_ = nullptr;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) return ErrnoError(path_, "rename failed");
  committed_ = true;
  const std::string::size_type slash = path_.rfind('/');
  SyncDirectory(slash == std::string::npos ? "." : path_.substr(0, slash + 1));
  return absl::OkStatus();
}

void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

namespace {

// The PID at the end of `name` after `marker` ("x.tmp.123" with ".tmp."), or 0.
pid_t PidAfter(const std::string& name, std::string_view marker) {
  const std::string::size_type at = name.rfind(marker);
  if (at == std::string::npos || at + marker.size() >= name.size()) return 0;
  pid_t pid = 0;
  for (size_t i = at + marker.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 100'000'000) return 0;
    pid = pid * 10 + (name[i] - '0');
  }
  return pid;
}

bool ProcessAlive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

int RemoveStaleTemporaries(const std::string& dir) {
  std::error_code ec;
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    pid_t pid = PidAfter(name, ".tmp.");
    if (pid == 0 && !name.empty() && name[0] == '.') {
      pid = PidAfter(name, ".partial-");
      if (pid == 0) pid = PidAfter(name, ".replaced-");
    }
    if (pid <= 0 || pid == ::getpid() || ProcessAlive(pid)) continue;
    std::error_code remove_ec;
    if (std::filesystem::remove_all(entry.path(), remove_ec) > 0 && !remove_ec) ++removed;
  }
  return removed;
}

absl::StatusOr<DirectoryLock> DirectoryLock::Acquire(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(dir, "cannot open the folder to lock it");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir,
          " is in use by another process (a retort job writing it holds its lock); wait for it "
          "to finish or choose another output folder"));
    }
    errno = err;
    return ErrnoError(dir, "cannot lock the folder");
  }
  return DirectoryLock(fd);
}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot read"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  auto f = AtomicFile::Create(path);
  if (!f.ok()) return f.status();
  if (auto s = (*f)->Write(contents); !s.ok()) return s;
  return (*f)->Commit();
}

}  // namespace retort
