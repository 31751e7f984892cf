// Collective: how data-parallel training ranks talk to each other — the
// all-reduce of the backend interface (kernels/backend.h, kernels/README.md).
//
// A trainer holds one Collective and calls AllReduceSum on its flat gradient
// arena once per optimizer step (plus a few scalars: token counts, losses).
// Two implementations:
//   - LocalCollective: one rank, every call a no-op (the default).
//   - MpiCollective: OpenMPI ranks started by `mpirun -np K retort distill`;
//     gradients are summed with MPI_Allreduce in f32.
// A GPU backend adds an NCCL implementation behind the same interface (the
// NCCL communicator is bootstrapped by broadcasting its unique id over MPI),
// so the trainer does not change.
//
// Thread-safety: called from the training thread only.
#ifndef RETORT_KERNELS_COLLECTIVE_H_
#define RETORT_KERNELS_COLLECTIVE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace retort {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // data[i] = sum over ranks of data[i], on every rank.
  virtual absl::Status AllReduceSum(float* data, int64_t n) = 0;
  virtual absl::Status AllReduceSum(double* data, int64_t n) = 0;
  // Every rank receives rank 0's bytes (resized to rank 0's size).
  virtual absl::Status Broadcast(std::string* bytes) = 0;
  virtual absl::Status Barrier() = 0;
  // A short description for logs: "local", "mpi (2 ranks)".
  virtual std::string Describe() const = 0;
};

std::unique_ptr<Collective> NewLocalCollective();

// True when this process was started by mpirun / srun (OpenMPI's or PMI's
// environment variables are set).
bool LaunchedByMpiRunner();

// Initialises MPI (once per process) and returns the world communicator's
// collective. Error when retort was built without MPI or MPI_Init fails.
absl::StatusOr<std::unique_ptr<Collective>> NewMpiCollective();

// MPI when launched by a runner, local otherwise.
absl::StatusOr<std::unique_ptr<Collective>> NewDefaultCollective();

}  // namespace retort

#endif  // RETORT_KERNELS_COLLECTIVE_H_
