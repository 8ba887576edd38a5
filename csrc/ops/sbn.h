// The sigmoid-belief-network ops' argument checks, shared by their CPU kernels
// (sbn.cpp) and their CUDA ones (../cuda/sbn_kernel.cu).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace genvar {

// Sizes of an sbn_log_weights call: logits [k, B, D], x [B, D], h [k, B, H],
// prior_logits [H], q_logits [B, H]. D and H may be 0 (an empty sum is 0), k may not.
struct SbnSizes {
  int64_t num_samples;  // k
  int64_t batch;        // B
  int64_t data_dim;     // D
  int64_t latent_dim;   // H
};

// Checks ranks, shapes, dtypes (float32 or float64, all equal), devices
// (all equal) and k > 0; throws a RuntimeError naming the argument.
SbnSizes check_sbn_log_weights_args(const at::Tensor& logits, const at::Tensor& x,
                                    const at::Tensor& h, const at::Tensor& prior_logits,
                                    const at::Tensor& q_logits);

// The same checks for the backward, plus grad_log_weights of shape [k, B].
SbnSizes check_sbn_log_weights_backward_args(const at::Tensor& grad_log_weights,
                                             const at::Tensor& logits, const at::Tensor& x,
                                             const at::Tensor& h,
                                             const at::Tensor& prior_logits,
                                             const at::Tensor& q_logits);

// Backward of sbn_log_weights_and_grad: grad_log_weights [k, B], dlogits
// [k, B, D] (the forward's d log_w / d logits), h [k, B, H], prior_logits [H],
// q_logits [B, H].
SbnSizes check_sbn_log_weights_and_grad_backward_args(const at::Tensor& grad_log_weights,
                                                      const at::Tensor& dlogits,
                                                      const at::Tensor& h,
                                                      const at::Tensor& prior_logits,
                                                      const at::Tensor& q_logits);

}  // namespace genvar
