// The IWAE ops on CUDA: kernels, their launchers, and the ops' CUDA
// implementations.
//
// The kernels and launchers include no torch header, so they compile with
// plain nvcc (also where the installed torch ships no CUDA headers); the
// implementations at the end keep all tensor handling. Sums over a row of D
// (or Z) run in scalar_t, like the CPU kernels; sums over k (up to 5000
// samples) accumulate in double for float32 too, per thread and across
// threads, and are cast once at the end.
//
// Launchers: all pointers are device pointers to contiguous row-major arrays
// of the shapes named in the comments (k = num_samples, B = batch, D =
// data_dim, Z = latent_dim). Each launcher enqueues on `stream`, never
// synchronises, launches nothing when its outputs are empty and returns the
// launch error (cudaSuccess when nothing was launched). Only the float and
// double instantiations exist (explicit, after the launchers).
//
// Implementations: inputs are made contiguous because the kernels index
// row-major arrays directly, and everything is enqueued on torch's current
// stream so the ops order correctly with the rest of the program without
// synchronising.
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

// log_weights[k, B] from logits[k, B, D], x[B, D], z[k, B, Z], mu and logvar[B, Z].
template <typename scalar_t>
cudaError_t launch_iwae_log_weights(const scalar_t* logits, const scalar_t* x,
                                    const scalar_t* z, const scalar_t* mu,
                                    const scalar_t* logvar, scalar_t* log_weights,
                                    int64_t num_samples, int64_t batch, int64_t data_dim,
                                    int64_t latent_dim, cudaStream_t stream) {
  return log_weights_forward<scalar_t, false>(logits, x, z, mu, logvar, log_weights, nullptr,
                                              num_samples, batch, data_dim, latent_dim, stream);
}

// grad_logits[k, B, D], grad_z[k, B, Z], grad_mu[B, Z] and grad_logvar[B, Z]
// from grad_log_weights[k, B] and the forward inputs.
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

// log_weights[k, B] as launch_iwae_log_weights, and in the same pass
// dlogits[k, B, D] = x[b, d] - sigmoid(logits[k, b, d]), the gradient of
// log_weights[k, b] with respect to its own row of logits.
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

// grad_logits[k, B, D] = grad_log_weights[k, b] * dlogits[k, b, :], and
// grad_z[k, B, Z], grad_mu[B, Z], grad_logvar[B, Z] as in
// launch_iwae_log_weights_backward.
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

// bound[B] and weights[k, B] exactly as iwae_bound_ref in genvar_bench/ops/iwae.py:
// shift = column max where finite, else 0; total = sum_k exp(log_w - shift);
// bound = log(total) + shift - log(k); weights = total == 0 ? 0 :
// exp(log_w - shift) / total. (All -inf column: bound -inf, weights 0; a NaN:
// that column all NaN; a +inf entry: bound +inf, weights inf / inf = NaN where
// exp(log_w) overflows in scalar_t, the +inf entries included, 0 elsewhere.)
template <typename scalar_t>
cudaError_t launch_iwae_bound(const scalar_t* log_weights, scalar_t* bound, scalar_t* weights,
                              int64_t num_samples, int64_t batch, cudaStream_t stream) {
  if (batch == 0 || num_samples == 0) return cudaSuccess;
  bound_kernel<scalar_t><<<column_grid(batch), column_block(), 0, stream>>>(
      log_weights, bound, weights, num_samples, batch);
  return cudaGetLastError();
}

// grad_log_weights[k, B] = weights * (grad_bound + grad_weights - centre),
// centre[b] = sum_k weights * grad_weights, from grad_bound[B],
// grad_weights[k, B] and weights[k, B].
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

#include "../ops/iwae.h"
#include "stream.h"

