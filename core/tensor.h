// Tensor: a shape, an element type and a reference to bytes.
//
// The bytes are either owned (64-byte aligned heap buffer) or borrowed from a
// longer-lived object such as a memory-mapped file, which the tensor keeps
// alive through a shared_ptr. Copying a Tensor copies the reference, not the
// data (like a shared buffer); Clone() makes a deep copy. Row-major, contiguous.
// Thread-safety: const methods are safe; mutation of shared bytes is the
// caller's business. Tensors over read-only mappings must not be written.
#ifndef RETORT_CORE_TENSOR_H_
#define RETORT_CORE_TENSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/dtype.h"

namespace retort {

using Shape = std::vector<int64_t>;

int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);  // "[2, 3]"

class Tensor {
 public:
  Tensor() = default;

  // A zero-filled owned tensor.
  static Tensor Zeros(DType dtype, Shape shape);
  // Borrows `data` (DTypeBytes(dtype, numel) bytes); `owner` keeps it alive.
  static Tensor View(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner);

  bool empty() const { return data_ == nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return DTypeBytes(dtype_, numel()); }

  const void* raw() const { return data_; }
  void* mutable_raw() { return data_; }
  template <typename T>
  const T* data() const { return static_cast<const T*>(static_cast<const void*>(data_)); }
  template <typename T>
  T* mutable_data() { return static_cast<T*>(static_cast<void*>(data_)); }

  // Same bytes, new shape with the same element count.
  absl::StatusOr<Tensor> Reshape(Shape shape) const;
  // Rows [begin, end) of the leading dimension, sharing storage.
  // REQUIRES: for packed I4, an even number of elements per row (rows must
  // start on a byte boundary).
  Tensor Rows(int64_t begin, int64_t end) const;
  // Deep copy into an owned buffer.
  Tensor Clone() const;
  // Owned copy converted to `dtype` (see core/convert.h for rounding).
  Tensor To(DType dtype) const;

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  char* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace retort

#endif  // RETORT_CORE_TENSOR_H_
