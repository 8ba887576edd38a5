// The diffusion KL ops on CUDA: kernels, their launchers, and the ops' CUDA
// implementations.
//
// The kernels and launchers include no torch header, so they compile with
// plain nvcc. One block per (slice, example) row, grid-striding over rows;
// its threads stride over D (coalesced) and the row's KL is a block sum in
// scalar_t, as on the CPU. Each row reads its step's entries of the schedule
// table (built by the implementations below, layout in ../ops/diffusion.h)
// once, so an element costs one exp (and, for the binomial KL, one log1p).
//
// Launchers: all pointers are device pointers to contiguous row-major arrays:
// x0 [B, D]; xt, the network outputs and the per-element outputs [T', B, D];
// steps, grad and kl [T', B]; table [T, kBinomialColumns or kGaussianColumns]
// of double. Each launcher enqueues on `stream`, never synchronises, launches
// nothing when T' B = 0 and returns the launch error. Steps are expected in
// [1, T] (the caller checks): a row whose step is not gets NaN. x0 and xt of
// the binomial op are expected binary: an element that is not makes its
// row's KL and its gradient NaN. Only the float and double instantiations
// exist.
//
// Implementations: the argument checks and the schedule tables are the CPU's
// (../ops/diffusion.cpp): checking steps and betas reads them on the host, a
// synchronising check once per call. x0 and xt of the binomial op are not
// checked for binary values here (that would be another pass and another
// synchronisation); the kernel makes a row holding a non-binary value NaN.
#include "device_utils.cuh"
#include "../ops/diffusion.h"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {

// Sizes of a call: T' slices, B examples, D data dimensions, T steps.
struct DiffusionShape {
  int64_t num_slices;
  int64_t batch;
  int64_t data_dim;
  int64_t num_steps;
};

namespace {

// kValue: the KL. kValueAndGrad: the KL and the derivatives (the training
// path's forward). kGrad: the derivatives times grad[row], no KL.
enum class Pass { kValue, kValueAndGrad, kGrad };

// The row's table entries, or those of step 1 with `poison` NaN where the
// step is out of [1, T] (the host checks; this only keeps reads in bounds).
template <typename scalar_t>
__device__ __forceinline__ const double* step_entries(const double* table, int64_t step,
                                                      int64_t num_steps, int64_t columns,
                                                      scalar_t& poison) {
  const bool valid = step >= 1 && step <= num_steps;
  poison = valid ? scalar_t(0) : quiet_nan<scalar_t>();
  return table + ((valid ? step : 1) - 1) * columns;
}

// The cell of binary (x_t, x_0) among c<x_t><x_0>, by selects (no local array).
template <typename scalar_t>
__device__ __forceinline__ scalar_t select_cell(scalar_t c00, scalar_t c01, scalar_t c10,
                                                scalar_t c11, bool noisy_one, bool clean_one) {
  return clean_one ? (noisy_one ? c11 : c01) : (noisy_one ? c10 : c00);
}

template <typename scalar_t>
__device__ __forceinline__ bool is_binary(scalar_t value) {
  return value == scalar_t(0) || value == scalar_t(1);
}

// Per element, with e = exp(-|l|) and the row's q and entropy h for the cell:
// KL = softplus(l) - q l - h, d KL / d l = sigmoid(l) - q. A non-binary x0 or
// xt element makes both NaN (the CPU raises instead).
template <typename scalar_t, Pass kPass>
__global__ void __launch_bounds__(kMaxRowThreads)
    binomial_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x0,
                    const scalar_t* __restrict__ xt, const scalar_t* __restrict__ logits,
                    const int64_t* __restrict__ steps, const double* __restrict__ table,
                    scalar_t* __restrict__ kl, scalar_t* __restrict__ out, DiffusionShape shape) {
  const int64_t num_rows = shape.num_slices * shape.batch, data_dim = shape.data_dim;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    scalar_t poison;
    const double* entry =
        step_entries(table, steps[row], shape.num_steps, kBinomialColumns, poison);
    const double* q = entry + kBinomialQ;
    const double* h = entry + kBinomialEntropy;
    const scalar_t q00 = q[0], q01 = q[1], q10 = q[2], q11 = q[3];
    const scalar_t h00 = h[0], h01 = h[1], h10 = h[2], h11 = h[3];
    const scalar_t scale = kPass == Pass::kGrad ? grad[row] : scalar_t(1);
    const scalar_t* x0_row = x0 + (row % shape.batch) * data_dim;
    scalar_t total = 0;
    for (int64_t d = threadIdx.x; d < data_dim; d += blockDim.x) {
      const int64_t index = row * data_dim + d;
      const scalar_t noisy = xt[index], clean = x0_row[d], logit = logits[index];
      const bool noisy_one = noisy != scalar_t(0), clean_one = clean != scalar_t(0);
      const scalar_t mark =
          is_binary(noisy) && is_binary(clean) ? poison : quiet_nan<scalar_t>();
      const scalar_t q_cell = select_cell(q00, q01, q10, q11, noisy_one, clean_one);
      const scalar_t e = exp_of(-abs_of(logit));
      if constexpr (kPass != Pass::kGrad) {
        const scalar_t softplus = (logit > scalar_t(0) ? logit : scalar_t(0)) + log1p_of(e);
        total += softplus - q_cell * logit - select_cell(h00, h01, h10, h11, noisy_one, clean_one) +
                 mark;
      }
      if constexpr (kPass != Pass::kValue) {
        const scalar_t sigmoid = (logit >= scalar_t(0) ? scalar_t(1) : e) / (scalar_t(1) + e);
        out[index] = scale * (sigmoid - q_cell) + mark;
      }
    }
    if constexpr (kPass != Pass::kGrad) {
      total = block_sum(total);
      if (threadIdx.x == 0) kl[row] = total + poison;
    }
  }
}

