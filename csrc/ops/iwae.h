// The IWAE ops' argument checks, shared by their CPU kernels (iwae.cpp) and their
// CUDA ones (../cuda/iwae_kernel.cu).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace genvar {

// Sizes of an iwae_log_weights call: logits [k, B, D], x [B, D],
// z [k, B, Z], mu and logvar [B, Z].
struct IwaeSizes {
  int64_t num_samples;  // k
  int64_t batch;        // B
  int64_t data_dim;     // D
  int64_t latent_dim;   // Z
};

// Checks ranks, shapes, dtypes (float32 or float64, all equal), devices
// (all equal) and k > 0; throws a RuntimeError naming the argument.
IwaeSizes check_iwae_log_weights_args(const at::Tensor& logits,
                                      const at::Tensor& x,
                                      const at::Tensor& z,
                                      const at::Tensor& mu,
                                      const at::Tensor& logvar);

// The same checks for the backward, plus grad_log_weights of shape [k, B].
IwaeSizes check_iwae_log_weights_backward_args(const at::Tensor& grad_log_weights,
                                               const at::Tensor& logits,
                                               const at::Tensor& x,
                                               const at::Tensor& z,
                                               const at::Tensor& mu,
                                               const at::Tensor& logvar);

// Backward of iwae_log_weights_and_grad: grad_log_weights [k, B], dlogits
// [k, B, D] (the forward's d log_w / d logits), z [k, B, Z], mu and logvar [B, Z].
IwaeSizes check_iwae_log_weights_and_grad_backward_args(const at::Tensor& grad_log_weights,
                                                        const at::Tensor& dlogits,
                                                        const at::Tensor& z, const at::Tensor& mu,
                                                        const at::Tensor& logvar);

// log_weights must be [k, B] with k > 0, floating point (float32/float64).
void check_iwae_bound_args(const at::Tensor& log_weights);

// grad_bound [B], grad_weights [k, B], weights [k, B], same dtype and device.
void check_iwae_bound_backward_args(const at::Tensor& grad_bound,
                                    const at::Tensor& grad_weights,
                                    const at::Tensor& weights);

}  // namespace genvar
