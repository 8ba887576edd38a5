// CUDA implementations of the genvar sigmoid-belief-network ops.
//
// Only tensor handling lives here; the kernels sit behind raw-pointer
// launchers in sbn_kernels.cu so that they build without torch headers.
// Inputs are made contiguous because the kernels index row-major arrays
// directly, and everything is enqueued on torch's current stream so the ops
// order correctly with the rest of the program without synchronising.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/sbn.h"
#include "sbn_launchers.h"
#include "stream.h"

namespace genvar {
namespace {

// The inputs of a forward, contiguous.
struct SbnInputs {
  at::Tensor logits, x, h, prior_logits, q_logits;
};

SbnInputs contiguous_inputs(const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
                            const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  return {logits.contiguous(), x.contiguous(), h.contiguous(), prior_logits.contiguous(),
          q_logits.contiguous()};
}

// Runs the forward; fills `dlogits` too when it is defined.
at::Tensor log_weights_cuda(const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
                            const at::Tensor& prior_logits, const at::Tensor& q_logits,
                            const at::Tensor& dlogits) {
  const SbnSizes sizes = check_sbn_log_weights_args(logits, x, h, prior_logits, q_logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const SbnInputs in = contiguous_inputs(logits, x, h, prior_logits, q_logits);
  at::Tensor log_weights = at::empty({sizes.num_samples, sizes.batch}, in.logits.options());
  if (log_weights.numel() == 0) return log_weights;
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "sbn_log_weights_cuda", [&] {
    const scalar_t* logits_ptr = in.logits.const_data_ptr<scalar_t>();
    const scalar_t* x_ptr = in.x.const_data_ptr<scalar_t>();
    const scalar_t* h_ptr = in.h.const_data_ptr<scalar_t>();
    const scalar_t* prior_ptr = in.prior_logits.const_data_ptr<scalar_t>();
    const scalar_t* q_ptr = in.q_logits.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = log_weights.mutable_data_ptr<scalar_t>();
    if (dlogits.defined()) {
      C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights_and_grad<scalar_t>(
          logits_ptr, x_ptr, h_ptr, prior_ptr, q_ptr, out_ptr,
          dlogits.mutable_data_ptr<scalar_t>(), sizes.num_samples, sizes.batch, sizes.data_dim,
          sizes.latent_dim, current_stream()));
    } else {
      C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights<scalar_t>(
          logits_ptr, x_ptr, h_ptr, prior_ptr, q_ptr, out_ptr, sizes.num_samples, sizes.batch,
          sizes.data_dim, sizes.latent_dim, current_stream()));
    }
  });
  return log_weights;
}

at::Tensor sbn_log_weights_cuda(const at::Tensor& logits, const at::Tensor& x,
                                const at::Tensor& h, const at::Tensor& prior_logits,
                                const at::Tensor& q_logits) {
  return log_weights_cuda(logits, x, h, prior_logits, q_logits, at::Tensor());
}