// Per element, with diff = mq - mean and precision = exp(-log_var):
// KL = 0.5 (log_var + offset + (vq + diff^2) precision), d KL / d mean =
// -diff precision, d KL / d log_var = 0.5 (1 - (vq + diff^2) precision).
template <typename scalar_t, Pass kPass>
__global__ void __launch_bounds__(kMaxRowThreads)
    gaussian_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x0,
                    const scalar_t* __restrict__ xt, const scalar_t* __restrict__ mean,
                    const scalar_t* __restrict__ log_var, const int64_t* __restrict__ steps,
                    const double* __restrict__ table, scalar_t* __restrict__ kl,
                    scalar_t* __restrict__ out_mean, scalar_t* __restrict__ out_log_var,
                    DiffusionShape shape) {
  const int64_t num_rows = shape.num_slices * shape.batch, data_dim = shape.data_dim;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    scalar_t poison;
    const double* entry =
        step_entries(table, steps[row], shape.num_steps, kGaussianColumns, poison);
    const scalar_t c0 = entry[kGaussianC0], c1 = entry[kGaussianC1];
    const scalar_t var_q = entry[kGaussianVarQ], offset = entry[kGaussianOffset];
    const scalar_t scale = kPass == Pass::kGrad ? grad[row] : scalar_t(1);
    const scalar_t half_scale = scalar_t(0.5) * scale;
    const scalar_t* x0_row = x0 + (row % shape.batch) * data_dim;
    scalar_t total = 0;
    for (int64_t d = threadIdx.x; d < data_dim; d += blockDim.x) {
      const int64_t index = row * data_dim + d;
      const scalar_t diff = c0 * x0_row[d] + c1 * xt[index] - mean[index];
      const scalar_t precision = exp_of(-log_var[index]);
      const scalar_t spread_ratio = (var_q + diff * diff) * precision;
      if constexpr (kPass != Pass::kGrad) total += (log_var[index] + offset) + spread_ratio;
      if constexpr (kPass != Pass::kValue) {
        out_mean[index] = -scale * diff * precision + poison;
        out_log_var[index] = half_scale - half_scale * spread_ratio + poison;
      }
    }
    if constexpr (kPass != Pass::kGrad) {
      total = block_sum(total);
      if (threadIdx.x == 0) kl[row] = scalar_t(0.5) * total + poison;
    }
  }
}

template <typename scalar_t, Pass kPass>
void launch_binomial(const scalar_t* grad, const scalar_t* x0, const scalar_t* xt,
                     const scalar_t* logits, const int64_t* steps, const double* table,
                     scalar_t* kl, scalar_t* out, DiffusionShape shape, cudaStream_t stream) {
  const int64_t num_rows = shape.num_slices * shape.batch;
  binomial_kernel<scalar_t, kPass>
      <<<grid_blocks(num_rows), row_block_threads(shape.data_dim), 0, stream>>>(
          grad, x0, xt, logits, steps, table, kl, out, shape);
}

template <typename scalar_t, Pass kPass>
void launch_gaussian(const scalar_t* grad, const scalar_t* x0, const scalar_t* xt,
                     const scalar_t* mean, const scalar_t* log_var, const int64_t* steps,
                     const double* table, scalar_t* kl, scalar_t* out_mean,
                     scalar_t* out_log_var, DiffusionShape shape, cudaStream_t stream) {
  const int64_t num_rows = shape.num_slices * shape.batch;
  gaussian_kernel<scalar_t, kPass>
      <<<grid_blocks(num_rows), row_block_threads(shape.data_dim), 0, stream>>>(
          grad, x0, xt, mean, log_var, steps, table, kl, out_mean, out_log_var, shape);
}

}  // namespace

