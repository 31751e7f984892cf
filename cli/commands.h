// The `retort` subcommands. Each takes the arguments after its name and
// returns the process exit code (see cli_util.h).
#ifndef RETORT_CLI_COMMANDS_H_
#define RETORT_CLI_COMMANDS_H_

#include <string>
#include <vector>

namespace retort::cli {

using Args = std::vector<std::string>;

int RunInit(const Args& args);
int RunInspect(const Args& args);
int RunTokenize(const Args& args);
int RunGenerate(const Args& args);
int RunEval(const Args& args);
int RunConvert(const Args& args);
int RunServe(const Args& args);
int RunDistill(const Args& args);
int RunTraces(const Args& args);
int RunQuantize(const Args& args);
int RunCalibrate(const Args& args);
int RunPrune(const Args& args);
int RunRun(const Args& args);
int RunReport(const Args& args);

}  // namespace retort::cli

#endif  // RETORT_CLI_COMMANDS_H_
