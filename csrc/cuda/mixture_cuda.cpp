// CUDA implementation of the mixture log-density ops.
//
// The tile loop, the GEMMs (cuBLAS through at::mm_out, on torch's current
// stream) and the set-up are the shared ones of ../ops/mixture.h; only the
// passes over each tile differ from the CPU, and they sit behind the
// raw-pointer launchers of mixture_kernels.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/mixture.h"
#include "mixture_launchers.h"
#include "stream.h"

namespace genvar {
namespace {

// 2048 x 8192 logits: 64 MB in float32; each GEMM is then large enough to
// keep the GPU busy, and a forward at M = 5000, N = 50000 takes 21 tiles.
constexpr MixtureTiling kTiling{2048, 8192};


template <typename scalar_t>
void forward_pass(const MixtureTile<scalar_t>& tile, double* running_shift, double* running_sum) {
  C10_CUDA_CHECK(genvar::cuda::launch_mixture_forward_tile<scalar_t>(
      tile, running_shift, running_sum, current_stream()));
}

template <typename scalar_t>
void weights_pass(const MixtureTile<scalar_t>& tile, const double* log_kernel_sum,
                  const scalar_t* row_weight) {
  C10_CUDA_CHECK(genvar::cuda::launch_mixture_weights_tile<scalar_t>(
      tile, log_kernel_sum, row_weight, current_stream()));
}

MixturePrepared prepare(const at::Tensor& z, const at::Tensor& centers, double scale,
                        double refine_ulps) {
  return prepare_mixture(z, centers, scale,
                         gemm_unit_roundoff(z.scalar_type(), at::Float32Backend::CUDA),
                         refine_ulps);
}

at::Tensor mixture_log_density_cuda(const at::Tensor& z, const at::Tensor& centers,
                                    double scale) {
  check_mixture_log_density_args(z, centers, scale);
  const c10::cuda::CUDAGuard device_guard(z.device());
  if (z.size(0) == 0) return at::empty({0}, z.options());
  const MixturePrepared prepared = prepare(z, centers, scale, kForwardRefineUlps);
  at::Tensor log_density;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "mixture_log_density_cuda", [&] {
    log_density = mixture_log_density_tiled<scalar_t>(prepared, kTiling,
                                                      &forward_pass<scalar_t>);
  });
  return log_density;
}

std::tuple<at::Tensor, at::Tensor> mixture_log_density_backward_cuda(
    const at::Tensor& grad_log_density, const at::Tensor& z, const at::Tensor& centers,
    double scale) {
  check_mixture_log_density_backward_args(grad_log_density, z, centers, scale);
  const c10::cuda::CUDAGuard device_guard(z.device());
  if (z.size(0) == 0) return {at::zeros_like(z), at::zeros_like(centers)};
  const MixturePrepared prepared = prepare(z, centers, scale, kBackwardRefineUlps);
  const MixtureBackwardPrepared backward = prepare_mixture_backward(prepared, grad_log_density);
  std::tuple<at::Tensor, at::Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "mixture_log_density_backward_cuda", [&] {
    grads = mixture_log_density_backward_tiled<scalar_t>(
        prepared, backward, kTiling, &forward_pass<scalar_t>, &weights_pass<scalar_t>);
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) {
  m.impl("mixture_log_density", &mixture_log_density_cuda);
  m.impl("mixture_log_density_backward", &mixture_log_density_backward_cuda);
}

}  // namespace genvar
