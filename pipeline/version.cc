// The retort version recorded by `retort run` (pipeline/runner.h). The git
// commit comes from pipeline/git_commit.h, which the build regenerates when
// HEAD or the dirty state changes (pipeline/git_commit.cmake).
#include "absl/strings/str_cat.h"
#include "pipeline/git_commit.h"
#include "pipeline/runner.h"

#ifndef RETORT_VERSION_NUMBER
#define RETORT_VERSION_NUMBER "0.0.0"
#endif

namespace retort::pipeline {

std::string RetortVersion() { return RETORT_VERSION_NUMBER; }

std::string RetortVersionString() {
  const std::string commit = RETORT_GIT_COMMIT;
  return commit.empty() ? RetortVersion() : absl::StrCat(RetortVersion(), " (git ", commit, ")");
}

}  // namespace retort::pipeline
