// The mixture log-density ops on CUDA: the passes over a tile that cuBLAS
// has just written, with the same arithmetic as the CPU's (../ops/mixture.cpp),
// their launchers, and the ops' CUDA implementations.
//
// The passes and launchers include no torch header, so they compile with
// plain nvcc; the implementations run the GEMMs (cuBLAS, through ATen) and
// hand each tile over as a MixtureTile of device pointers (../ops/mixture.h).
// Each launcher enqueues on `stream`, never synchronises, launches nothing
// for an empty tile and returns the launch error. Only float and double
// exist. The tile loop, the GEMMs (at::mm_out, on torch's current stream)
// and the set-up are the shared ones of ../ops/mixture.h; only the passes
// over each tile differ from the CPU.
#include "device_utils.cuh"
#include "../ops/mixture.h"

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

// Folds the tile into each row's running logsumexp of -|z - c_n|^2 / (2 s^2),
// held as running_shift[rows] and running_sum[rows] = sum exp(exponent -
// shift) (both double; see mixture_log_density_tiled), the entries within the
// row's band taken from exact differences. Leaves rows whose
// half_query_norm is not finite alone.
template <typename scalar_t>
cudaError_t launch_mixture_forward_tile(const MixtureTile<scalar_t>& tile, double* running_shift,
                                        double* running_sum, cudaStream_t stream) {
  if (tile.rows == 0 || tile.cols == 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>(std::min(tile.rows, kMaxForwardBlocks));
  forward_tile_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(tile, running_shift,
                                                                 running_sum);
  return cudaGetLastError();
}

// Overwrites tile.gram with W[m, n] = row_weight[m] * responsibility[m, n],
// responsibility = exp(t[m, n] - log_normaliser_m), log_normaliser_m =
// half_query_norm[m] + log_kernel_sum[m]; NaN rows where either is not finite.
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

// ---------------------------------------------------------------------------
// The ops' CUDA implementations and their registration: tensor handling in
// ATen, raw pointers into the launchers above. Only a CUDA build of the
// extension (GENVAR_WITH_CUDA: setup.py, CMake) compiles this part; nvcc
// alone, as in tests/test_cuda_compile.py, compiles the kernels without torch.
#ifdef GENVAR_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "stream.h"

namespace genvar {
namespace {

// 2048 x 8192 logits: 64 MB in float32; each GEMM is then large enough to
// keep the GPU busy, and a forward at M = 5000, N = 50000 takes 21 tiles.
constexpr MixtureTiling kTiling{2048, 8192};

template <typename scalar_t>
void forward_pass(const MixtureTile<scalar_t>& tile, double* running_shift, double* running_sum) {
  C10_CUDA_CHECK(genvar::cuda::launch_mixture_forward_tile<scalar_t>(
      tile, running_shift, running_sum, current_stream()));
}

template <typename scalar_t>
void weights_pass(const MixtureTile<scalar_t>& tile, const double* log_kernel_sum,
                  const scalar_t* row_weight) {
  C10_CUDA_CHECK(genvar::cuda::launch_mixture_weights_tile<scalar_t>(
      tile, log_kernel_sum, row_weight, current_stream()));
}

MixturePrepared prepare(const at::Tensor& z, const at::Tensor& centers, double scale,
                        double refine_ulps) {
  return prepare_mixture(z, centers, scale,
                         gemm_unit_roundoff(z.scalar_type(), at::Float32Backend::CUDA),
                         refine_ulps);
}

at::Tensor mixture_log_density_cuda(const at::Tensor& z, const at::Tensor& centers,
                                    double scale) {
  check_mixture_log_density_args(z, centers, scale);
  const c10::cuda::CUDAGuard device_guard(z.device());
  if (z.size(0) == 0) return at::empty({0}, z.options());
  const MixturePrepared prepared = prepare(z, centers, scale, kForwardRefineUlps);
  at::Tensor log_density;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "mixture_log_density_cuda", [&] {
    log_density = mixture_log_density_tiled<scalar_t>(prepared, kTiling,
                                                      &forward_pass<scalar_t>);
  });
  return log_density;
}

std::tuple<at::Tensor, at::Tensor> mixture_log_density_backward_cuda(
    const at::Tensor& grad_log_density, const at::Tensor& z, const at::Tensor& centers,
    double scale) {
  check_mixture_log_density_backward_args(grad_log_density, z, centers, scale);
  const c10::cuda::CUDAGuard device_guard(z.device());
  if (z.size(0) == 0) return {at::zeros_like(z), at::zeros_like(centers)};
  const MixturePrepared prepared = prepare(z, centers, scale, kBackwardRefineUlps);
  const MixtureBackwardPrepared backward = prepare_mixture_backward(prepared, grad_log_density);
  std::tuple<at::Tensor, at::Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "mixture_log_density_backward_cuda", [&] {
    grads = mixture_log_density_backward_tiled<scalar_t>(
        prepared, backward, kTiling, &forward_pass<scalar_t>, &weights_pass<scalar_t>);
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) {
  m.impl("mixture_log_density", &mixture_log_density_cuda);
  m.impl("mixture_log_density_backward", &mixture_log_density_backward_cuda);
}

}  // namespace genvar

#endif  // GENVAR_WITH_CUDA
