// Device: where a tensor's bytes live and which backend runs an op.
//
// A device is a kind (the host CPU, or an NVIDIA GPU through CUDA) and an
// index among the devices of that kind. Users name one with the CLI's
// `--device cpu|cuda[:N]` and recipes' `device` fields; ParseDevice reads
// that spelling. Which devices actually exist is kernels/'s business
// (kernels/backend.h: GetBackend); this header only names them.
#ifndef RETORT_CORE_DEVICE_H_
#define RETORT_CORE_DEVICE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace retort {

enum class DeviceKind { kCpu, kCuda };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // always 0 for the CPU

  static Device Cpu() { return Device{}; }
  static Device Cuda(int index = 0) { return Device{DeviceKind::kCuda, index}; }
  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  friend bool operator==(const Device& a, const Device& b) {
    return a.kind == b.kind && a.index == b.index;
  }
};

// "cpu", "cuda:0".
std::string DeviceName(const Device& device);
const char* DeviceKindName(DeviceKind kind);  // "cpu", "cuda"

// "cpu", "cuda" (= cuda:0) or "cuda:N" (N a decimal in [0, 1024)). Error
// (InvalidArgument, one line naming the text and the accepted spellings) for
// anything else.
absl::StatusOr<Device> ParseDevice(const std::string& text);

}  // namespace retort

#endif  // RETORT_CORE_DEVICE_H_
