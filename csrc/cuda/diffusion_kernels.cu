// CUDA kernels of the diffusion KL ops and their launchers.
//
// No torch header is included, so the kernels compile with plain nvcc. One
// block per (slice, example) row, grid-striding over rows; its threads stride
// over D (coalesced) and the row's KL is a block sum in scalar_t, as on the
// CPU. Each row reads its step's entries of the schedule table (built per call
// by diffusion_cuda.cpp, layout in ../ops/diffusion_table.h) once, so an
// element costs one exp (and, for the binomial KL, one log1p).
#include "diffusion_launchers.h"
#include "device_utils.cuh"
#include "../ops/diffusion_table.h"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {
namespace {

// kValue: the KL. kValueAndGrad: the KL and the derivatives (the training
// path's forward). kGrad: the derivatives times grad[row], no KL.
enum class Pass { kValue, kValueAndGrad, kGrad };

// The row's table entries, or those of step 1 with `poison` NaN where the
// step is out of [1, T] (the host checks; this only keeps reads in bounds).
template <typename scalar_t>
__device__ __forceinline__ const double* step_entries(const double* table, int64_t step,
                                                      int64_t num_steps, int64_t columns,
                                                      scalar_t& poison) {
  const bool valid = step >= 1 && step <= num_steps;
  poison = valid ? scalar_t(0) : quiet_nan<scalar_t>();
  return table + ((valid ? step : 1) - 1) * columns;
}

// The cell of binary (x_t, x_0) among c<x_t><x_0>, by selects (no local array).
template <typename scalar_t>
__device__ __forceinline__ scalar_t select_cell(scalar_t c00, scalar_t c01, scalar_t c10,
                                                scalar_t c11, bool noisy_one, bool clean_one) {
  return clean_one ? (noisy_one ? c11 : c01) : (noisy_one ? c10 : c00);
}

template <typename scalar_t>
__device__ __forceinline__ bool is_binary(scalar_t value) {
  return value == scalar_t(0) || value == scalar_t(1);
}

// Per element, with e = exp(-|l|) and the row's q and entropy h for the cell:
// KL = softplus(l) - q l - h, d KL / d l = sigmoid(l) - q. A non-binary x0 or
// xt element makes both NaN (the CPU raises instead).
template <typename scalar_t, Pass kPass>
__global__ void __launch_bounds__(kMaxRowThreads)
    binomial_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x0,
                    const scalar_t* __restrict__ xt, const scalar_t* __restrict__ logits,
                    const int64_t* __restrict__ steps, const double* __restrict__ table,
                    scalar_t* __restrict__ kl, scalar_t* __restrict__ out, DiffusionShape shape) {
  const int64_t num_rows = shape.num_slices * shape.batch, data_dim = shape.data_dim;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    scalar_t poison;
    const double* entry =
        step_entries(table, steps[row], shape.num_steps, kBinomialColumns, poison);
    const double* q = entry + kBinomialQ;
    const double* h = entry + kBinomialEntropy;
    const scalar_t q00 = q[0], q01 = q[1], q10 = q[2], q11 = q[3];
    const scalar_t h00 = h[0], h01 = h[1], h10 = h[2], h11 = h[3];
    const scalar_t scale = kPass == Pass::kGrad ? grad[row] : scalar_t(1);
    const scalar_t* x0_row = x0 + (row % shape.batch) * data_dim;
    scalar_t total = 0;
    for (int64_t d = threadIdx.x; d < data_dim; d += blockDim.x) {
      const int64_t index = row * data_dim + d;
      const scalar_t noisy = xt[index], clean = x0_row[d], logit = logits[index];
      const bool noisy_one = noisy != scalar_t(0), clean_one = clean != scalar_t(0);
      const scalar_t mark =
          is_binary(noisy) && is_binary(clean) ? poison : quiet_nan<scalar_t>();
      const scalar_t q_cell = select_cell(q00, q01, q10, q11, noisy_one, clean_one);
      const scalar_t e = exp_of(-abs_of(logit));
      if constexpr (kPass != Pass::kGrad) {
        const scalar_t softplus = (logit > scalar_t(0) ? logit : scalar_t(0)) + log1p_of(e);
        total += softplus - q_cell * logit - select_cell(h00, h01, h10, h11, noisy_one, clean_one) +
                 mark;
      }
      if constexpr (kPass != Pass::kValue) {
        const scalar_t sigmoid = (logit >= scalar_t(0) ? scalar_t(1) : e) / (scalar_t(1) + e);
        out[index] = scale * (sigmoid - q_cell) + mark;
      }
    }
    if constexpr (kPass != Pass::kGrad) {
      total = block_sum(total);
      if (threadIdx.x == 0) kl[row] = total + poison;
    }
  }
}

