// CUDA implementation of genvar::rbm_gibbs.
//
// Per half-sweep, the product by cuBLAS (at::mm_out on the current stream)
// into a pre-activation buffer allocated once per call, then one fused kernel
// (rbm_kernels.cu) for bias, beta, sigmoid and the Philox Bernoulli draw, on
// the same Philox stream as the CPU. The argument checks are the CPU's
// (csrc/ops/rbm.cpp); v is not checked for binary values here (that would be
// another pass and a synchronisation): a non-binary v enters the first
// product as it is.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "../ops/rbm.h"
#include "rbm_launchers.h"
#include "stream.h"

namespace genvar {
namespace {

template <typename scalar_t>
void sample_layer(const at::Tensor& pre, const at::Tensor& add, const at::Tensor& shift,
                  double beta, int64_t seed, uint64_t step, at::Tensor& out) {
  C10_CUDA_CHECK(cuda::launch_rbm_sample<scalar_t>(
      pre.const_data_ptr<scalar_t>(), add.defined() ? add.const_data_ptr<scalar_t>() : nullptr,
      shift.defined() ? shift.const_data_ptr<scalar_t>() : nullptr,
      static_cast<scalar_t>(beta), out.size(0), out.size(1), static_cast<uint64_t>(seed), step,
      out.mutable_data_ptr<scalar_t>(), current_stream()));
}

std::tuple<at::Tensor, at::Tensor> rbm_gibbs_cuda(
    const at::Tensor& v, const at::Tensor& weight, const at::Tensor& visible_bias,
    const at::Tensor& hidden_bias, double beta, int64_t sweeps, int64_t seed, int64_t offset,
    const std::optional<at::Tensor>& base_visible_bias) {
  const RbmSizes sizes = check_rbm_gibbs_args(v, weight, visible_bias, hidden_bias, beta, sweeps,
                                              seed, offset, base_visible_bias);
  const c10::cuda::CUDAGuard device_guard(v.device());
  const at::Tensor weight_c = weight.detach().contiguous();
  const at::Tensor weight_t = weight_c.t();  // cuBLAS takes the transpose as it is
  const at::Tensor hidden_add = hidden_bias.detach().contiguous();
  const at::Tensor shift = rbm_visible_shift(visible_bias.detach(), beta, base_visible_bias);
  at::Tensor visible = v.detach().contiguous().clone();
  at::Tensor hidden = at::empty({sizes.chains, sizes.hidden}, v.options());
  at::Tensor pre_hidden = at::empty({sizes.chains, sizes.hidden}, v.options());
  at::Tensor pre_visible = at::empty({sizes.chains, sizes.visible}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "rbm_gibbs_cuda", [&] {
    for (int64_t sweep = 0; sweep < sweeps; ++sweep) {
      const uint64_t step = static_cast<uint64_t>(offset + 2 * sweep);
      at::mm_out(pre_hidden, visible, weight_c);
      sample_layer<scalar_t>(pre_hidden, hidden_add, at::Tensor(), beta, seed, step, hidden);
      at::mm_out(pre_visible, hidden, weight_t);
      sample_layer<scalar_t>(pre_visible, at::Tensor(), shift, beta, seed, step + 1, visible);
    }
  });
  return {visible, hidden};
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) { m.impl("rbm_gibbs", &rbm_gibbs_cuda); }

}  // namespace genvar
