#include "cli/cli_util.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <regex>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/device.h"
#include "core/progress.h"
#include "core/status.h"
#include "kernels/backend.h"
#include "pipeline/runner.h"

namespace retort::cli {

std::string DefaultModelPath() {
  if (const char* env = std::getenv("RETORT_MODEL"); env != nullptr && *env != '\0') return env;
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    // build/cli/retort in a checkout; bin/retort next to share/ when installed.
    candidates.push_back(exe.parent_path() / "../../models/arith-teacher");
    candidates.push_back(exe.parent_path() / "../share/retort/models/arith-teacher");
  }
#ifdef RETORT_SOURCE_DIR_PATH
  candidates.push_back(fs::path(RETORT_SOURCE_DIR_PATH) / "models/arith-teacher");
#endif
  for (const fs::path& c : candidates) {
    if (fs::is_regular_file(c / "config.json", ec)) return fs::weakly_canonical(c, ec).string();
  }
  return "";
}

namespace {

// For a command whose first positional is a model: `args` with the default
// model put first when the user gave fewer positionals than the command takes
// and no --MODEL flag. A later positional given as a flag (-o OUT) counts as
// given. Unchanged when it cannot tell (the real parse reports).
// `note` gets the line that says so (printed by the caller once the
// command's options, --device included, are accepted).
std::vector<std::string> WithDefaultModel(const CommandSpec& spec,
                                          const std::vector<std::string>& args,
                                          const po::options_description& options,
                                          const po::positional_options_description& positional,
                                          std::string* note) {
  if (!spec.default_model || positional.max_total_count() < 1) return args;
  const std::string key = positional.name_for_position(0);
  unsigned given = 0;
  try {
    po::parsed_options parsed =
        po::command_line_parser(args).options(options).positional(positional).run();
    for (const po::option& o : parsed.options) {
      if (o.string_key == "help") return args;
      if (o.position_key >= 0) {
        ++given;
      } else if (o.string_key == key) {
        return args;  // given as --model
      } else {
        for (unsigned i = 1; i < std::min(positional.max_total_count(), 8u); ++i) {
          if (o.string_key == positional.name_for_position(i)) ++given;  // -o OUT
        }
      }
    }
  } catch (const po::error&) {
    return args;
  }
  if (given >= positional.max_total_count()) return args;
  const std::string model = DefaultModelPath();
  if (model.empty()) return args;
  const char* env = std::getenv("RETORT_MODEL");
  *note = absl::StrCat("retort ", spec.name, ": no ", key, " given; using ", model,
                       env != nullptr && *env != '\0'
                           ? " ($RETORT_MODEL)\n"
                           : " (the bundled teacher; set RETORT_MODEL to change)\n");
  std::vector<std::string> out;
  out.reserve(args.size() + 1);
  out.push_back(model);
  out.insert(out.end(), args.begin(), args.end());
  return out;
}

}  // namespace

std::string ShortestDefaults(const std::string& help) {
  // Boost prints a float default with 9 digits, a double with 17:
  // "(=0.000300000014)". Each becomes the shortest text that reads back as
  // the same float (or double).
  static const std::regex number(R"(\(=(-?[0-9]+\.[0-9]*(?:e[-+]?[0-9]+)?)\))");
  std::string out;
  auto last = help.cbegin();
  for (std::sregex_iterator it(help.begin(), help.end(), number), end; it != end; ++it) {
    const std::string text = (*it)[1].str();
    const double d = std::strtod(text.c_str(), nullptr);
    // Up to 9 significant digits: a float's default (it only has to read
    // back as the same float); more: a double's.
    int significant = 0;
    for (char c : text.substr(0, text.find('e'))) {
      if (c >= '1' && c <= '9') ++significant;
      if (c == '0' && significant > 0) ++significant;
    }
    const bool is_float = significant <= 9;
    std::string shortest = text;
    for (int digits = 1; digits <= 17; ++digits) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.*g", digits, d);
      const double back = std::strtod(buf, nullptr);
      if (is_float ? static_cast<float>(back) == static_cast<float>(d) : back == d) {
        shortest = buf;
        break;
      }
    }
    out.append(last, (*it)[0].first).append("(=").append(shortest).append(")");
    last = (*it)[0].second;
  }
  out.append(last, help.cend());
  return out;
}

const CommandIo& StdIo() {
  static const CommandIo* io = new CommandIo{&std::cout, &std::cerr, &StderrProgress(), nullptr};
  return *io;
}

std::optional<int> ParseArgs(const CommandSpec& spec, const std::vector<std::string>& given_args,
                             po::options_description& options,
                             const po::positional_options_description& positional,
                             po::variables_map& vm) {
  return ParseArgs(StdIo(), spec, given_args, options, positional, vm);
}

