// CUDA kernels of the IWAE ops and their launchers.
//
// No torch header is included: the kernels then compile with plain nvcc,
// also where the installed torch ships no CUDA headers, and iwae_cuda.cpp
// keeps all tensor handling. Sums over a row of D (or Z) run in scalar_t,
// like the CPU kernels; sums over k (up to 5000 samples) accumulate in double
// for float32 too, per thread and across threads, and are cast once at the end.
#include "iwae_launchers.h"
#include "bernoulli_rows.cuh"
#include "device_utils.cuh"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {
namespace {

// log p(z) - log q(z | x) for one latent coordinate; the log(2 pi) terms cancel.
template <typename scalar_t>
__device__ __forceinline__ scalar_t latent_term(scalar_t z, scalar_t mean, scalar_t logvar) {
  const scalar_t diff = z - mean;
  return scalar_t(0.5) * (diff * diff * exp_of(-logvar) + logvar - z * z);
}

// ---------------------------------------------------------------------------
// Row kernels: one block per (k, b) row of logits, threads striding over D.

// log_weights[row] = sum_d x_d l_d - softplus(l_d) + the latent terms. With
// kWriteGrad, also dlogits[row, d] = x_d - sigmoid(l_d), the gradient of
// log_weights[row] with respect to its own row of logits, from the same e.
template <typename scalar_t, int kVec, bool kWriteGrad>
__global__ void __launch_bounds__(kMaxRowThreads)
    log_weights_kernel(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                       const scalar_t* __restrict__ z, const scalar_t* __restrict__ mu,
                       const scalar_t* __restrict__ logvar, scalar_t* __restrict__ log_weights,
                       scalar_t* __restrict__ dlogits, int64_t num_rows, int64_t batch,
                       int64_t data_dim, int64_t latent_dim) {
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    const int64_t b = row % batch;
    scalar_t* dlogit_row = kWriteGrad ? dlogits + row * data_dim : nullptr;
    scalar_t total = data_term_share<scalar_t, kVec, kWriteGrad>(
        logits + row * data_dim, x + b * data_dim, dlogit_row, data_dim, scalar_t(0));
    for (int64_t j = threadIdx.x; j < latent_dim; j += blockDim.x) {
      total += latent_term(z[row * latent_dim + j], mu[b * latent_dim + j],
                           logvar[b * latent_dim + j]);
    }
    total = block_sum(total);
    if (threadIdx.x == 0) log_weights[row] = total;
  }
}

// ---------------------------------------------------------------------------
// Column kernels: a [k, C] array reduced over k for each column, in the
// column tiles of bernoulli_rows.cuh.

// Fused: grad_z needs the same z and g reads as the sums over k for grad_mu
// and grad_logvar, so one pass over z serves all three. Columns are (b, j).
// Each term is formed in scalar_t and added to a double sum, as on the CPU.
template <typename scalar_t>
__global__ void __launch_bounds__(kColumnThreads, kColumnBlocksPerSm)
    latent_grads_kernel(const scalar_t* __restrict__ grad_log_weights,
                        const scalar_t* __restrict__ z, const scalar_t* __restrict__ mu,
                        const scalar_t* __restrict__ logvar, scalar_t* __restrict__ grad_z,
                        scalar_t* __restrict__ grad_mu, scalar_t* __restrict__ grad_logvar,
                        int64_t num_samples, int64_t batch, int64_t latent_dim) {
  const int64_t columns = batch * latent_dim;
  for (int64_t tile = blockIdx.x; tile * kColumnTile < columns; tile += gridDim.x) {
    const int64_t column = tile * kColumnTile + threadIdx.x;
    const bool active = column < columns;
    SumPair sums{0, 0};  // grad_mu, grad_logvar
    if (active) {
      const int64_t b = column / latent_dim;
      const scalar_t mean = mu[column];
      const scalar_t precision = exp_of(-logvar[column]);
      for (int64_t s = threadIdx.y; s < num_samples; s += kSampleLanes) {
        const scalar_t grad = grad_log_weights[s * batch + b];
        const scalar_t z_value = z[s * columns + column];
        const scalar_t diff = z_value - mean;
        const scalar_t scaled = diff * precision;
        grad_z[s * columns + column] = grad * (scaled - z_value);
        sums.first -= grad * scaled;
        sums.second += grad * (scalar_t(0.5) - scalar_t(0.5) * diff * scaled);
      }
    }
    sums = combine_sample_lanes(sums, Add{});
    if (active && threadIdx.y == 0) {
      grad_mu[column] = static_cast<scalar_t>(sums.first);
      grad_logvar[column] = static_cast<scalar_t>(sums.second);
    }
  }
}