// Per element, with diff = mq - mean and precision = exp(-log_var):
// KL = 0.5 (log_var + offset + (vq + diff^2) precision), d KL / d mean =
// -diff precision, d KL / d log_var = 0.5 (1 - (vq + diff^2) precision).
template <typename scalar_t, Pass kPass>
__global__ void __launch_bounds__(kMaxRowThreads)
    gaussian_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x0,
                    const scalar_t* __restrict__ xt, const scalar_t* __restrict__ mean,
                    const scalar_t* __restrict__ log_var, const int64_t* __restrict__ steps,
                    const double* __restrict__ table, scalar_t* __restrict__ kl,
                    scalar_t* __restrict__ out_mean, scalar_t* __restrict__ out_log_var,
                    DiffusionShape shape) {
  const int64_t num_rows = shape.num_slices * shape.batch, data_dim = shape.data_dim;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    scalar_t poison;
    const double* entry =
        step_entries(table, steps[row], shape.num_steps, kGaussianColumns, poison);
    const scalar_t c0 = entry[kGaussianC0], c1 = entry[kGaussianC1];
    const scalar_t var_q = entry[kGaussianVarQ], offset = entry[kGaussianOffset];
    const scalar_t scale = kPass == Pass::kGrad ? grad[row] : scalar_t(1);
    const scalar_t half_scale = scalar_t(0.5) * scale;
    const scalar_t* x0_row = x0 + (row % shape.batch) * data_dim;
    scalar_t total = 0;
    for (int64_t d = threadIdx.x; d < data_dim; d += blockDim.x) {
      const int64_t index = row * data_dim + d;
      const scalar_t diff = c0 * x0_row[d] + c1 * xt[index] - mean[index];
      const scalar_t precision = exp_of(-log_var[index]);
      const scalar_t spread_ratio = (var_q + diff * diff) * precision;
      if constexpr (kPass != Pass::kGrad) total += (log_var[index] + offset) + spread_ratio;
      if constexpr (kPass != Pass::kValue) {
        out_mean[index] = -scale * diff * precision + poison;
        out_log_var[index] = half_scale - half_scale * spread_ratio + poison;
      }
    }
    if constexpr (kPass != Pass::kGrad) {
      total = block_sum(total);
      if (threadIdx.x == 0) kl[row] = scalar_t(0.5) * total + poison;
    }
  }
}

template <typename scalar_t, Pass kPass>
void launch_binomial(const scalar_t* grad, const scalar_t* x0, const scalar_t* xt,
                     const scalar_t* logits, const int64_t* steps, const double* table,
                     scalar_t* kl, scalar_t* out, DiffusionShape shape, cudaStream_t stream) {
  const int64_t num_rows = shape.num_slices * shape.batch;
  binomial_kernel<scalar_t, kPass>
      <<<grid_blocks(num_rows), row_block_threads(shape.data_dim), 0, stream>>>(
          grad, x0, xt, logits, steps, table, kl, out, shape);
}

