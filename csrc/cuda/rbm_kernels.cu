// CUDA kernel of the RBM sweeps' fused pass (bias, beta, sigmoid, Philox
// Bernoulli draw) and its launcher.
//
// No torch header is included, so the kernel compiles with plain nvcc. One
// thread per block of 4 columns of a row, which is one Philox call (the
// layout of ../philox.h, so every backend draws the same numbers); a
// grid-stride loop covers the rest. The sigmoid uses the accurate exp, as the
// references do; nvcc may fuse beta * pre + shift into one FMA, which moves p
// by an ulp against the reference's two roundings (a flipped draw needs a
// 24-bit u within that ulp of p).
#include "rbm_launchers.h"
#include "device_utils.cuh"
#include "../philox.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {
namespace {

constexpr int kThreads = 256;

// 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below, as the CPU computes it.
template <typename scalar_t>
__device__ __forceinline__ scalar_t sigmoid_of(scalar_t logit) {
  const scalar_t e = exp_of(-(logit < scalar_t(0) ? -logit : logit));
  return (logit >= scalar_t(0) ? scalar_t(1) : e) / (scalar_t(1) + e);
}

template <typename scalar_t>
__global__ void rbm_sample_kernel(const scalar_t* __restrict__ pre,
                                  const scalar_t* __restrict__ add,
                                  const scalar_t* __restrict__ shift, scalar_t beta, int64_t rows,
                                  int64_t columns, PhiloxLayerStream stream,
                                  scalar_t* __restrict__ out) {
  const int64_t blocks_per_row = (columns + 3) / 4;
  const int64_t total = rows * blocks_per_row;
  for (int64_t index = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; index < total;
       index += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = index / blocks_per_row, block = index % blocks_per_row;
    uint32_t words[4];
    philox_block_words(stream, static_cast<uint32_t>(block), static_cast<uint32_t>(row),
                       words[0], words[1], words[2], words[3]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t column = 4 * block + k;
      if (column >= columns) break;
      const int64_t at = row * columns + column;
      const scalar_t bias = add == nullptr ? scalar_t(0) : add[column];
      const scalar_t offset = shift == nullptr ? scalar_t(0) : shift[column];
      const scalar_t p = sigmoid_of(beta * (pre[at] + bias) + offset);
      out[at] = philox_uniform<scalar_t>(words[k]) < p ? scalar_t(1) : scalar_t(0);
    }
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_rbm_sample(const scalar_t* pre, const scalar_t* add, const scalar_t* shift,
                              scalar_t beta, int64_t rows, int64_t columns, uint64_t seed,
                              uint64_t step, scalar_t* out, cudaStream_t stream) {
  const int64_t total = rows * ((columns + 3) / 4);
  if (total == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks);
  rbm_sample_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      pre, add, shift, beta, rows, columns, philox_layer_stream(seed, step), out);
  return cudaGetLastError();
}

template cudaError_t launch_rbm_sample<float>(const float*, const float*, const float*, float,
                                              int64_t, int64_t, uint64_t, uint64_t, float*,
                                              cudaStream_t);
template cudaError_t launch_rbm_sample<double>(const double*, const double*, const double*,
                                               double, int64_t, int64_t, uint64_t, uint64_t,
                                               double*, cudaStream_t);

}  // namespace genvar::cuda
