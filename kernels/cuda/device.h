// Probing for a usable GPU. Without a driver cudaGetDeviceCount returns an
// error (35, driver insufficient) rather than crashing; any error means "no GPU".
#ifndef RETORT_KERNELS_CUDA_DEVICE_H_
#define RETORT_KERNELS_CUDA_DEVICE_H_

namespace retort::cuda {

// Number of CUDA devices usable by this process; 0 when there is no driver.
int UsableDeviceCount();

}  // namespace retort::cuda

#endif  // RETORT_KERNELS_CUDA_DEVICE_H_
