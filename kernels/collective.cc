#include "kernels/collective.h"

#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"

#ifdef RETORT_HAVE_MPI
#include <mpi.h>
#endif

namespace retort {
namespace {

class LocalCollective : public Collective {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::OkStatus(); }
  absl::Status AllReduceSum(double*, int64_t) override { return absl::OkStatus(); }
  absl::Status Broadcast(std::string*) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
  std::string Describe() const override { return "local (1 rank)"; }
};

#ifdef RETORT_HAVE_MPI
absl::Status MpiError(const char* what, int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return absl::InternalError(absl::StrCat(what, " failed: ", std::string(text, len)));
}

// MPI counts are int: large arrays go in pieces.
constexpr int64_t kMaxCount = std::numeric_limits<int>::max() / 2;

class MpiCollective : public Collective {
 public:
  MpiCollective(int rank, int world) : rank_(rank), world_(world) {}
  ~MpiCollective() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  absl::Status AllReduceSum(float* data, int64_t n) override { return Reduce(data, n, MPI_FLOAT); }
  absl::Status AllReduceSum(double* data, int64_t n) override {
    return Reduce(data, n, MPI_DOUBLE);
  }
  absl::Status Broadcast(std::string* bytes) override {
    int64_t size = static_cast<int64_t>(bytes->size());
    if (int rc = MPI_Bcast(&size, 1, MPI_INT64_T, 0, MPI_COMM_WORLD); rc != MPI_SUCCESS) {
      return MpiError("MPI_Bcast", rc);
    }
    bytes->resize(size);
    for (int64_t off = 0; off < size; off += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, size - off));
      if (int rc = MPI_Bcast(bytes->data() + off, count, MPI_BYTE, 0, MPI_COMM_WORLD);
          rc != MPI_SUCCESS) {
        return MpiError("MPI_Bcast", rc);
      }
    }
    return absl::OkStatus();
  }
  absl::Status Barrier() override {
    if (int rc = MPI_Barrier(MPI_COMM_WORLD); rc != MPI_SUCCESS) return MpiError("MPI_Barrier", rc);
    return absl::OkStatus();
  }
  std::string Describe() const override { return absl::StrCat("mpi (", world_, " ranks)"); }

 private:
  template <typename T>
  absl::Status Reduce(T* data, int64_t n, MPI_Datatype type) {
    for (int64_t off = 0; off < n; off += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, n - off));
      if (int rc = MPI_Allreduce(MPI_IN_PLACE, data + off, count, type, MPI_SUM, MPI_COMM_WORLD);
          rc != MPI_SUCCESS) {
        return MpiError("MPI_Allreduce", rc);
      }
    }
    return absl::OkStatus();
  }
  int rank_, world_;
};
#endif

}  // namespace

std::unique_ptr<Collective> NewLocalCollective() { return std::make_unique<LocalCollective>(); }

bool LaunchedByMpiRunner() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<Collective>> NewMpiCollective() {
#ifdef RETORT_HAVE_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    if (int rc = MPI_Init(nullptr, nullptr); rc != MPI_SUCCESS) return MpiError("MPI_Init", rc);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  return std::unique_ptr<Collective>(new MpiCollective(rank, world));
#else
  return absl::FailedPreconditionError(
      "this retort was built without MPI (install libopenmpi-dev and rebuild)");
#endif
}

absl::StatusOr<std::unique_ptr<Collective>> NewDefaultCollective() {
  if (LaunchedByMpiRunner()) return NewMpiCollective();
  return NewLocalCollective();
}

}  // namespace retort