// Forward of the training path: log_weights and, in the same pass, dlogits =
// d log_weights[k, b] / d logits[k, b, :].
std::tuple<at::Tensor, at::Tensor> sbn_log_weights_and_grad_cuda(
    const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
    const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  // The checks run before the allocation, so a bad logits is reported as such.
  check_sbn_log_weights_args(logits, x, h, prior_logits, q_logits);
  at::Tensor dlogits = at::empty(logits.sizes(), logits.options());
  at::Tensor log_weights = log_weights_cuda(logits, x, h, prior_logits, q_logits, dlogits);
  return {log_weights, dlogits};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sbn_log_weights_backward_cuda(
    const at::Tensor& grad_log_weights, const at::Tensor& logits, const at::Tensor& x,
    const at::Tensor& h, const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  const SbnSizes sizes =
      check_sbn_log_weights_backward_args(grad_log_weights, logits, x, h, prior_logits, q_logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const at::Tensor grad_c = grad_log_weights.contiguous();
  const SbnInputs in = contiguous_inputs(logits, x, h, prior_logits, q_logits);
  at::Tensor grad_logits = at::empty(in.logits.sizes(), in.logits.options());
  at::Tensor grad_h = at::empty(in.h.sizes(), in.h.options());
  at::Tensor grad_prior = at::empty(in.prior_logits.sizes(), in.prior_logits.options());
  at::Tensor grad_q = at::empty(in.q_logits.sizes(), in.q_logits.options());
  // No early return for B = 0: grad_prior_logits is [H] and must be zeros then.
  // The launcher skips whichever of its kernels has an empty output.
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "sbn_log_weights_backward_cuda", [&] {
    C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights_backward<scalar_t>(
        grad_c.const_data_ptr<scalar_t>(), in.logits.const_data_ptr<scalar_t>(),
        in.x.const_data_ptr<scalar_t>(), in.h.const_data_ptr<scalar_t>(),
        in.prior_logits.const_data_ptr<scalar_t>(), in.q_logits.const_data_ptr<scalar_t>(),
        grad_logits.mutable_data_ptr<scalar_t>(), grad_h.mutable_data_ptr<scalar_t>(),
        grad_prior.mutable_data_ptr<scalar_t>(), grad_q.mutable_data_ptr<scalar_t>(),
        sizes.num_samples, sizes.batch, sizes.data_dim, sizes.latent_dim, current_stream()));
  });
  return {grad_logits, grad_h, grad_prior, grad_q};
}

// Scales dlogits in place into the logits gradient (the op's schema marks it
// mutated). The launcher's outputs may not alias its inputs, so the product
// goes through a temporary and is copied back; the training path uses this op
// on the CPU only, where the in-place form saves the allocation.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sbn_log_weights_and_grad_backward_cuda(
    const at::Tensor& grad_log_weights, at::Tensor& dlogits, const at::Tensor& h,
    const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  const SbnSizes sizes = check_sbn_log_weights_and_grad_backward_args(
      grad_log_weights, dlogits, h, prior_logits, q_logits);
  const c10::cuda::CUDAGuard device_guard(dlogits.device());
  const at::Tensor grad_c = grad_log_weights.contiguous();
  const at::Tensor dlogits_c = dlogits.contiguous();
  const at::Tensor h_c = h.contiguous();
  const at::Tensor prior_c = prior_logits.contiguous();
  const at::Tensor q_c = q_logits.contiguous();
  at::Tensor grad_logits = at::empty(dlogits_c.sizes(), dlogits_c.options());
  at::Tensor grad_h = at::empty(h_c.sizes(), h_c.options());
  at::Tensor grad_prior = at::empty(prior_c.sizes(), prior_c.options());
  at::Tensor grad_q = at::empty(q_c.sizes(), q_c.options());
  AT_DISPATCH_FLOATING_TYPES(
      dlogits_c.scalar_type(), "sbn_log_weights_and_grad_backward_cuda", [&] {
        C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights_and_grad_backward<scalar_t>(
            grad_c.const_data_ptr<scalar_t>(), dlogits_c.const_data_ptr<scalar_t>(),
            h_c.const_data_ptr<scalar_t>(), prior_c.const_data_ptr<scalar_t>(),
            q_c.const_data_ptr<scalar_t>(), grad_logits.mutable_data_ptr<scalar_t>(),
            grad_h.mutable_data_ptr<scalar_t>(), grad_prior.mutable_data_ptr<scalar_t>(),
            grad_q.mutable_data_ptr<scalar_t>(), sizes.num_samples, sizes.batch,
            sizes.data_dim, sizes.latent_dim, current_stream()));
      });
  dlogits.copy_(grad_logits);
  return {grad_h, grad_prior, grad_q};
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) {
  m.impl("sbn_log_weights", &sbn_log_weights_cuda);
  m.impl("sbn_log_weights_backward", &sbn_log_weights_backward_cuda);
  m.impl("sbn_log_weights_and_grad", &sbn_log_weights_and_grad_cuda);
  m.impl("sbn_log_weights_and_grad_backward_", &sbn_log_weights_and_grad_backward_cuda);
}

}  // namespace genvar