// kl[T', B]; with dlogits non-null also dlogits[T', B, D] = d kl[t, b] /
// d logits[t, b, :] = sigmoid(logits) - q (the training path's forward).
template <typename scalar_t>
cudaError_t launch_diffusion_binomial_kl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* logits, const int64_t* steps,
                                         const double* table, scalar_t* kl, scalar_t* dlogits,
                                         DiffusionShape shape, cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0) return cudaSuccess;
  if (dlogits == nullptr) {
    launch_binomial<scalar_t, Pass::kValue>(nullptr, x0, xt, logits, steps, table, kl, nullptr,
                                            shape, stream);
  } else {
    launch_binomial<scalar_t, Pass::kValueAndGrad>(nullptr, x0, xt, logits, steps, table, kl,
                                                   dlogits, shape, stream);
  }
  return cudaGetLastError();
}

// grad_logits[T', B, D] = grad[t, b] * (sigmoid(logits) - q).
template <typename scalar_t>
cudaError_t launch_diffusion_binomial_kl_backward(const scalar_t* grad, const scalar_t* x0,
                                                  const scalar_t* xt, const scalar_t* logits,
                                                  const int64_t* steps, const double* table,
                                                  scalar_t* grad_logits, DiffusionShape shape,
                                                  cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0 || shape.data_dim == 0) return cudaSuccess;
  launch_binomial<scalar_t, Pass::kGrad>(grad, x0, xt, logits, steps, table, nullptr,
                                         grad_logits, shape, stream);
  return cudaGetLastError();
}

// kl[T', B]; with dmean and dlog_var non-null also their derivatives
// (mean - mq) e^-log_var and 0.5 (1 - (vq + (mq - mean)^2) e^-log_var).
template <typename scalar_t>
cudaError_t launch_diffusion_gaussian_kl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* mean, const scalar_t* log_var,
                                         const int64_t* steps, const double* table, scalar_t* kl,
                                         scalar_t* dmean, scalar_t* dlog_var,
                                         DiffusionShape shape, cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0) return cudaSuccess;
  if (dmean == nullptr) {
    launch_gaussian<scalar_t, Pass::kValue>(nullptr, x0, xt, mean, log_var, steps, table, kl,
                                            nullptr, nullptr, shape, stream);
  } else {
    launch_gaussian<scalar_t, Pass::kValueAndGrad>(nullptr, x0, xt, mean, log_var, steps, table,
                                                   kl, dmean, dlog_var, shape, stream);
  }
  return cudaGetLastError();
}

// grad_mean and grad_log_var [T', B, D]: those derivatives times grad[t, b].
template <typename scalar_t>
cudaError_t launch_diffusion_gaussian_kl_backward(const scalar_t* grad, const scalar_t* x0,
                                                  const scalar_t* xt, const scalar_t* mean,
                                                  const scalar_t* log_var, const int64_t* steps,
                                                  const double* table, scalar_t* grad_mean,
                                                  scalar_t* grad_log_var, DiffusionShape shape,
                                                  cudaStream_t stream) {
  if (shape.num_slices * shape.batch == 0 || shape.data_dim == 0) return cudaSuccess;
  launch_gaussian<scalar_t, Pass::kGrad>(grad, x0, xt, mean, log_var, steps, table, nullptr,
                                         grad_mean, grad_log_var, shape, stream);
  return cudaGetLastError();
}

#define GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS(scalar_t)                                       \
  template cudaError_t launch_diffusion_binomial_kl<scalar_t>(                                \
      const scalar_t*, const scalar_t*, const scalar_t*, const int64_t*, const double*,       \
      scalar_t*, scalar_t*, DiffusionShape, cudaStream_t);                                    \
  template cudaError_t launch_diffusion_binomial_kl_backward<scalar_t>(                       \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const int64_t*,     \
      const double*, scalar_t*, DiffusionShape, cudaStream_t);                                \
  template cudaError_t launch_diffusion_gaussian_kl<scalar_t>(                                \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const int64_t*,     \
      const double*, scalar_t*, scalar_t*, scalar_t*, DiffusionShape, cudaStream_t);          \
  template cudaError_t launch_diffusion_gaussian_kl_backward<scalar_t>(                       \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,    \
      const int64_t*, const double*, scalar_t*, scalar_t*, DiffusionShape, cudaStream_t);

GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS(float)
GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS(double)

#undef GENVAR_INSTANTIATE_DIFFUSION_LAUNCHERS

}  // namespace genvar::cuda

// ---------------------------------------------------------------------------
// The ops' CUDA implementations and their registration: tensor handling in
// ATen, raw pointers into the launchers above. Only a CUDA build of the
// extension (GENVAR_WITH_CUDA: setup.py, CMake) compiles this part; nvcc
// alone, as in tests/test_cuda_compile.py, compiles the kernels without torch.
#ifdef GENVAR_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

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

#endif  // GENVAR_WITH_CUDA
