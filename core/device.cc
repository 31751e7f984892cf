#include "core/device.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/named_values.h"

namespace retort {

constexpr NamedValue<DeviceKind> kDeviceKinds[] = {{DeviceKind::kCpu, "cpu"},
                                                   {DeviceKind::kCuda, "cuda"}};

const char* DeviceKindName(DeviceKind kind) { return NameOfValue(kDeviceKinds, kind); }

std::string DeviceName(const Device& device) {
  if (device.is_cpu()) return "cpu";
  return absl::StrCat(DeviceKindName(device.kind), ":", device.index);
}

absl::StatusOr<Device> ParseDevice(const std::string& text) {
  if (text == "cpu") return Device::Cpu();
  if (text == "cuda") return Device::Cuda(0);
  const std::string kCudaPrefix = "cuda:";
  if (text.compare(0, kCudaPrefix.size(), kCudaPrefix) == 0) {
    const std::string digits = text.substr(kCudaPrefix.size());
    int index = -1;
    bool all_digits = !digits.empty() && digits.size() <= 4;
    for (char c : digits) all_digits = all_digits && c >= '0' && c <= '9';
    if (all_digits && absl::SimpleAtoi(digits, &index) && index >= 0 && index < 1024) {
      return Device::Cuda(index);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device '", text, "' is not one of: cpu, cuda, cuda:N (N the GPU's index)"));
}

}  // namespace retort
