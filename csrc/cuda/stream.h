// The stream every genvar CUDA launch goes on: PyTorch's current one (STYLE.md),
// so that the ops order with the rest of the user's work on that stream.
#pragma once

#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

namespace genvar {

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace genvar
