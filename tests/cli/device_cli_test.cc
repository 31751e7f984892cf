// `--device cpu|cuda[:N]` on the commands that run a model (generate, eval,
// serve, distill, quantize, calibrate, prune) and `device` in recipes: a
// device this binary cannot use is one error line and exit 1 before any
// work, so no output appears; the CPU behaves as without the flag.
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/device.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/cli/cli_harness.h"

namespace retort::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

const char kAccepted[] = "is not one of: cpu, cuda, cuda:N (N the GPU's index)";

std::string Teacher() { return std::string(RETORT_SOURCE_DIR_PATH) + "/models/arith-teacher"; }

// One command line per command that takes --device, writing into `out`
// (which must not exist afterwards when the device is refused).
struct Case {
  std::string name;  // the command, as its error lines name it
  std::string args;  // without --device
  std::string out;   // what it would write ("" = stdout only)
};

class DeviceCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    h_ = new CliHarness("retort_device_cli");
    const fs::path root = h_->root();
    ASSERT_TRUE(WriteFileAtomically((root / "prompts.jsonl").string(),
                                    "{\"id\": \"a\", \"prompt\": \"1+1=\", \"answer\": \"2\"}\n")
                    .ok());
    ASSERT_TRUE(
        WriteFileAtomically((root / "text.txt").string(), "12+30=42\n7*6=42\n100-58=42\n3+4=7\n")
            .ok());
  }
  static void TearDownTestSuite() {
    delete h_;
    h_ = nullptr;
  }

  // Fresh output paths for every call.
  std::vector<Case> Cases() {
    const std::string m = Teacher();
    const std::string text = (h_->root() / "text.txt").string();
    auto out = [&](const std::string& what) {
      return (h_->root() / absl::StrCat(what, "-", n_++)).string();
    };
    std::vector<Case> cases;
    cases.push_back({"generate", m + " --prompt '1+1=' --max-tokens 2 --greedy", ""});
    const std::string traces = out("traces");
    cases.push_back({"generate",
                     m + " --prompts " + (h_->root() / "prompts.jsonl").string() + " --output " +
                         traces + " --max-tokens 2",
                     traces});
    const std::string logits = out("logits") + ".safetensors";
    cases.push_back({"eval", m + " --token-ids 1,2,3 --dump-logits " + logits, logits});
    cases.push_back({"serve", m + " --port 0", ""});
    const std::string student = out("distill");
    cases.push_back(
        {"distill", m + " --data " + text + " --output " + student + " --max-steps 1", student});
    const std::string q = out("quantize");
    cases.push_back({"quantize", m + " " + q + " --scheme int8-channel", q});
    const std::string imatrix = out("imatrix") + ".gguf";
    cases.push_back({"calibrate", m + " --calib " + text + " -o " + imatrix, imatrix});
    const std::string p = out("prune");
    cases.push_back({"prune", m + " " + p + " --sparsity 0.5", p});
    return cases;
  }

  // `retort ARGS` under a time limit: a command that ignored a refused
  // device would start work (serve would serve forever).
  CliRun Exec(const std::string& args) { return h_->ExecWithPrefix("timeout 120 ", args); }

  static CliHarness* h_;
  int n_ = 0;
};
CliHarness* DeviceCliTest::h_ = nullptr;

// Devices this build refuses, with the message the CLI adds after
// "--device DEV: " (the backend's, without a leading device name): "cuda"
// and "cuda:1" without a CUDA backend; on a GPU machine, an index it lacks.
std::vector<std::pair<std::string, std::string>> RefusedDevices() {
  std::vector<std::pair<std::string, std::string>> refused;
  for (const char* text : {"cuda", "cuda:1", "cuda:1023"}) {
    absl::StatusOr<Device> d = ParseDevice(text);
    if (!d.ok()) continue;
    absl::StatusOr<Backend*> b = GetBackend(*d);
    if (b.ok()) continue;
    absl::string_view msg = b.status().message();
    absl::ConsumePrefix(&msg, absl::StrCat(DeviceName(*d), ": "));
    refused.emplace_back(text, std::string(msg));
    if (refused.size() == 2) break;
  }
  return refused;
}

TEST_F(DeviceCliTest, ABackendThatIsNotThereIsOneLineAndNoOutput) {
  const auto refused = RefusedDevices();
  ASSERT_FALSE(refused.empty());
  const std::vector<DeviceKind> compiled = CompiledBackendKinds();
  if (std::find(compiled.begin(), compiled.end(), DeviceKind::kCuda) == compiled.end()) {
    // Without CUDA both spellings are refused for the same reason.
    ASSERT_EQ(refused.size(), 2u);
    EXPECT_EQ(refused[0].first, "cuda");
    EXPECT_EQ(refused[1].first, "cuda:1");
    EXPECT_THAT(refused[0].second, HasSubstr("built without a cuda backend (compiled backends: "));
  }
  for (const auto& [device, message] : refused) {
    for (const Case& c : Cases()) {
      SCOPED_TRACE(c.name + " " + c.args + " --device " + device);
      CliRun r = Exec(c.name + " " + c.args + " --device " + device);
      EXPECT_EQ(r.code, 1) << r.err;
      EXPECT_EQ(r.err,
                absl::StrCat("retort ", c.name, ": error: --device ", device, ": ", message, "\n"));
      EXPECT_EQ(r.out, "");
      if (!c.out.empty()) {
        EXPECT_FALSE(fs::exists(c.out));
      }
    }
  }
}

