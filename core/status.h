// Status helpers shared by every module. Errors cross module boundaries as
// absl::Status / absl::StatusOr<T>; these macros keep the happy path short.
#ifndef RETORT_CORE_STATUS_H_
#define RETORT_CORE_STATUS_H_

#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

#define RETORT_CONCAT_INNER_(a, b) a##b
#define RETORT_CONCAT_(a, b) RETORT_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status retort_status_ = (expr);          \
    if (!retort_status_.ok()) return retort_status_; \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(RETORT_CONCAT_(retort_statusor_, __LINE__), lhs, expr)

namespace retort {

// The first error of work items that run in parallel (a ParallelFor body
// cannot return one): each item calls Update with its status, the caller
// returns status() after the loop. Thread-safe.
class FirstError {
 public:
  void Update(absl::Status s) {
    if (s.ok()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (status_.ok()) status_ = std::move(s);
  }
  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::mutex mu_;
  absl::Status status_;
};

// An error in an option's value that a library job finds once it has the
// model ("--target-params 120%", a --layer-sparsity schedule for the wrong
// layer count): InvalidArgument, marked so the CLI reports it as a usage
// error (exit code 2) like the ones it finds while parsing.
inline absl::Status OptionError(absl::string_view message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload("retort/option-error", absl::Cord());
  return s;
}
inline bool IsOptionError(const absl::Status& s) {
  return s.GetPayload("retort/option-error").has_value();
}

}  // namespace retort

#endif  // RETORT_CORE_STATUS_H_
