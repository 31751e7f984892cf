#include "kernels/backend.h"

#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu/cpu_backend.h"

namespace retort {

// ---- Buffer ------------------------------------------------------------------

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    Reset();
    backend_ = std::exchange(other.backend_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void Buffer::Reset() {
  if (data_ != nullptr) backend_->FreeRaw(data_);
  backend_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

Device Buffer::device() const { return backend_ ? backend_->device() : Device::Cpu(); }

Tensor Buffer::View(DType dtype, Shape shape) const {
  return backend_->DeviceTensor(dtype, std::move(shape), data_);
}

// ---- Backend -----------------------------------------------------------------

absl::StatusOr<Buffer> Backend::Allocate(size_t bytes) {
  absl::StatusOr<void*> p = AllocateRaw(bytes);
  if (!p.ok()) return p.status();
  Buffer b;
  b.backend_ = this;
  b.data_ = *p;
  b.size_ = bytes;
  return b;
}

Tensor Backend::DeviceTensor(DType dtype, Shape shape, void* data) const {
  return Tensor::DeviceView(dtype, std::move(shape), data, device(), nullptr);
}

absl::StatusOr<Tensor> Backend::ToHost(const Tensor& t) {
  if (t.on_host()) return t;
  if (!(t.device() == device())) {
    return absl::InvalidArgumentError(absl::StrCat("ToHost: the tensor is on ",
                                                   DeviceName(t.device()), ", this backend is ",
                                                   DeviceName(device())));
  }
  Tensor out = Tensor::Zeros(t.dtype(), t.shape());
  absl::Status s = CopyToHost(t.device_data(), out.mutable_raw(), t.nbytes());
  if (!s.ok()) return s;
  return out;
}

// ---- Registry ----------------------------------------------------------------
namespace {

// The backends compiled into this binary: one line each (kernels/README.md
// says how a new one plugs in).
struct BackendEntry {
  DeviceKind kind;
  std::unique_ptr<Backend> (*create)();  // the context of device index 0
};
const BackendEntry kBackends[] = {
    {DeviceKind::kCpu, &cpu::NewCpuBackend},
};

struct Registry {
  std::mutex mu;
  std::map<std::pair<int, int>, std::unique_ptr<Backend>> contexts;
  std::atomic<Backend*> default_backend{nullptr};  // read on every model op: no lock
};
Registry& TheRegistry() {
  static Registry* r = new Registry();  // never destroyed: backends outlive static destructors
  return *r;
}

std::string CompiledList() {
  std::vector<std::string> names;
  for (const BackendEntry& e : kBackends) names.push_back(DeviceKindName(e.kind));
  return absl::StrJoin(names, ", ");
}

}  // namespace

std::vector<DeviceKind> CompiledBackendKinds() {
  std::vector<DeviceKind> kinds;
  for (const BackendEntry& e : kBackends) kinds.push_back(e.kind);
  return kinds;
}

absl::StatusOr<Backend*> GetBackend(const Device& device) {
  const BackendEntry* entry = nullptr;
  for (const BackendEntry& e : kBackends) {
    if (e.kind == device.kind) entry = &e;
  }
  if (entry == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("this retort was built without a ", DeviceKindName(device.kind),
                     " backend (compiled backends: ", CompiledList(), ")"));
  }
  if (device.index != 0) {
    return absl::NotFoundError(absl::StrCat(DeviceName(device), ": this machine has one ",
                                            DeviceKindName(device.kind), " device (",
                                            DeviceName(Device{device.kind, 0}), ")"));
  }
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto key = std::make_pair(static_cast<int>(device.kind), device.index);
  auto it = r.contexts.find(key);
  if (it == r.contexts.end()) it = r.contexts.emplace(key, entry->create()).first;
  return it->second.get();
}

Backend& CpuBackend() {
  static Backend* cpu = *GetBackend(Device::Cpu());
  return *cpu;
}

Backend& DefaultBackend() {
  Registry& r = TheRegistry();
  if (Backend* b = r.default_backend.load(std::memory_order_acquire)) return *b;
  Backend* expected = nullptr;
  r.default_backend.compare_exchange_strong(expected, &CpuBackend());
  return *r.default_backend.load(std::memory_order_acquire);
}

absl::Status SetDefaultDevice(const Device& device) {
  absl::StatusOr<Backend*> b = GetBackend(device);
  if (!b.ok()) return b.status();
  Registry& r = TheRegistry();
  r.default_backend.store(*b, std::memory_order_release);
  return absl::OkStatus();
}

}  // namespace retort