namespace genvar {
namespace {

at::Tensor iwae_log_weights_cuda(const at::Tensor& logits, const at::Tensor& x,
                                 const at::Tensor& z, const at::Tensor& mu,
                                 const at::Tensor& logvar) {
  const IwaeSizes sizes = check_iwae_log_weights_args(logits, x, z, mu, logvar);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const at::Tensor logits_c = logits.contiguous();
  const at::Tensor x_c = x.contiguous();
  const at::Tensor z_c = z.contiguous();
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  at::Tensor log_weights = at::empty({sizes.num_samples, sizes.batch}, logits_c.options());
  if (log_weights.numel() == 0) return log_weights;
  AT_DISPATCH_FLOATING_TYPES(logits_c.scalar_type(), "iwae_log_weights_cuda", [&] {
    C10_CUDA_CHECK(genvar::cuda::launch_iwae_log_weights<scalar_t>(
        logits_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
        z_c.const_data_ptr<scalar_t>(), mu_c.const_data_ptr<scalar_t>(),
        logvar_c.const_data_ptr<scalar_t>(), log_weights.mutable_data_ptr<scalar_t>(),
        sizes.num_samples, sizes.batch, sizes.data_dim, sizes.latent_dim, current_stream()));
  });
  return log_weights;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> iwae_log_weights_backward_cuda(
    const at::Tensor& grad_log_weights, const at::Tensor& logits, const at::Tensor& x,
    const at::Tensor& z, const at::Tensor& mu, const at::Tensor& logvar) {
  const IwaeSizes sizes =
      check_iwae_log_weights_backward_args(grad_log_weights, logits, x, z, mu, logvar);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const at::Tensor grad_c = grad_log_weights.contiguous();
  const at::Tensor logits_c = logits.contiguous();
  const at::Tensor x_c = x.contiguous();
  const at::Tensor z_c = z.contiguous();
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  at::Tensor grad_logits = at::empty(logits_c.sizes(), logits_c.options());
  at::Tensor grad_z = at::empty(z_c.sizes(), z_c.options());
  at::Tensor grad_mu = at::empty(mu_c.sizes(), mu_c.options());
  at::Tensor grad_logvar = at::empty(logvar_c.sizes(), logvar_c.options());
  // The launcher skips whichever of its two kernels has an empty output.
  if (sizes.batch > 0) {
    AT_DISPATCH_FLOATING_TYPES(logits_c.scalar_type(), "iwae_log_weights_backward_cuda", [&] {
      C10_CUDA_CHECK(genvar::cuda::launch_iwae_log_weights_backward<scalar_t>(
          grad_c.const_data_ptr<scalar_t>(), logits_c.const_data_ptr<scalar_t>(),
          x_c.const_data_ptr<scalar_t>(), z_c.const_data_ptr<scalar_t>(),
          mu_c.const_data_ptr<scalar_t>(), logvar_c.const_data_ptr<scalar_t>(),
          grad_logits.mutable_data_ptr<scalar_t>(), grad_z.mutable_data_ptr<scalar_t>(),
          grad_mu.mutable_data_ptr<scalar_t>(), grad_logvar.mutable_data_ptr<scalar_t>(),
          sizes.num_samples, sizes.batch, sizes.data_dim, sizes.latent_dim, current_stream()));
    });
  }
  return {grad_logits, grad_z, grad_mu, grad_logvar};
}

// Forward of the training path: log_weights and, in the same pass, dlogits =
// d log_weights[k, b] / d logits[k, b, :].
std::tuple<at::Tensor, at::Tensor> iwae_log_weights_and_grad_cuda(const at::Tensor& logits,
                                                                  const at::Tensor& x,
                                                                  const at::Tensor& z,
                                                                  const at::Tensor& mu,
                                                                  const at::Tensor& logvar) {
  const IwaeSizes sizes = check_iwae_log_weights_args(logits, x, z, mu, logvar);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const at::Tensor logits_c = logits.contiguous();
  const at::Tensor x_c = x.contiguous();
  const at::Tensor z_c = z.contiguous();
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  at::Tensor log_weights = at::empty({sizes.num_samples, sizes.batch}, logits_c.options());
  at::Tensor dlogits = at::empty(logits_c.sizes(), logits_c.options());
  if (log_weights.numel() == 0) return {log_weights, dlogits};
  AT_DISPATCH_FLOATING_TYPES(logits_c.scalar_type(), "iwae_log_weights_and_grad_cuda", [&] {
    C10_CUDA_CHECK(genvar::cuda::launch_iwae_log_weights_and_grad<scalar_t>(
        logits_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
        z_c.const_data_ptr<scalar_t>(), mu_c.const_data_ptr<scalar_t>(),
        logvar_c.const_data_ptr<scalar_t>(), log_weights.mutable_data_ptr<scalar_t>(),
        dlogits.mutable_data_ptr<scalar_t>(), sizes.num_samples, sizes.batch, sizes.data_dim,
        sizes.latent_dim, current_stream()));
  });
  return {log_weights, dlogits};
}

// Scales dlogits in place into the logits gradient (the op's schema marks it
// mutated). The launcher's outputs may not alias its inputs, so the product
// goes through a temporary and is copied back; the training path uses this op
// on the CPU only, where the in-place form saves the allocation.
std::tuple<at::Tensor, at::Tensor, at::Tensor>
iwae_log_weights_and_grad_backward_cuda(const at::Tensor& grad_log_weights,
                                        at::Tensor& dlogits, const at::Tensor& z,
                                        const at::Tensor& mu, const at::Tensor& logvar) {
  const IwaeSizes sizes =
      check_iwae_log_weights_and_grad_backward_args(grad_log_weights, dlogits, z, mu, logvar);
  const c10::cuda::CUDAGuard device_guard(dlogits.device());
  const at::Tensor grad_c = grad_log_weights.contiguous();
  const at::Tensor dlogits_c = dlogits.contiguous();
  const at::Tensor z_c = z.contiguous();
  const at::Tensor mu_c = mu.contiguous();
  const at::Tensor logvar_c = logvar.contiguous();
  at::Tensor grad_logits = at::empty(dlogits_c.sizes(), dlogits_c.options());
  at::Tensor grad_z = at::empty(z_c.sizes(), z_c.options());
  at::Tensor grad_mu = at::empty(mu_c.sizes(), mu_c.options());
  at::Tensor grad_logvar = at::empty(logvar_c.sizes(), logvar_c.options());
  // The launcher skips whichever of its two kernels has an empty output.
  if (sizes.batch > 0) {
    AT_DISPATCH_FLOATING_TYPES(
        dlogits_c.scalar_type(), "iwae_log_weights_and_grad_backward_cuda", [&] {
          C10_CUDA_CHECK(genvar::cuda::launch_iwae_log_weights_and_grad_backward<scalar_t>(
              grad_c.const_data_ptr<scalar_t>(), dlogits_c.const_data_ptr<scalar_t>(),
              z_c.const_data_ptr<scalar_t>(), mu_c.const_data_ptr<scalar_t>(),
              logvar_c.const_data_ptr<scalar_t>(), grad_logits.mutable_data_ptr<scalar_t>(),
              grad_z.mutable_data_ptr<scalar_t>(), grad_mu.mutable_data_ptr<scalar_t>(),
              grad_logvar.mutable_data_ptr<scalar_t>(), sizes.num_samples, sizes.batch,
              sizes.data_dim, sizes.latent_dim, current_stream()));
        });
  }
  dlogits.copy_(grad_logits);
  return {grad_z, grad_mu, grad_logvar};
}

std::tuple<at::Tensor, at::Tensor> iwae_bound_cuda(const at::Tensor& log_weights) {
  check_iwae_bound_args(log_weights);
  const c10::cuda::CUDAGuard device_guard(log_weights.device());
  const at::Tensor log_weights_c = log_weights.contiguous();
  const int64_t num_samples = log_weights_c.size(0);
  const int64_t batch = log_weights_c.size(1);
  at::Tensor bound = at::empty({batch}, log_weights_c.options());
  at::Tensor weights = at::empty(log_weights_c.sizes(), log_weights_c.options());
  if (bound.numel() == 0) return {bound, weights};
  AT_DISPATCH_FLOATING_TYPES(log_weights_c.scalar_type(), "iwae_bound_cuda", [&] {
    C10_CUDA_CHECK(genvar::cuda::launch_iwae_bound<scalar_t>(
        log_weights_c.const_data_ptr<scalar_t>(), bound.mutable_data_ptr<scalar_t>(),
        weights.mutable_data_ptr<scalar_t>(), num_samples, batch, current_stream()));
  });
  return {bound, weights};
}

at::Tensor iwae_bound_backward_cuda(const at::Tensor& grad_bound, const at::Tensor& grad_weights,
                                    const at::Tensor& weights) {
  check_iwae_bound_backward_args(grad_bound, grad_weights, weights);
  const c10::cuda::CUDAGuard device_guard(weights.device());
  const at::Tensor grad_bound_c = grad_bound.contiguous();
  const at::Tensor grad_weights_c = grad_weights.contiguous();
  const at::Tensor weights_c = weights.contiguous();
  at::Tensor grad_log_weights = at::empty(weights_c.sizes(), weights_c.options());
  if (grad_log_weights.numel() == 0) return grad_log_weights;
  AT_DISPATCH_FLOATING_TYPES(weights_c.scalar_type(), "iwae_bound_backward_cuda", [&] {
    C10_CUDA_CHECK(genvar::cuda::launch_iwae_bound_backward<scalar_t>(
        grad_bound_c.const_data_ptr<scalar_t>(), grad_weights_c.const_data_ptr<scalar_t>(),
        weights_c.const_data_ptr<scalar_t>(), grad_log_weights.mutable_data_ptr<scalar_t>(),
        weights_c.size(0), weights_c.size(1), current_stream()));
  });
  return grad_log_weights;
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) {
  m.impl("iwae_log_weights", &iwae_log_weights_cuda);
  m.impl("iwae_log_weights_backward", &iwae_log_weights_backward_cuda);
  m.impl("iwae_log_weights_and_grad", &iwae_log_weights_and_grad_cuda);
  m.impl("iwae_log_weights_and_grad_backward_", &iwae_log_weights_and_grad_backward_cuda);
  m.impl("iwae_bound", &iwae_bound_cuda);
  m.impl("iwae_bound_backward", &iwae_bound_backward_cuda);
}

}  // namespace genvar

#endif  // GENVAR_WITH_CUDA
