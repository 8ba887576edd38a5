// What the CPU kernels of the two diffusion KL ops share: the three kinds of
// row pass, optional pointers, and the in-place scaling that finishes the
// training path's backward.
#pragma once

#include "../ops/diffusion.h"
#include "bernoulli_rows.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace genvar::cpu {

// kValue: the KL per row. kValueAndGrad: the KL and, per element, its
// derivative in the network output (the training path's forward). kGrad: the
// derivative scaled by grad[row] (the backward op), no KL.
enum class RowMode { kValue, kValueAndGrad, kGrad };

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& tensor) {
  return tensor.defined() ? tensor.const_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t>
scalar_t* mutable_data_or_null(const at::Tensor& tensor) {
  return tensor.defined() ? tensor.mutable_data_ptr<scalar_t>() : nullptr;
}

// buffer[t, b, :] *= grad[t, b] in place: the training path's derivative
// buffer becomes the gradient without a second [T', B, D] tensor. The caller
// checks the arguments with check_diffusion_and_grad_backward_args.
inline void scale_buffer_in_place(const at::Tensor& grad, at::Tensor& buffer, const char* name) {
  TORCH_CHECK(buffer.is_contiguous(), name, " must be contiguous (it is scaled in place)");
  const at::Tensor grad_c = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES(buffer.scalar_type(), "diffusion_kl_and_grad_backward_cpu", [&] {
    scale_rows<scalar_t>(grad_c.const_data_ptr<scalar_t>(), buffer.mutable_data_ptr<scalar_t>(),
                         buffer.size(0) * buffer.size(1), buffer.size(2));
  });
}

}  // namespace genvar::cpu