TEST_F(DeviceCliTest, AWrongSpellingListsTheAcceptedOnes) {
  for (const std::string device : {"bogus", "gpu", "cuda:x", "CPU"}) {
    for (const Case& c : Cases()) {
      SCOPED_TRACE(c.name + " --device " + device);
      CliRun r = Exec(c.name + " " + c.args + " --device " + device);
      EXPECT_EQ(r.code, 1) << r.err;
      EXPECT_EQ(r.err, absl::StrCat("retort ", c.name, ": error: --device '", device, "' ",
                                    kAccepted, "\n"));
      EXPECT_EQ(r.out, "");
      if (!c.out.empty()) {
        EXPECT_FALSE(fs::exists(c.out));
      }
    }
  }
}

TEST_F(DeviceCliTest, HelpShowsTheOptionAndOtherCommandsDoNotTakeIt) {
  for (const char* name :
       {"generate", "eval", "serve", "distill", "quantize", "calibrate", "prune"}) {
    CliRun r = Exec(absl::StrCat(name, " --help"));
    EXPECT_EQ(r.code, 0) << name;
    EXPECT_THAT(r.out, HasSubstr("--device arg (=cpu)")) << name;
    EXPECT_THAT(r.out, HasSubstr("device to run on: cpu, cuda or cuda:N")) << name;
  }
  // generate's traces mode has its own help.
  CliRun traces = Exec("generate --prompts x --help");
  EXPECT_THAT(traces.out, HasSubstr("device to run on")) << traces.err;
  // init, inspect and convert run nothing on a device: a usage error.
  const std::string out = (h_->root() / "init-out").string();
  CliRun r = Exec("init " + out + " --size tiny --device cpu");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("device"));
  EXPECT_FALSE(fs::exists(out));
  r = Exec("inspect " + Teacher() + " --device cpu");
  EXPECT_EQ(r.code, 2) << r.err;
}

// The CPU is the default: asking for it changes nothing.
TEST_F(DeviceCliTest, CpuBehavesAsBefore) {
  const std::string gen = Teacher() + " --prompt '12+30=' --max-tokens 6 --greedy --threads 1";
  CliRun plain = Exec("generate " + gen);
  ASSERT_EQ(plain.code, 0) << plain.err;
  CliRun cpu = Exec("generate " + gen + " --device cpu");
  ASSERT_EQ(cpu.code, 0) << cpu.err;
  EXPECT_EQ(cpu.out, plain.out);
  EXPECT_FALSE(plain.out.empty());

  const std::string a = (h_->root() / "cpu-a.safetensors").string();
  const std::string b = (h_->root() / "cpu-b.safetensors").string();
  const std::string eval = Teacher() + " --token-ids 1,2,3,4 --threads 1 --dump-logits ";
  CliRun r = Exec("eval " + eval + a);
  ASSERT_EQ(r.code, 0) << r.err;
  r = Exec("eval " + eval + b + " --device cpu");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, Not(HasSubstr("device")));
  EXPECT_EQ(*ReadFileToString(a), *ReadFileToString(b));
}

// A recipe's device: a wrong spelling is refused when the recipe is read, a
// device this binary cannot use before any stage runs; RUN_DIR never appears.
TEST_F(DeviceCliTest, RecipeDevicesAreCheckedBeforeAnyStageRuns) {
  const fs::path root = h_->root();
  const std::string recipe = (root / "gpu.textproto").string();
  const std::string run_dir = (root / "run-gpu").string();
  auto write = [&](const std::string& device_line) {
    ASSERT_TRUE(WriteFileAtomically(recipe, absl::StrCat(device_line, "\nstage {\n  name: \"q\"\n",
                                                         "  quantize { model: \"", Teacher(),
                                                         "\" scheme: \"int8-channel\" }\n}\n"))
                    .ok());
  };
  const auto refused = RefusedDevices();
  ASSERT_FALSE(refused.empty());
  const auto& [device, message] = refused.front();
  write(absl::StrCat("device: \"", device, "\""));
  CliRun r = Exec("run " + recipe + " -o " + run_dir);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(r.err, absl::StrCat("retort run: error: ", recipe, ": device \"", device,
                                "\": ", message, "\n"));
  EXPECT_FALSE(fs::exists(run_dir));

  write("device: \"bogus\"");
  r = Exec("run " + recipe + " -o " + run_dir);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(r.err,
            absl::StrCat("retort run: error: ", recipe, ":1: device 'bogus' ", kAccepted, "\n"));
  EXPECT_FALSE(fs::exists(run_dir));

  // "cpu" runs, with the stage's command as it always was.
  write("device: \"cpu\"");
  r = Exec("run " + recipe + " -o " + run_dir + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(*ReadFileToString(run_dir + "/q/log.txt"), Not(HasSubstr("--device")));
  EXPECT_TRUE(fs::exists(run_dir + "/q/final/config.json"));
}

}  // namespace
}  // namespace retort::testing
