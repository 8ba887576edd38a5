// CUDA implementations of the genvar diffusion KL ops.
//
// Only tensor handling lives here; the kernels sit behind raw-pointer
// launchers in diffusion_kernels.cu so that they build without torch headers.
// The argument checks and the schedule tables are the CPU's (csrc/ops/
// diffusion.cpp): checking steps and betas reads them on the host, a
// synchronising check once per call. x0 and xt of the binomial op are not
// checked for binary values here (that would be another pass and another
// synchronisation); the kernel makes a row holding a non-binary value NaN.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/diffusion.h"
#include "diffusion_launchers.h"
#include "stream.h"

namespace genvar {
namespace {

cuda::DiffusionShape shape_of(const DiffusionSizes& sizes) {
  return {sizes.num_slices, sizes.batch, sizes.data_dim, sizes.num_steps};
}

at::Tensor kl_like(const PreparedDiffusion& in) {
  return at::empty({in.sizes.num_slices, in.sizes.batch}, in.output.options());
}

// The binomial forward; with `dlogits` defined, the training path's forward.
at::Tensor binomial_forward(const PreparedDiffusion& in, const at::Tensor& dlogits) {
  at::Tensor kl = kl_like(in);
  AT_DISPATCH_FLOATING_TYPES(in.output.scalar_type(), "diffusion_binomial_kl_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_diffusion_binomial_kl<scalar_t>(
        in.x0.const_data_ptr<scalar_t>(), in.xt.const_data_ptr<scalar_t>(),
        in.output.const_data_ptr<scalar_t>(), in.steps.const_data_ptr<int64_t>(),
        in.table.const_data_ptr<double>(), kl.mutable_data_ptr<scalar_t>(),
        dlogits.defined() ? dlogits.mutable_data_ptr<scalar_t>() : nullptr, shape_of(in.sizes),
        current_stream()));
  });
  return kl;
}

// Checks first: the device guard needs logits on a CUDA device. The caller
// holds a guard for the work after this.
PreparedDiffusion prepare_binomial(const at::Tensor& x0, const at::Tensor& xt,
                                   const at::Tensor& logits, const at::Tensor& steps,
                                   const at::Tensor& betas) {
  const DiffusionSizes sizes = check_diffusion_kl_args(x0, xt, logits, "logits", steps, betas);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return prepare_diffusion(x0, xt, logits, steps, betas, sizes, binomial_schedule_table);
}

at::Tensor diffusion_binomial_kl_cuda(const at::Tensor& x0, const at::Tensor& xt,
                                      const at::Tensor& logits, const at::Tensor& steps,
                                      const at::Tensor& betas) {
  const PreparedDiffusion in = prepare_binomial(x0, xt, logits, steps, betas);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return binomial_forward(in, at::Tensor());
}

std::tuple<at::Tensor, at::Tensor> diffusion_binomial_kl_and_grad_cuda(
    const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& logits,
    const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedDiffusion in = prepare_binomial(x0, xt, logits, steps, betas);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  at::Tensor dlogits = at::empty(in.output.sizes(), in.output.options());
  at::Tensor kl = binomial_forward(in, dlogits);
  return {kl, dlogits};
}

at::Tensor diffusion_binomial_kl_backward_cuda(const at::Tensor& grad, const at::Tensor& x0,
                                               const at::Tensor& xt, const at::Tensor& logits,
                                               const at::Tensor& steps,
                                               const at::Tensor& betas) {
  const PreparedDiffusion in = prepare_binomial(x0, xt, logits, steps, betas);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  check_diffusion_grad(grad, logits, "logits", in.sizes);
  const at::Tensor grad_c = grad.contiguous();
  at::Tensor grad_logits = at::empty(in.output.sizes(), in.output.options());
  AT_DISPATCH_FLOATING_TYPES(in.output.scalar_type(), "diffusion_binomial_kl_backward_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_diffusion_binomial_kl_backward<scalar_t>(
        grad_c.const_data_ptr<scalar_t>(), in.x0.const_data_ptr<scalar_t>(),
        in.xt.const_data_ptr<scalar_t>(), in.output.const_data_ptr<scalar_t>(),
        in.steps.const_data_ptr<int64_t>(), in.table.const_data_ptr<double>(),
        grad_logits.mutable_data_ptr<scalar_t>(), shape_of(in.sizes), current_stream()));
  });
  return grad_logits;
}

// Prepared inputs of the Gaussian op and its log_var.
struct PreparedGaussian {
  PreparedDiffusion common;
  at::Tensor log_var;
};

// Checks first, as prepare_binomial.
PreparedGaussian prepare_gaussian(const at::Tensor& x0, const at::Tensor& xt,
                                  const at::Tensor& mean, const at::Tensor& log_var,
                                  const at::Tensor& steps, const at::Tensor& betas) {
  const DiffusionSizes sizes =
      check_diffusion_gaussian_kl_args(x0, xt, mean, log_var, steps, betas);
  const c10::cuda::CUDAGuard device_guard(mean.device());
  return {prepare_diffusion(x0, xt, mean, steps, betas, sizes, gaussian_schedule_table),
          log_var.contiguous()};
}

