// CUDA implementations of the genvar IWAE ops.
//
// Only tensor handling lives here; the kernels sit behind raw-pointer
// launchers in iwae_kernels.cu so that they build without torch headers.
// Inputs are made contiguous because the kernels index row-major arrays
// directly, and everything is enqueued on torch's current stream so the ops
// order correctly with the rest of the program without synchronising.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/iwae.h"
#include "iwae_launchers.h"
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
