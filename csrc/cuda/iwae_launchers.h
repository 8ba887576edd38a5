// Launchers of the IWAE CUDA kernels.
//
// This header and iwae_kernels.cu see no torch header, so the kernels build
// with nvcc alone (also where torch has no CUDA headers); iwae_cuda.cpp does
// the tensor work and passes raw pointers in.
//
// All pointers are device pointers to contiguous row-major arrays of the
// shapes named in the comments (k = num_samples, B = batch, D = data_dim,
// Z = latent_dim). Each launcher enqueues on `stream`, never synchronises,
// launches nothing when its outputs are empty and returns the launch error
// (cudaSuccess when nothing was launched). Sums over k accumulate in double
// for float too. Only the float and double instantiations exist (explicit,
// in iwae_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace genvar::cuda {

// log_weights[k, B] from logits[k, B, D], x[B, D], z[k, B, Z], mu and logvar[B, Z].
template <typename scalar_t>
cudaError_t launch_iwae_log_weights(const scalar_t* logits, const scalar_t* x,
                                    const scalar_t* z, const scalar_t* mu,
                                    const scalar_t* logvar, scalar_t* log_weights,
                                    int64_t num_samples, int64_t batch, int64_t data_dim,
                                    int64_t latent_dim, cudaStream_t stream);

// grad_logits[k, B, D], grad_z[k, B, Z], grad_mu[B, Z] and grad_logvar[B, Z]
// from grad_log_weights[k, B] and the forward inputs.
template <typename scalar_t>
cudaError_t launch_iwae_log_weights_backward(
    const scalar_t* grad_log_weights, const scalar_t* logits, const scalar_t* x,
    const scalar_t* z, const scalar_t* mu, const scalar_t* logvar, scalar_t* grad_logits,
    scalar_t* grad_z, scalar_t* grad_mu, scalar_t* grad_logvar, int64_t num_samples,
    int64_t batch, int64_t data_dim, int64_t latent_dim, cudaStream_t stream);

// log_weights[k, B] as launch_iwae_log_weights, and in the same pass
// dlogits[k, B, D] = x[b, d] - sigmoid(logits[k, b, d]), the gradient of
// log_weights[k, b] with respect to its own row of logits.
template <typename scalar_t>
cudaError_t launch_iwae_log_weights_and_grad(const scalar_t* logits, const scalar_t* x,
                                             const scalar_t* z, const scalar_t* mu,
                                             const scalar_t* logvar, scalar_t* log_weights,
                                             scalar_t* dlogits, int64_t num_samples,
                                             int64_t batch, int64_t data_dim,
                                             int64_t latent_dim, cudaStream_t stream);

// grad_logits[k, B, D] = grad_log_weights[k, b] * dlogits[k, b, :], and
// grad_z[k, B, Z], grad_mu[B, Z], grad_logvar[B, Z] as in
// launch_iwae_log_weights_backward.
template <typename scalar_t>
cudaError_t launch_iwae_log_weights_and_grad_backward(
    const scalar_t* grad_log_weights, const scalar_t* dlogits, const scalar_t* z,
    const scalar_t* mu, const scalar_t* logvar, scalar_t* grad_logits, scalar_t* grad_z,
    scalar_t* grad_mu, scalar_t* grad_logvar, int64_t num_samples, int64_t batch,
    int64_t data_dim, int64_t latent_dim, cudaStream_t stream);

// bound[B] and weights[k, B] exactly as iwae_bound_ref in genvar_bench/ops.py:
// shift = column max where finite, else 0; total = sum_k exp(log_w - shift);
// bound = log(total) + shift - log(k); weights = total == 0 ? 0 :
// exp(log_w - shift) / total. (All -inf column: bound -inf, weights 0; a NaN:
// that column all NaN; a +inf entry: bound +inf, weights inf / inf = NaN where
// exp(log_w) overflows in scalar_t, the +inf entries included, 0 elsewhere.)
template <typename scalar_t>
cudaError_t launch_iwae_bound(const scalar_t* log_weights, scalar_t* bound, scalar_t* weights,
                              int64_t num_samples, int64_t batch, cudaStream_t stream);

// grad_log_weights[k, B] = weights * (grad_bound + grad_weights - centre),
// centre[b] = sum_k weights * grad_weights, from grad_bound[B],
// grad_weights[k, B] and weights[k, B].
template <typename scalar_t>
cudaError_t launch_iwae_bound_backward(const scalar_t* grad_bound,
                                       const scalar_t* grad_weights, const scalar_t* weights,
                                       scalar_t* grad_log_weights, int64_t num_samples,
                                       int64_t batch, cudaStream_t stream);

}  // namespace genvar::cuda