// The Gaussian forward; with dmean and dlog_var defined, the training path's.
at::Tensor gaussian_forward(const PreparedGaussian& in, const at::Tensor& dmean,
                            const at::Tensor& dlog_var) {
  const PreparedDiffusion& common = in.common;
  at::Tensor kl = kl_like(common);
  AT_DISPATCH_FLOATING_TYPES(common.output.scalar_type(), "diffusion_gaussian_kl_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_diffusion_gaussian_kl<scalar_t>(
        common.x0.const_data_ptr<scalar_t>(), common.xt.const_data_ptr<scalar_t>(),
        common.output.const_data_ptr<scalar_t>(), in.log_var.const_data_ptr<scalar_t>(),
        common.steps.const_data_ptr<int64_t>(), common.table.const_data_ptr<double>(),
        kl.mutable_data_ptr<scalar_t>(),
        dmean.defined() ? dmean.mutable_data_ptr<scalar_t>() : nullptr,
        dlog_var.defined() ? dlog_var.mutable_data_ptr<scalar_t>() : nullptr,
        shape_of(common.sizes), current_stream()));
  });
  return kl;
}

at::Tensor diffusion_gaussian_kl_cuda(const at::Tensor& x0, const at::Tensor& xt,
                                      const at::Tensor& mean, const at::Tensor& log_var,
                                      const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  const c10::cuda::CUDAGuard device_guard(mean.device());
  return gaussian_forward(in, at::Tensor(), at::Tensor());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diffusion_gaussian_kl_and_grad_cuda(
    const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& mean,
    const at::Tensor& log_var, const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  const c10::cuda::CUDAGuard device_guard(mean.device());
  at::Tensor dmean = at::empty(in.common.output.sizes(), in.common.output.options());
  at::Tensor dlog_var = at::empty(in.common.output.sizes(), in.common.output.options());
  at::Tensor kl = gaussian_forward(in, dmean, dlog_var);
  return {kl, dmean, dlog_var};
}

std::tuple<at::Tensor, at::Tensor> diffusion_gaussian_kl_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& mean,
    const at::Tensor& log_var, const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  const c10::cuda::CUDAGuard device_guard(mean.device());
  const PreparedDiffusion& common = in.common;
  check_diffusion_grad(grad, mean, "mean", common.sizes);
  const at::Tensor grad_c = grad.contiguous();
  at::Tensor grad_mean = at::empty(common.output.sizes(), common.output.options());
  at::Tensor grad_log_var = at::empty(common.output.sizes(), common.output.options());
  AT_DISPATCH_FLOATING_TYPES(common.output.scalar_type(), "diffusion_gaussian_kl_backward_cuda",
                             [&] {
    C10_CUDA_CHECK(cuda::launch_diffusion_gaussian_kl_backward<scalar_t>(
        grad_c.const_data_ptr<scalar_t>(), common.x0.const_data_ptr<scalar_t>(),
        common.xt.const_data_ptr<scalar_t>(), common.output.const_data_ptr<scalar_t>(),
        in.log_var.const_data_ptr<scalar_t>(), common.steps.const_data_ptr<int64_t>(),
        common.table.const_data_ptr<double>(), grad_mean.mutable_data_ptr<scalar_t>(),
        grad_log_var.mutable_data_ptr<scalar_t>(), shape_of(common.sizes), current_stream()));
  });
  return {grad_mean, grad_log_var};
}

// The training path's backwards: the buffers scaled in place by grad[t, b].
// ATen's broadcasting multiply runs on the current stream and serves any layout.
void diffusion_binomial_kl_and_grad_backward_cuda(const at::Tensor& grad, at::Tensor& dlogits) {
  check_diffusion_and_grad_backward_args(grad, dlogits, "dlogits");
  const c10::cuda::CUDAGuard device_guard(dlogits.device());
  dlogits.mul_(grad.unsqueeze(-1));
}

void diffusion_gaussian_kl_and_grad_backward_cuda(const at::Tensor& grad, at::Tensor& dmean,
                                                  at::Tensor& dlog_var) {
  check_diffusion_and_grad_backward_args(grad, dmean, "dmean");
  check_diffusion_and_grad_backward_args(grad, dlog_var, "dlog_var");
  TORCH_CHECK(dlog_var.sizes() == dmean.sizes(), "dlog_var must have the shape of dmean ",
              dmean.sizes(), ", got ", dlog_var.sizes());
  const c10::cuda::CUDAGuard device_guard(dmean.device());
  const at::Tensor column = grad.unsqueeze(-1);
  dmean.mul_(column);
  dlog_var.mul_(column);
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) {
  m.impl("diffusion_binomial_kl", &diffusion_binomial_kl_cuda);
  m.impl("diffusion_binomial_kl_backward", &diffusion_binomial_kl_backward_cuda);
  m.impl("diffusion_binomial_kl_and_grad", &diffusion_binomial_kl_and_grad_cuda);
  m.impl("diffusion_binomial_kl_and_grad_backward_", &diffusion_binomial_kl_and_grad_backward_cuda);
  m.impl("diffusion_gaussian_kl", &diffusion_gaussian_kl_cuda);
  m.impl("diffusion_gaussian_kl_backward", &diffusion_gaussian_kl_backward_cuda);
  m.impl("diffusion_gaussian_kl_and_grad", &diffusion_gaussian_kl_and_grad_cuda);
  m.impl("diffusion_gaussian_kl_and_grad_backward_", &diffusion_gaussian_kl_and_grad_backward_cuda);
}

}  // namespace genvar
