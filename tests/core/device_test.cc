// Devices (core/device.h), where a tensor's bytes live (core/tensor.h) and
// the backend registry's answers for devices that are not there
// (kernels/backend.h: GetBackend, SetDefaultDevice). Issue 15, items 2 and 6.
#include "core/device.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace retort {
namespace {

bool Compiled(DeviceKind kind) {
  const std::vector<DeviceKind> kinds = CompiledBackendKinds();
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

TEST(ParseDeviceTest, AcceptedSpellings) {
  struct Want {
    const char* text;
    Device device;
  };
  for (const Want& w : {Want{"cpu", Device::Cpu()}, Want{"cuda", Device::Cuda(0)},
                        Want{"cuda:0", Device::Cuda(0)}, Want{"cuda:1", Device::Cuda(1)},
                        Want{"cuda:17", Device::Cuda(17)}, Want{"cuda:1023", Device::Cuda(1023)}}) {
    absl::StatusOr<Device> d = ParseDevice(w.text);
    ASSERT_TRUE(d.ok()) << w.text << ": " << d.status();
    EXPECT_EQ(*d, w.device) << w.text;
  }
}

TEST(ParseDeviceTest, RejectedSpellings) {
  for (const char* text : {"", "CPU", "gpu", "cuda:", "cuda:-1", "cuda:1024", "cuda:99999",
                           "cuda:1x", "cuda: 1", " cpu", "cpu:0", "cuda:+1", "cuda0", "metal"}) {
    absl::StatusOr<Device> d = ParseDevice(text);
    ASSERT_FALSE(d.ok()) << "'" << text << "' was accepted";
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << text;
    // One line naming the text and the accepted spellings.
    const std::string msg(d.status().message());
    EXPECT_NE(msg.find(std::string("'") + text + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda:N"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(DeviceTest, Names) {
  EXPECT_EQ(DeviceName(Device::Cpu()), "cpu");
  EXPECT_EQ(DeviceName(Device::Cuda(0)), "cuda:0");
  EXPECT_EQ(DeviceName(Device::Cuda(3)), "cuda:3");
  EXPECT_STREQ(DeviceKindName(DeviceKind::kCpu), "cpu");
  EXPECT_STREQ(DeviceKindName(DeviceKind::kCuda), "cuda");
  EXPECT_TRUE(Device::Cpu().is_cpu());
  EXPECT_FALSE(Device::Cuda(0).is_cpu());
  EXPECT_FALSE(Device::Cuda(0) == Device::Cuda(1));
  // Every spelling DeviceName gives parses back.
  for (const Device& d : {Device::Cpu(), Device::Cuda(0), Device::Cuda(5)}) {
    absl::StatusOr<Device> back = ParseDevice(DeviceName(d));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, d);
  }
}

TEST(TensorLocationTest, HostTensors) {
  Tensor z = Tensor::Zeros(DType::kF32, {2, 3});
  EXPECT_EQ(z.location(), TensorLocation::kHost);
  EXPECT_TRUE(z.on_host());
  EXPECT_EQ(z.device(), Device::Cpu());
  EXPECT_NE(z.raw(), nullptr);
  EXPECT_EQ(z.device_data(), z.raw());

  float backing[4] = {1, 2, 3, 4};
  Tensor mapped = Tensor::View(DType::kF32, {4}, backing, nullptr, TensorLocation::kMapped);
  EXPECT_EQ(mapped.location(), TensorLocation::kMapped);
  EXPECT_TRUE(mapped.on_host());
  EXPECT_EQ(mapped.data<float>()[2], 3.f);

  // A "device" view on the CPU is host memory.
  Tensor cpu_view = Tensor::DeviceView(DType::kF32, {4}, backing, Device::Cpu(), nullptr);
  EXPECT_EQ(cpu_view.location(), TensorLocation::kHost);
  EXPECT_TRUE(cpu_view.on_host());

  EXPECT_STREQ(TensorLocationName(TensorLocation::kHost), "host");
  EXPECT_STREQ(TensorLocationName(TensorLocation::kMapped), "mapped");
  EXPECT_STREQ(TensorLocationName(TensorLocation::kDevice), "device");
}

TEST(TensorLocationTest, DeviceTensorKeepsItsAddress) {
  // The address is never dereferenced: a device tensor's bytes are not host
  // memory.
  void* fake = reinterpret_cast<void*>(uintptr_t{0x7f0000001000});
  Tensor t = Tensor::DeviceView(DType::kBF16, {3, 8}, fake, Device::Cuda(1), nullptr);
  EXPECT_EQ(t.location(), TensorLocation::kDevice);
  EXPECT_FALSE(t.on_host());
  EXPECT_EQ(t.device(), Device::Cuda(1));
  EXPECT_EQ(t.device_data(), fake);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(t.shape(), (Shape{3, 8}));
  // Shape-only operations keep the location.
  absl::StatusOr<Tensor> r = t.Reshape({24});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->location(), TensorLocation::kDevice);
  EXPECT_EQ(r->device(), Device::Cuda(1));
}

TEST(TensorLocationDeathTest, HostAccessToDeviceBytesAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  void* fake = reinterpret_cast<void*>(uintptr_t{0x7f0000001000});
  Tensor t = Tensor::DeviceView(DType::kF32, {2, 2}, fake, Device::Cuda(1), nullptr);
  EXPECT_DEATH((void)t.raw(), "on cuda:1.*Backend::ToHost");
  EXPECT_DEATH((void)t.data<float>(), "on cuda:1");
  EXPECT_DEATH((void)t.mutable_raw(), "on cuda:1");
  EXPECT_DEATH((void)t.Clone(), "cuda:1");
}

TEST(RegistryTest, CpuIsAlwaysThere) {
  const std::vector<DeviceKind> kinds = CompiledBackendKinds();
  ASSERT_FALSE(kinds.empty());
  EXPECT_EQ(kinds.front(), DeviceKind::kCpu) << "the CPU comes first";
  absl::StatusOr<Backend*> cpu = GetBackend(Device::Cpu());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(*cpu, &CpuBackend());
  EXPECT_EQ((*cpu)->device(), Device::Cpu());
  EXPECT_FALSE((*cpu)->Describe().empty());
  // The same context every time.
  absl::StatusOr<Backend*> again = GetBackend(Device::Cpu());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *cpu);
}

TEST(RegistryTest, NoSuchCpu) {
  absl::StatusOr<Backend*> b = GetBackend(Device{DeviceKind::kCpu, 1});
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound) << b.status();
  EXPECT_EQ(std::string(b.status().message()).find('\n'), std::string::npos);
}

TEST(RegistryTest, CudaNotCompiledInIsFailedPrecondition) {
  if (Compiled(DeviceKind::kCuda)) {
    // Built with CUDA: cuda:1023 is past any machine's devices.
    absl::StatusOr<Backend*> b = GetBackend(Device::Cuda(1023));
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound) << b.status();
    return;
  }
  for (int index : {0, 3}) {
    absl::StatusOr<Backend*> b = GetBackend(Device::Cuda(index));
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
    const std::string msg(b.status().message());
    EXPECT_NE(msg.find("cuda"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(RegistryTest, SetDefaultDeviceToAMissingDeviceChangesNothing) {
  Backend* before = &DefaultBackend();
  EXPECT_EQ(before->device(), Device::Cpu()) << "the default starts as the CPU";
  if (!Compiled(DeviceKind::kCuda)) {
    const absl::Status s = SetDefaultDevice(Device::Cuda(0));
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  }
  EXPECT_EQ(SetDefaultDevice(Device::Cuda(1023)).ok(), false);
  EXPECT_EQ(SetDefaultDevice(Device{DeviceKind::kCpu, 1}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(&DefaultBackend(), before);
  EXPECT_TRUE(SetDefaultDevice(Device::Cpu()).ok());
  EXPECT_EQ(&DefaultBackend(), &CpuBackend());
}

}  // namespace
}  // namespace retort