// iwae_bound_ref, column by column, in two passes over k:
//   shift = the column max where finite, else 0
//   total = sum_k exp(log_w - shift)             (exp in scalar_t, sum in double)
//   bound = log(total) + shift - log k
//   weights = total == 0 ? 0 : exp(log_w - shift) / total
// So an all -inf column has bound -inf and weights 0; a NaN anywhere makes
// total, bound and every weight of its column NaN (whatever the shift, hence
// the max may skip NaN); a +inf entry makes shift 0 and total +inf, so bound
// +inf and weights inf / inf = NaN where exp(log_w) overflows, 0 elsewhere.
template <typename scalar_t>
__global__ void __launch_bounds__(kColumnThreads, kColumnBlocksPerSm)
    bound_kernel(const scalar_t* __restrict__ log_weights, scalar_t* __restrict__ bound,
                 scalar_t* __restrict__ weights, int64_t num_samples, int64_t batch) {
  const scalar_t log_num_samples = log_of(static_cast<scalar_t>(num_samples));
  for (int64_t tile = blockIdx.x; tile * kColumnTile < batch; tile += gridDim.x) {
    const int64_t b = tile * kColumnTile + threadIdx.x;
    const bool active = b < batch;
    scalar_t column_max = negative_infinity<scalar_t>();
    for (int64_t s = threadIdx.y; active && s < num_samples; s += kSampleLanes) {
      column_max = Max{}(log_weights[s * batch + b], column_max);
    }
    column_max = combine_sample_lanes(column_max, Max{});
    const scalar_t shift = isfinite(column_max) ? column_max : scalar_t(0);
    accumulate_t partial = 0;
    for (int64_t s = threadIdx.y; active && s < num_samples; s += kSampleLanes) {
      partial += exp_of(log_weights[s * batch + b] - shift);
    }
    const accumulate_t total = combine_sample_lanes(partial, Add{});
    if (!active) continue;  // no barrier follows in this tile
    if (threadIdx.y == 0) {
      bound[b] = static_cast<scalar_t>(log_of(total)) + shift - log_num_samples;
    }
    for (int64_t s = threadIdx.y; s < num_samples; s += kSampleLanes) {
      const int64_t index = s * batch + b;
      const accumulate_t shifted = exp_of(log_weights[index] - shift);
      weights[index] = total == 0 ? scalar_t(0) : static_cast<scalar_t>(shifted / total);
    }
  }
}

// grad_log_w = w * (grad_bound + grad_w - centre), centre = sum_k w * grad_w
// in double, with the CPU kernel's rounding steps.
template <typename scalar_t>
__global__ void __launch_bounds__(kColumnThreads, kColumnBlocksPerSm)
    bound_grad_kernel(const scalar_t* __restrict__ grad_bound,
                      const scalar_t* __restrict__ grad_weights,
                      const scalar_t* __restrict__ weights,
                      scalar_t* __restrict__ grad_log_weights, int64_t num_samples,
                      int64_t batch) {
  for (int64_t tile = blockIdx.x; tile * kColumnTile < batch; tile += gridDim.x) {
    const int64_t b = tile * kColumnTile + threadIdx.x;
    const bool active = b < batch;
    accumulate_t partial = 0;
    for (int64_t s = threadIdx.y; active && s < num_samples; s += kSampleLanes) {
      partial += static_cast<accumulate_t>(weights[s * batch + b]) * grad_weights[s * batch + b];
    }
    const accumulate_t centre = combine_sample_lanes(partial, Add{});
    if (!active) continue;  // no barrier follows in this tile
    const scalar_t column_grad = grad_bound[b];
    for (int64_t s = threadIdx.y; s < num_samples; s += kSampleLanes) {
      const int64_t index = s * batch + b;
      grad_log_weights[index] =
          weights[index] * static_cast<scalar_t>(column_grad + grad_weights[index] - centre);
    }
  }
}

