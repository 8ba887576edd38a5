// Launchers of the sigmoid-belief-network CUDA kernels.
//
// This header and sbn_kernels.cu see no torch header, so the kernels build
// with nvcc alone (also where torch has no CUDA headers); sbn_cuda.cpp does
// the tensor work and passes raw pointers in.
//
// All pointers are device pointers to contiguous row-major arrays of the
// shapes named in the comments (k = num_samples, B = batch, D = data_dim,
// H = latent_dim). Each launcher enqueues on `stream`, never synchronises,
// launches nothing for an empty output and returns the launch error
// (cudaSuccess when nothing was launched). Sums over samples accumulate in
// double for float too. Only the float and double instantiations exist
// (explicit, in sbn_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace genvar::cuda {

// log_weights[k, B] from logits[k, B, D], x[B, D], h[k, B, H],
// prior_logits[H] and q_logits[B, H].
template <typename scalar_t>
cudaError_t launch_sbn_log_weights(const scalar_t* logits, const scalar_t* x, const scalar_t* h,
                                   const scalar_t* prior_logits, const scalar_t* q_logits,
                                   scalar_t* log_weights, int64_t num_samples, int64_t batch,
                                   int64_t data_dim, int64_t latent_dim, cudaStream_t stream);

// grad_logits[k, B, D], grad_h[k, B, H], grad_prior_logits[H] and
// grad_q_logits[B, H] from grad_log_weights[k, B] and the forward inputs.
// grad_prior_logits is written also when B = 0 (zeros then).
template <typename scalar_t>
cudaError_t launch_sbn_log_weights_backward(
    const scalar_t* grad_log_weights, const scalar_t* logits, const scalar_t* x,
    const scalar_t* h, const scalar_t* prior_logits, const scalar_t* q_logits,
    scalar_t* grad_logits, scalar_t* grad_h, scalar_t* grad_prior_logits,
    scalar_t* grad_q_logits, int64_t num_samples, int64_t batch, int64_t data_dim,
    int64_t latent_dim, cudaStream_t stream);

// log_weights[k, B] as launch_sbn_log_weights, and in the same pass
// dlogits[k, B, D] = x[b, d] - sigmoid(logits[k, b, d]), the gradient of
// log_weights[k, b] with respect to its own row of logits.
template <typename scalar_t>
cudaError_t launch_sbn_log_weights_and_grad(const scalar_t* logits, const scalar_t* x,
                                            const scalar_t* h, const scalar_t* prior_logits,
                                            const scalar_t* q_logits, scalar_t* log_weights,
                                            scalar_t* dlogits, int64_t num_samples,
                                            int64_t batch, int64_t data_dim, int64_t latent_dim,
                                            cudaStream_t stream);

// grad_logits[k, B, D] = grad_log_weights[k, b] * dlogits[k, b, :], and
// grad_h, grad_prior_logits and grad_q_logits as in launch_sbn_log_weights_backward.
template <typename scalar_t>
cudaError_t launch_sbn_log_weights_and_grad_backward(
    const scalar_t* grad_log_weights, const scalar_t* dlogits, const scalar_t* h,
    const scalar_t* prior_logits, const scalar_t* q_logits, scalar_t* grad_logits,
    scalar_t* grad_h, scalar_t* grad_prior_logits, scalar_t* grad_q_logits,
    int64_t num_samples, int64_t batch, int64_t data_dim, int64_t latent_dim,
    cudaStream_t stream);

}  // namespace genvar::cuda
