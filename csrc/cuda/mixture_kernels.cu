// CUDA passes of the mixture log-density and their launchers: the same
// arithmetic as csrc/cpu/mixture_kernel.cpp, on a tile that cuBLAS has just
// written. No torch header (see mixture_launchers.h).
#include "mixture_launchers.h"
#include "device_utils.cuh"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxRowBlocks = 65535;     // gridDim.y limit; rows loop beyond it
constexpr int64_t kMaxColumnBlocks = 1024;   // per row of the weights pass
constexpr int64_t kMaxForwardBlocks = int64_t{1} << 20;

template <typename scalar_t>
__device__ __forceinline__ scalar_t infinity();
template <>
__device__ __forceinline__ float infinity<float>() { return CUDART_INF_F; }
template <>
__device__ __forceinline__ double infinity<double>() { return CUDART_INF; }

struct Add {
  template <typename value_t>
  __device__ value_t operator()(value_t a, value_t b) const { return a + b; }
};

// A NaN candidate loses, so a max that starts at -inf never becomes NaN.
struct Max {
  template <typename value_t>
  __device__ value_t operator()(value_t running, value_t candidate) const {
    return candidate > running ? candidate : running;
  }
};

// Every thread gets the block's combined value, combined in a fixed order.
// All threads of the block must call it; blockDim.x is kThreads.
template <typename value_t, typename Combine>
__device__ value_t block_all_reduce(value_t value, Combine combine) {
  __shared__ value_t warp_values[kThreads / kWarpSize];
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value = combine(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  if (threadIdx.x % kWarpSize == 0) warp_values[threadIdx.x / kWarpSize] = value;
  __syncthreads();
  value_t total = warp_values[0];
  for (int warp = 1; warp < kThreads / kWarpSize; ++warp) total = combine(total, warp_values[warp]);
  __syncthreads();  // warp_values is reused by the next call
  return total;
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t logit_at(const MixtureTile<scalar_t>& tile,
                                             const scalar_t* gram_row, int64_t col) {
  return gram_row[col] * tile.inv_scale_sq + tile.center_bias[col];
}

// |z - c|^2 / (2 s^2) from differences, squares and sums in double: exact
// differences for float32 inputs.
template <typename scalar_t>
__device__ double exact_exponent(const MixtureTile<scalar_t>& tile, int64_t row, int64_t col) {
  const scalar_t* query = tile.queries + row * tile.dim;
  const scalar_t* center = tile.centers + col * tile.dim;
  double total = 0;
  for (int64_t k = 0; k < tile.dim; ++k) {
    const double difference = static_cast<double>(query[k]) - static_cast<double>(center[k]);
    total += difference * difference;
  }
  return total * tile.inv_two_scale_sq;
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t refine_threshold(const MixtureTile<scalar_t>& tile,
                                                     int64_t row, double shift) {
  const double band = tile.band[row];
  return band < 0 ? infinity<scalar_t>() : static_cast<scalar_t>(shift - band);
}

// A running logsumexp: sum of exp(exponent - shift), shift the largest
// exponent so far (as LogSumExp in the CPU kernel). A NaN makes the sum NaN.
struct LogSumExp {
  double shift;
  double sum;
};

__device__ __forceinline__ LogSumExp merge(LogSumExp a, LogSumExp b) {
  if (b.sum == 0) return a;
  if (a.sum == 0) return b;
  const double larger = b.shift > a.shift ? b.shift : a.shift;
  return {larger, a.sum * exp_of(a.shift - larger) + b.sum * exp_of(b.shift - larger)};
}

// A block reduction of LogSumExp, by its two fields: shuffles move 8 bytes.
__device__ LogSumExp block_all_merge(LogSumExp value) {
  __shared__ LogSumExp warp_values[kThreads / kWarpSize];
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const LogSumExp other{__shfl_xor_sync(0xffffffffu, value.shift, offset),
                          __shfl_xor_sync(0xffffffffu, value.sum, offset)};
    value = merge(value, other);
  }
  if (threadIdx.x % kWarpSize == 0) warp_values[threadIdx.x / kWarpSize] = value;
  __syncthreads();
  LogSumExp total = warp_values[0];
  for (int warp = 1; warp < kThreads / kWarpSize; ++warp) total = merge(total, warp_values[warp]);
  __syncthreads();  // warp_values is reused by the next call
  return total;
}

// One block per row: the tile's largest t, then the sum of exp(t - largest)
// over the entries outside the band and, with a shift of their own, the
// exact terms inside it; thread 0 folds both into the row's running state.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    forward_tile_kernel(const MixtureTile<scalar_t> tile, double* __restrict__ running_shift,
                        double* __restrict__ running_sum) {
  for (int64_t row = blockIdx.x; row < tile.rows; row += gridDim.x) {
    const double half_query_norm = tile.half_query_norm[row];
    if (!isfinite(half_query_norm)) continue;  // the same for the whole block
    const scalar_t* gram_row = tile.gram + row * tile.cols;
    scalar_t local_max = -infinity<scalar_t>();
    for (int64_t col = threadIdx.x; col < tile.cols; col += blockDim.x) {
      local_max = Max{}(local_max, logit_at(tile, gram_row, col));
    }
    const scalar_t tile_max = block_all_reduce(local_max, Max{});
    // Read before thread 0 writes it below: block_all_reduce synchronises.
    const LogSumExp previous{running_shift[row], running_sum[row]};
    const double largest =
        Max{}(previous.shift + half_query_norm, static_cast<double>(tile_max));
    const scalar_t threshold = refine_threshold(tile, row, largest);
    double approximate_sum = 0;
    LogSumExp exact{-infinity<double>(), 0};
    for (int64_t col = threadIdx.x; col < tile.cols; col += blockDim.x) {
      const scalar_t logit = logit_at(tile, gram_row, col);
      if (logit >= threshold) {
        exact = merge(exact, {-exact_exponent(tile, row, col), 1.0});
      } else {
        approximate_sum += static_cast<double>(exp_of(logit - tile_max));
      }
    }
    approximate_sum = block_all_reduce(approximate_sum, Add{});
    exact = block_all_merge(exact);
    if (threadIdx.x == 0) {
      const LogSumExp approximate{static_cast<double>(tile_max) - half_query_norm,
                                  approximate_sum};
      const LogSumExp total = merge(merge(previous, approximate), exact);
      running_shift[row] = total.shift;
      running_sum[row] = total.sum;
    }
  }
}

// W[m, n] = row_weight[m] * responsibility[m, n], in place of gram.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    weights_tile_kernel(const MixtureTile<scalar_t> tile, const double* __restrict__ log_kernel_sum,
                        const scalar_t* __restrict__ row_weight) {
  for (int64_t row = blockIdx.y; row < tile.rows; row += gridDim.y) {
    const double half_query_norm = tile.half_query_norm[row];
    const double kernel_sum = log_kernel_sum[row];
    const scalar_t weight = row_weight[row];
    const bool finite = isfinite(half_query_norm) && isfinite(kernel_sum);
    const double log_normaliser = half_query_norm + kernel_sum;  // logsumexp of t
    const scalar_t threshold = refine_threshold(tile, row, log_normaliser);
    const scalar_t shift = static_cast<scalar_t>(log_normaliser);
    scalar_t* row_values = tile.gram + row * tile.cols;
    for (int64_t col = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; col < tile.cols;
         col += int64_t{gridDim.x} * blockDim.x) {
      if (!finite) {
        row_values[col] = quiet_nan<scalar_t>();
        continue;
      }
      const scalar_t logit = logit_at(tile, row_values, col);
      scalar_t value;
      if (logit >= threshold && weight != scalar_t(0)) {
        value = static_cast<scalar_t>(weight *
                                      exp_of(-exact_exponent(tile, row, col) - kernel_sum));
      } else {
        // A responsibility is at most 1: the clamp keeps rounding from passing it.
        const scalar_t exponent = logit - shift;
        value = weight * exp_of(exponent < scalar_t(0) ? exponent : scalar_t(0));
      }
      row_values[col] = value;
    }
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_mixture_forward_tile(const MixtureTile<scalar_t>& tile, double* running_shift,
                                        double* running_sum, cudaStream_t stream) {
  if (tile.rows == 0 || tile.cols == 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>(std::min(tile.rows, kMaxForwardBlocks));
  forward_tile_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(tile, running_shift,
                                                                 running_sum);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_mixture_weights_tile(const MixtureTile<scalar_t>& tile,
                                        const double* log_kernel_sum,
                                        const scalar_t* row_weight, cudaStream_t stream) {
  if (tile.rows == 0 || tile.cols == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(std::min((tile.cols + kThreads - 1) / kThreads,
                                                 kMaxColumnBlocks)),
                  static_cast<unsigned>(std::min(tile.rows, kMaxRowBlocks)));
  weights_tile_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(tile, log_kernel_sum, row_weight);
  return cudaGetLastError();
}

#define GENVAR_INSTANTIATE_MIXTURE_LAUNCHERS(scalar_t)                                       \
  template cudaError_t launch_mixture_forward_tile<scalar_t>(                               \
      const MixtureTile<scalar_t>&, double*, double*, cudaStream_t);                      \
  template cudaError_t launch_mixture_weights_tile<scalar_t>(                               \
      const MixtureTile<scalar_t>&, const double*, const scalar_t*, cudaStream_t);

GENVAR_INSTANTIATE_MIXTURE_LAUNCHERS(float)
GENVAR_INSTANTIATE_MIXTURE_LAUNCHERS(double)

#undef GENVAR_INSTANTIATE_MIXTURE_LAUNCHERS

}  // namespace genvar::cuda
