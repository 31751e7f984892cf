#include "cli/cli_util.h"

#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"

namespace retort::cli {

std::optional<int> ParseArgs(const CommandSpec& spec, const std::vector<std::string>& args,
                             po::options_description& options,
                             const po::positional_options_description& positional,
                             po::variables_map& vm) {
  options.add_options()("help,h", "show this help");
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: retort " << spec.name << " " << spec.usage << "\n\n"
                << spec.summary << "\n\n"
                << options << "\n";
      return kExitOk;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return UsageError(spec.name, e.what());
  }
  return std::nullopt;
}

int Fail(const std::string& command, const absl::Status& status) {
  std::string msg(status.message());
  for (char& c : msg)
    if (c == '\n') c = ' ';
  std::cerr << "retort " << command << ": error: " << msg << "\n";
  return kExitFailure;
}

int UsageError(const std::string& command, const std::string& message) {
  std::cerr << "retort " << command << ": " << message << " (see retort " << command
            << " --help)\n";
  return kExitUsage;
}

absl::Status ParseIntList(const std::string& text, std::vector<int32_t>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    int32_t v;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || ptr != part.data() + part.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", std::string(part), "\" is not an integer token id"));
    }
    out->push_back(v);
  }
  if (out->empty()) return absl::InvalidArgumentError("empty token id list");
  return absl::OkStatus();
}

absl::StatusOr<StagedDir> StagedDir::Create(const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat(out, " already exists (remove it or choose another OUT)"));
  }
  const fs::path parent = fs::absolute(out).parent_path();
  fs::create_directories(parent, ec);
  StagedDir d;
  d.out_ = out;
  d.tmp_ = (parent / absl::StrCat(".", fs::path(out).filename().string(), ".partial-", ::getpid()))
               .string();
  fs::remove_all(d.tmp_, ec);
  return d;
}

StagedDir::StagedDir(StagedDir&& o) noexcept : out_(std::move(o.out_)), tmp_(std::move(o.tmp_)) {
  o.tmp_.clear();
}

StagedDir::~StagedDir() {
  std::error_code ec;
  if (!tmp_.empty()) std::filesystem::remove_all(tmp_, ec);
}

absl::Status StagedDir::Commit() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::remove(out_, ec);  // an empty directory at OUT
  fs::rename(tmp_, out_, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("renaming ", tmp_, " to ", out_, ": ", ec.message()));
  }
  tmp_.clear();
  return absl::OkStatus();
}

}  // namespace retort::cli
