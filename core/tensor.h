// Tensor: a shape, an element type and a reference to bytes.
//
// The bytes are either owned (64-byte aligned heap buffer) or borrowed from a
// longer-lived object such as a memory-mapped file or a device buffer, which
// the tensor keeps alive through a shared_ptr. location() says where they
// are: the host heap, a memory map, or a device (kernels/backend.h). The
// bytes of a device tensor cannot be read on the host: raw() and data() are
// host-only (they abort naming the device), device_data() gives the device
// address for kernels, and Backend::ToHost makes the explicit host copy.
// Copying a Tensor copies the reference, not the data (like a shared
// buffer); Clone() makes a deep copy. Row-major, contiguous.
// Thread-safety: const methods are safe; mutation of shared bytes is the
// caller's business. Tensors over read-only mappings must not be written.
#ifndef RETORT_CORE_TENSOR_H_
#define RETORT_CORE_TENSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/device.h"
#include "core/dtype.h"

namespace retort {

using Shape = std::vector<int64_t>;

int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);  // "[2, 3]"

// Where a tensor's bytes live.
enum class TensorLocation {
  kHost,    // heap memory of this process (owned or borrowed)
  kMapped,  // a memory-mapped file (read-only unless the mapping says otherwise)
  kDevice,  // memory of device() (not readable on the host)
};
const char* TensorLocationName(TensorLocation location);  // "host", "mapped", "device"

class Tensor {
 public:
  Tensor() = default;

  // A zero-filled owned tensor.
  static Tensor Zeros(DType dtype, Shape shape);
  // Borrows `data` (DTypeBytes(dtype, numel) bytes); `owner` keeps it alive.
  static Tensor View(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner,
                     TensorLocation location = TensorLocation::kHost);
  // Borrows `data`, an address in the memory of `device` (not the CPU).
  static Tensor DeviceView(DType dtype, Shape shape, void* data, const Device& device,
                           std::shared_ptr<const void> owner);

  bool empty() const { return data_ == nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return DTypeBytes(dtype_, numel()); }

  TensorLocation location() const { return location_; }
  // The CPU for host and mapped tensors.
  const Device& device() const { return device_; }
  bool on_host() const { return location_ != TensorLocation::kDevice; }

  // Host bytes. REQUIRES: on_host() (a device tensor aborts with a message
  // naming its device: copy it with Backend::ToHost first).
  const void* raw() const { return HostBytes(); }
  void* mutable_raw() { return HostBytes(); }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(static_cast<const void*>(HostBytes()));
  }
  template <typename T>
  T* mutable_data() {
    return static_cast<T*>(static_cast<void*>(HostBytes()));
  }
  // The address of the bytes on device(), for kernels of that device.
  void* device_data() const { return data_; }

  // Same bytes, new shape with the same element count.
  absl::StatusOr<Tensor> Reshape(Shape shape) const;
  // Rows [begin, end) of the leading dimension, sharing storage.
  // REQUIRES: for packed I4, an even number of elements per row (rows must
  // start on a byte boundary).
  Tensor Rows(int64_t begin, int64_t end) const;
  // Deep copy into an owned host buffer. REQUIRES: on_host().
  Tensor Clone() const;
  // Owned copy converted to `dtype` (see core/convert.h for rounding).
  Tensor To(DType dtype) const;

 private:
  char* HostBytes() const {
    if (location_ == TensorLocation::kDevice) AbortOnDeviceAccess();
    return data_;
  }
  [[noreturn]] void AbortOnDeviceAccess() const;

  DType dtype_ = DType::kF32;
  TensorLocation location_ = TensorLocation::kHost;
  Device device_;
  Shape shape_;
  char* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace retort

#endif  // RETORT_CORE_TENSOR_H_