std::optional<int> ParseArgs(const CommandIo& io, const CommandSpec& spec,
                             const std::vector<std::string>& given_args,
                             po::options_description& options,
                             const po::positional_options_description& positional,
                             po::variables_map& vm) {
  if (spec.device) AddDeviceOption(options);
  options.add_options()("help,h", "show this help")("version", "print retort's version and exit");
  std::string note;
  try {
    const std::vector<std::string> args =
        WithDefaultModel(spec, given_args, options, positional, &note);
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("version")) {
      *io.out << "retort " << pipeline::RetortVersion() << "\n";
      return kExitOk;
    }
    if (vm.count("help")) {
      std::ostringstream text;
      text << options;
      *io.out << "usage: retort " << spec.name << " " << spec.usage << "\n\n"
              << spec.summary << "\n\n"
              << ShortestDefaults(text.str()) << "\n";
      if (spec.default_model) {
        *io.out << "Without a model argument the bundled teacher (models/arith-teacher) is "
                   "used, or $RETORT_MODEL when set.\n";
      }
      return kExitOk;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    *io.err << note;
    return UsageError(io, spec.name, e.what());
  }
  // A device this binary cannot use is the command's only line of output.
  if (spec.device) {
    if (auto exit = SelectDevice(io, spec.name, vm["device"].as<std::string>())) return exit;
  }
  *io.err << note;
  return std::nullopt;
}

void AddDeviceOption(po::options_description& options) {
  options.add_options()("device", po::value<std::string>()->default_value("cpu"),
                        "device to run on: cpu, cuda or cuda:N");
}

absl::StatusOr<Device> UsableDevice(const std::string& text) {
  ASSIGN_OR_RETURN(Device device, ParseDevice(text));
  if (absl::StatusOr<Backend*> b = GetBackend(device); !b.ok()) {
    // The backend's message may start with the device's name: the caller
    // names the device itself.
    absl::string_view msg = b.status().message();
    absl::ConsumePrefix(&msg, absl::StrCat(DeviceName(device), ": "));
    return absl::Status(b.status().code(), msg);
  }
  return device;
}

std::optional<int> SelectDevice(const std::string& command, const std::string& text) {
  return SelectDevice(StdIo(), command, text);
}

absl::Status UseDevice(const std::string& text) {
  if (absl::StatusOr<Device> parsed = ParseDevice(text); !parsed.ok()) {
    // ParseDevice's message names the value and the spellings it accepts
    // ("device 'x' is not one of: ..."): said of the flag.
    const std::string msg(parsed.status().message());
    return absl::Status(parsed.status().code(), absl::StartsWith(msg, "device ")
                                                    ? absl::StrCat("--", msg)
                                                    : absl::StrCat("--device ", text, ": ", msg));
  }
  absl::StatusOr<Device> device = UsableDevice(text);
  absl::Status s = device.ok() ? SetDefaultDevice(*device) : device.status();
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("--device ", text, ": ", s.message()));
}

std::optional<int> SelectDevice(const CommandIo& io, const std::string& command,
                                const std::string& text) {
  if (absl::Status s = UseDevice(text); !s.ok()) return Fail(io, command, s);
  return std::nullopt;
}

int Fail(const std::string& command, const absl::Status& status) {
  return Fail(StdIo(), command, status);
}

int Fail(const CommandIo& io, const std::string& command, const absl::Status& status) {
  if (IsOptionError(status)) return UsageError(io, command, std::string(status.message()));
  std::string msg(status.message());
  for (char& c : msg)
    if (c == '\n') c = ' ';
  *io.err << "retort " << command << ": error: " << msg << "\n";
  if (io.error) *io.error = absl::Status(status.code(), msg);
  return kExitFailure;
}

int UsageError(const std::string& command, const std::string& message) {
  return UsageError(StdIo(), command, message);
}

int UsageError(const CommandIo& io, const std::string& command, const std::string& message) {
  *io.err << "retort " << command << ": " << message << " (see retort " << command << " --help)\n";
  if (io.error) *io.error = absl::InvalidArgumentError(message);
  return kExitUsage;
}

int RunJobCommand(const CommandIo& io, const CommandSpec& spec, pipeline::JobCommand& job,
                  const std::vector<std::string>& args) {
  po::options_description options("options");
  job.AddOptions(options, /*command_line=*/true);
  po::positional_options_description positional;
  for (const std::string& name : job.Positionals()) positional.add(name.c_str(), 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(io, spec, args, options, positional, vm)) return *exit;
  if (const pipeline::OutputOption* out = job.Output(); out != nullptr) {
    if (absl::Status s = out->Check(); !s.ok()) return Fail(io, spec.name, s);
  }
  std::string invocation = absl::StrCat("retort ", spec.name);
  for (const std::string& a : args) absl::StrAppend(&invocation, " ", a);
  const absl::Status s = job.Run(vm, {io.out, io.err, io.progress, invocation});
  if (s.ok()) return kExitOk;
  if (absl::IsCancelled(s)) {
    if (io.error) *io.error = s;
    return 130;
  }
  return Fail(io, spec.name, s);
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

}  // namespace retort::cli
