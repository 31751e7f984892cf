#include <cuda_runtime.h>

#include "kernels/cuda/device.h"

namespace retort::cuda {

int UsableDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

}  // namespace retort::cuda