template <typename scalar_t, Pass kPass>
void launch_gaussian(const scalar_t* grad, const scalar_t* x0, const scalar_t* xt,
                     const scalar_t* mean, const scalar_t* log_var, const int64_t* steps,
                     const double* table, scalar_t* kl, scalar_t* out_mean,
                     scalar_t* out_log_var, DiffusionShape shape, cudaStream_t stream) {
  const int64_t num_rows = shape.num_slices * shape.batch;
  gaussian_kernel<scalar_t, kPass>
      <<<grid_blocks(num_rows), row_block_threads(shape.data_dim), 0, stream>>>(
          grad, x0, xt, mean, log_var, steps, table, kl, out_mean, out_log_var, shape);
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_diffusion_binomial_kl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* logits, const int64_t* steps,
                                         const double* table, scalar_t* kl, scalar_t* dlogits,
                                         DiffusionShape shape, cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0) return cudaSuccess;
  if (dlogits == nullptr) {
    launch_binomial<scalar_t, Pass::kValue>(nullptr, x0, xt, logits, steps, table, kl, nullptr,
                                            shape, stream);
  } else {
    launch_binomial<scalar_t, Pass::kValueAndGrad>(nullptr, x0, xt, logits, steps, table, kl,
                                                   dlogits, shape, stream);
  }
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_diffusion_binomial_kl_backward(const scalar_t* grad, const scalar_t* x0,
                                                  const scalar_t* xt, const scalar_t* logits,
                                                  const int64_t* steps, const double* table,
                                                  scalar_t* grad_logits, DiffusionShape shape,
                                                  cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0 || shape.data_dim == 0) return cudaSuccess;
  launch_binomial<scalar_t, Pass::kGrad>(grad, x0, xt, logits, steps, table, nullptr,
                                         grad_logits, shape, stream);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_diffusion_gaussian_kl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* mean, const scalar_t* log_var,
                                         const int64_t* steps, const double* table, scalar_t* kl,
                                         scalar_t* dmean, scalar_t* dlog_var,
                                         DiffusionShape shape, cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0) return cudaSuccess;
  if (dmean == nullptr) {
    launch_gaussian<scalar_t, Pass::kValue>(nullptr, x0, xt, mean, log_var, steps, table, kl,
                                            nullptr, nullptr, shape, stream);
  } else {
    launch_gaussian<scalar_t, Pass::kValueAndGrad>(nullptr, x0, xt, mean, log_var, steps, table,
                                                   kl, dmean, dlog_var, shape, stream);
  }
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_diffusion_gaussian_kl_backward(const scalar_t* grad, const scalar_t* x0,
                                                  const scalar_t* xt, const scalar_t* mean,
                                                  const scalar_t* log_var, const int64_t* steps,
                                                  const double* table, scalar_t* grad_mean,
                                                  scalar_t* grad_log_var, DiffusionShape shape,
                                                  cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0 || shape.data_dim == 0) return cudaSuccess;
  launch_gaussian<scalar_t, Pass::kGrad>(grad, x0, xt, mean, log_var, steps, table, nullptr,
                                         grad_mean, grad_log_var, shape, stream);
  return cudaGetLastError();
}

#define GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS(scalar_t)                                       \
  template cudaError_t launch_diffusion_binomial_kl<scalar_t>(                                \
      const scalar_t*, const scalar_t*, const scalar_t*, const int64_t*, const double*,       \
      scalar_t*, scalar_t*, DiffusionShape, cudaStream_t);                                    \
  template cudaError_t launch_diffusion_binomial_kl_backward<scalar_t>(                       \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const int64_t*,     \
      const double*, scalar_t*, DiffusionShape, cudaStream_t);                                \
  template cudaError_t launch_diffusion_gaussian_kl<scalar_t>(                                \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const int64_t*,     \
      const double*, scalar_t*, scalar_t*, scalar_t*, DiffusionShape, cudaStream_t);          \
  template cudaError_t launch_diffusion_gaussian_kl_backward<scalar_t>(                       \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,    \
      const int64_t*, const double*, scalar_t*, scalar_t*, DiffusionShape, cudaStream_t);

GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS(float)
GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS(double)

#undef GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS

}  // namespace genvar::cuda
