// The `retort` subcommands. Each takes the arguments after its name and
// returns the process exit code (see cli_util.h). The ones a recipe stage
// can become (`retort run`) also take the CommandIo they write to.
#ifndef RETORT_CLI_COMMANDS_H_
#define RETORT_CLI_COMMANDS_H_

#include <string>
#include <vector>

#include "cli/cli_util.h"

namespace retort::cli {

using Args = std::vector<std::string>;

int RunInit(const Args& args, const CommandIo& io);
inline int RunInit(const Args& args) { return RunInit(args, StdIo()); }
int RunInspect(const Args& args);
int RunTokenize(const Args& args);
int RunGenerate(const Args& args, const CommandIo& io);
inline int RunGenerate(const Args& args) { return RunGenerate(args, StdIo()); }
int RunEval(const Args& args);
int RunConvert(const Args& args, const CommandIo& io);
inline int RunConvert(const Args& args) { return RunConvert(args, StdIo()); }
int RunServe(const Args& args);
int RunDistill(const Args& args, const CommandIo& io);
inline int RunDistill(const Args& args) { return RunDistill(args, StdIo()); }
int RunTraces(const Args& args);
int RunQuantize(const Args& args, const CommandIo& io);
inline int RunQuantize(const Args& args) { return RunQuantize(args, StdIo()); }
int RunCalibrate(const Args& args, const CommandIo& io);
inline int RunCalibrate(const Args& args) { return RunCalibrate(args, StdIo()); }
int RunPrune(const Args& args, const CommandIo& io);
inline int RunPrune(const Args& args) { return RunPrune(args, StdIo()); }
int RunRun(const Args& args);
// `retort stage-job FILE`: one rank of a multi-rank `retort run` stage.
int RunStageJobCommand(const Args& args);
int RunReport(const Args& args);

}  // namespace retort::cli

#endif  // RETORT_CLI_COMMANDS_H_