// ---------------------------------------------------------------------------
// Launch helpers.

// iwae_log_weights, and with kWriteGrad iwae_log_weights_and_grad (dlogits is
// null without it).
template <typename scalar_t, bool kWriteGrad>
cudaError_t log_weights_forward(const scalar_t* logits, const scalar_t* x, const scalar_t* z,
                                const scalar_t* mu, const scalar_t* logvar,
                                scalar_t* log_weights, scalar_t* dlogits, int64_t num_samples,
                                int64_t batch, int64_t data_dim, int64_t latent_dim,
                                cudaStream_t stream) {
  const int64_t num_rows = num_samples * batch;
  if (num_rows == 0) return cudaSuccess;
  return with_pack_width<scalar_t>(data_dim, {logits, x, dlogits}, [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    const int threads = row_block_threads(std::max(data_dim / kVec, latent_dim));
    log_weights_kernel<scalar_t, kVec, kWriteGrad><<<grid_blocks(num_rows), threads, 0, stream>>>(
        logits, x, z, mu, logvar, log_weights, dlogits, num_rows, batch, data_dim, latent_dim);
  });
}

// The backward of both forms: grad_logits from `source` (logits and x with
// kRecompute, else the saved dlogits, x null), then the latent gradients.
template <typename scalar_t, bool kRecompute>
cudaError_t log_weights_backward(const scalar_t* grad_log_weights, const scalar_t* source,
                                 const scalar_t* x, const scalar_t* z, const scalar_t* mu,
                                 const scalar_t* logvar, scalar_t* grad_logits,
                                 scalar_t* grad_z, scalar_t* grad_mu, scalar_t* grad_logvar,
                                 int64_t num_samples, int64_t batch, int64_t data_dim,
                                 int64_t latent_dim, cudaStream_t stream) {
  const cudaError_t error = launch_logits_grad<scalar_t, kRecompute>(
      grad_log_weights, source, x, grad_logits, num_samples * batch, batch, data_dim, stream);
  if (error != cudaSuccess) return error;
  const int64_t columns = batch * latent_dim;
  if (columns == 0) return cudaSuccess;
  latent_grads_kernel<scalar_t><<<column_grid(columns), column_block(), 0, stream>>>(
      grad_log_weights, z, mu, logvar, grad_z, grad_mu, grad_logvar, num_samples, batch,
      latent_dim);
  return cudaGetLastError();
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers.

template <typename scalar_t>
cudaError_t launch_iwae_log_weights(const scalar_t* logits, const scalar_t* x,
                                    const scalar_t* z, const scalar_t* mu,
                                    const scalar_t* logvar, scalar_t* log_weights,
                                    int64_t num_samples, int64_t batch, int64_t data_dim,
                                    int64_t latent_dim, cudaStream_t stream) {
  return log_weights_forward<scalar_t, false>(logits, x, z, mu, logvar, log_weights, nullptr,
                                              num_samples, batch, data_dim, latent_dim, stream);
}

template <typename scalar_t>
cudaError_t launch_iwae_log_weights_backward(
    const scalar_t* grad_log_weights, const scalar_t* logits, const scalar_t* x,
    const scalar_t* z, const scalar_t* mu, const scalar_t* logvar, scalar_t* grad_logits,
    scalar_t* grad_z, scalar_t* grad_mu, scalar_t* grad_logvar, int64_t num_samples,
    int64_t batch, int64_t data_dim, int64_t latent_dim, cudaStream_t stream) {
  return log_weights_backward<scalar_t, true>(grad_log_weights, logits, x, z, mu, logvar,
                                              grad_logits, grad_z, grad_mu, grad_logvar,
                                              num_samples, batch, data_dim, latent_dim, stream);
}

template <typename scalar_t>
cudaError_t launch_iwae_log_weights_and_grad(const scalar_t* logits, const scalar_t* x,
                                             const scalar_t* z, const scalar_t* mu,
                                             const scalar_t* logvar, scalar_t* log_weights,
                                             scalar_t* dlogits, int64_t num_samples,
                                             int64_t batch, int64_t data_dim,
                                             int64_t latent_dim, cudaStream_t stream) {
  return log_weights_forward<scalar_t, true>(logits, x, z, mu, logvar, log_weights, dlogits,
                                             num_samples, batch, data_dim, latent_dim, stream);
}

template <typename scalar_t>
cudaError_t launch_iwae_log_weights_and_grad_backward(
    const scalar_t* grad_log_weights, const scalar_t* dlogits, const scalar_t* z,
    const scalar_t* mu, const scalar_t* logvar, scalar_t* grad_logits, scalar_t* grad_z,
    scalar_t* grad_mu, scalar_t* grad_logvar, int64_t num_samples, int64_t batch,
    int64_t data_dim, int64_t latent_dim, cudaStream_t stream) {
  return log_weights_backward<scalar_t, false>(grad_log_weights, dlogits, nullptr, z, mu,
                                               logvar, grad_logits, grad_z, grad_mu,
                                               grad_logvar, num_samples, batch, data_dim,
                                               latent_dim, stream);
}

template <typename scalar_t>
cudaError_t launch_iwae_bound(const scalar_t* log_weights, scalar_t* bound, scalar_t* weights,
                              int64_t num_samples, int64_t batch, cudaStream_t stream) {
  if (batch == 0 || num_samples == 0) return cudaSuccess;
  bound_kernel<scalar_t><<<column_grid(batch), column_block(), 0, stream>>>(
      log_weights, bound, weights, num_samples, batch);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_iwae_bound_backward(const scalar_t* grad_bound,
                                       const scalar_t* grad_weights, const scalar_t* weights,
                                       scalar_t* grad_log_weights, int64_t num_samples,
                                       int64_t batch, cudaStream_t stream) {
  if (batch == 0 || num_samples == 0) return cudaSuccess;
  bound_grad_kernel<scalar_t><<<column_grid(batch), column_block(), 0, stream>>>(
      grad_bound, grad_weights, weights, grad_log_weights, num_samples, batch);
  return cudaGetLastError();
}

#define GENVAR_INSTANTIATE_IWAE_LAUNCHERS(scalar_t)                                          \
  template cudaError_t launch_iwae_log_weights<scalar_t>(                                   \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,  \
      scalar_t*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                         \
  template cudaError_t launch_iwae_log_weights_backward<scalar_t>(                          \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,  \
      const scalar_t*, scalar_t*, scalar_t*, scalar_t*, scalar_t*, int64_t, int64_t,        \
      int64_t, int64_t, cudaStream_t);                                                      \
  template cudaError_t launch_iwae_log_weights_and_grad<scalar_t>(                          \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,  \
      scalar_t*, scalar_t*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);              \
  template cudaError_t launch_iwae_log_weights_and_grad_backward<scalar_t>(                 \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,  \
      scalar_t*, scalar_t*, scalar_t*, scalar_t*, int64_t, int64_t, int64_t, int64_t,       \
      cudaStream_t);                                                                        \
  template cudaError_t launch_iwae_bound<scalar_t>(const scalar_t*, scalar_t*, scalar_t*,   \
                                                   int64_t, int64_t, cudaStream_t);         \
  template cudaError_t launch_iwae_bound_backward<scalar_t>(                                \
      const scalar_t*, const scalar_t*, const scalar_t*, scalar_t*, int64_t, int64_t,       \
      cudaStream_t);

GENVAR_INSTANTIATE_IWAE_LAUNCHERS(float)
GENVAR_INSTANTIATE_IWAE_LAUNCHERS(double)

#undef GENVAR_INSTANTIATE_IWAE_LAUNCHERS

}  // namespace genvar::cuda
