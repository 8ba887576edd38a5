// Launchers of the diffusion KL CUDA kernels.
//
// This header and diffusion_kernels.cu see no torch header, so the kernels
// build with nvcc alone; diffusion_cuda.cpp checks the arguments, builds the
// schedule table (csrc/ops/diffusion.h) and passes raw pointers in.
//
// All pointers are device pointers to contiguous row-major arrays: x0 [B, D];
// xt, the network outputs and the per-element outputs [T', B, D]; steps, grad
// and kl [T', B]; table [T, kBinomialColumns or kGaussianColumns] of double
// (the column layout of csrc/ops/diffusion.h). Each launcher enqueues on
// `stream`, never synchronises, launches nothing when T' B = 0 and returns
// the launch error. Steps are expected in [1, T] (the caller checks): a row
// whose step is not gets NaN. x0 and xt of the binomial op are expected
// binary: an element that is not makes its row's KL and its gradient NaN.
// Only the float and double instantiations exist.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace genvar::cuda {

// Sizes of a call: T' slices, B examples, D data dimensions, T steps.
struct DiffusionShape {
  int64_t num_slices;
  int64_t batch;
  int64_t data_dim;
  int64_t num_steps;
};

// kl[T', B]; with dlogits non-null also dlogits[T', B, D] = d kl[t, b] /
// d logits[t, b, :] = sigmoid(logits) - q (the training path's forward).
template <typename scalar_t>
cudaError_t launch_diffusion_binomial_kl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* logits, const int64_t* steps,
                                         const double* table, scalar_t* kl, scalar_t* dlogits,
                                         DiffusionShape shape, cudaStream_t stream);

// grad_logits[T', B, D] = grad[t, b] * (sigmoid(logits) - q).
template <typename scalar_t>
cudaError_t launch_diffusion_binomial_kl_backward(const scalar_t* grad, const scalar_t* x0,
                                                  const scalar_t* xt, const scalar_t* logits,
                                                  const int64_t* steps, const double* table,
                                                  scalar_t* grad_logits, DiffusionShape shape,
                                                  cudaStream_t stream);

// kl[T', B]; with dmean and dlog_var non-null also their derivatives
// (mean - mq) e^-log_var and 0.5 (1 - (vq + (mq - mean)^2) e^-log_var).
template <typename scalar_t>
cudaError_t launch_diffusion_gaussian_kl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* mean, const scalar_t* log_var,
                                         const int64_t* steps, const double* table, scalar_t* kl,
                                         scalar_t* dmean, scalar_t* dlog_var,
                                         DiffusionShape shape, cudaStream_t stream);

// grad_mean and grad_log_var [T', B, D]: those derivatives times grad[t, b].
template <typename scalar_t>
cudaError_t launch_diffusion_gaussian_kl_backward(const scalar_t* grad, const scalar_t* x0,
                                                  const scalar_t* xt, const scalar_t* mean,
                                                  const scalar_t* log_var, const int64_t* steps,
                                                  const double* table, scalar_t* grad_mean,
                                                  scalar_t* grad_log_var, DiffusionShape shape,
                                                  cudaStream_t stream);

}  // namespace genvar::cuda
