#include "core/tensor.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/convert.h"
#include "core/named_values.h"

namespace retort {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  size_t bytes = (t.nbytes() + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  // Like operator new: the CLI turns this into "out of memory while running
  // <command>" rather than a crash on a null pointer.
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  t.data_ = static_cast<char*>(p);
  t.owner_ = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  return t;
}

constexpr NamedValue<TensorLocation> kTensorLocations[] = {{TensorLocation::kHost, "host"},
                                                           {TensorLocation::kMapped, "mapped"},
                                                           {TensorLocation::kDevice, "device"}};

const char* TensorLocationName(TensorLocation location) {
  return NameOfValue(kTensorLocations, location);
}

void Tensor::AbortOnDeviceAccess() const {
  std::fprintf(stderr,
               "retort: internal error: host access to the bytes of a %s %s tensor on %s "
               "(copy it to the host with Backend::ToHost first)\n",
               std::string(DTypeName(dtype_)).c_str(), ShapeString(shape_).c_str(),
               DeviceName(device_).c_str());
  std::abort();
}

Tensor Tensor::DeviceView(DType dtype, Shape shape, void* data, const Device& device,
                          std::shared_ptr<const void> owner) {
  Tensor t = View(dtype, std::move(shape), data, std::move(owner), TensorLocation::kDevice);
  t.device_ = device;
  if (device.is_cpu()) t.location_ = TensorLocation::kHost;
  return t;
}

Tensor Tensor::View(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner,
                    TensorLocation location) {
  Tensor t;
  t.location_ = location;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = static_cast<char*>(const_cast<void*>(data));
  t.owner_ = std::move(owner);
  return t;
}

absl::StatusOr<Tensor> Tensor::Reshape(Shape shape) const {
  if (NumElements(shape) != numel()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot reshape ", ShapeString(shape_), " to ", ShapeString(shape)));
  }
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::Rows(int64_t begin, int64_t end) const {
  Tensor t = *this;
  int64_t row = shape_.empty() ? 1 : numel() / shape_[0];
  t.shape_[0] = end - begin;
  t.data_ = data_ + DTypeBytes(dtype_, begin * row);
  return t;
}

Tensor Tensor::Clone() const {
  Tensor t = Zeros(dtype_, shape_);
  if (nbytes()) std::memcpy(t.data_, HostBytes(), nbytes());
  return t;
}

Tensor Tensor::To(DType dtype) const {
  if (dtype == dtype_) return Clone();
  Tensor f32;
  if (dtype_ == DType::kF32) {
    f32 = *this;
  } else {
    f32 = Zeros(DType::kF32, shape_);
    ConvertToF32(dtype_, HostBytes(), f32.mutable_data<float>(), numel());
  }
  if (dtype == DType::kF32) return f32;
  Tensor out = Zeros(dtype, shape_);
  ConvertFromF32(dtype, f32.data<float>(), out.data_, numel());
  return out;
}

}  // namespace retort
