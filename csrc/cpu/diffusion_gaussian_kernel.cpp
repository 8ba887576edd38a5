// CPU kernels of diffusion_gaussian_kl: OpenMP over (slice, example) rows,
// SIMD inside a row over D.
//
// Each row reads its step's c0, c1, vq and constant once (layout in
// ../ops/diffusion_table.h); an element then costs one exp, exp(-log_var),
// shared by the KL and both derivatives:
//   KL_d = 0.5 (log_var + offset + (vq + (mq - mean)^2) e^-log_var),
//   offset = -log vq - 1 (t > 1) or log(2 pi) (t = 1, vq = 0, mq = x_0).
// The constant is added per element, not D times at the end of the row: near
// the posterior each term is small, and a row sum of D large terms would
// cancel away its digits. float gets target clones and the polynomial exp of
// fast_math.h; double keeps libm.
#include "diffusion_common.h"
#include "fast_math.h"
#include "../ops/checks.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

namespace genvar::cpu {
namespace {

template <typename scalar_t>
struct GaussianStep {
  scalar_t c0, c1, var_q, offset;
};

template <typename scalar_t>
GaussianStep<scalar_t> gaussian_step(const double* table, int64_t step) {
  const double* row = table + (step - 1) * kGaussianColumns;
  return {static_cast<scalar_t>(row[kGaussianC0]), static_cast<scalar_t>(row[kGaussianC1]),
          static_cast<scalar_t>(row[kGaussianVarQ]), static_cast<scalar_t>(row[kGaussianOffset])};
}

// Returns sum_d KL_d unless kGrad; kValueAndGrad and kGrad also write
// d KL_d / d mean_d = (mean - mq) e^-log_var and d KL_d / d log_var_d =
// 0.5 (1 - (vq + (mq - mean)^2) e^-log_var), times grad (1 for kValueAndGrad).
template <RowMode kMode, typename scalar_t>
GENVAR_INLINE scalar_t gaussian_row_impl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* mean, const scalar_t* log_var,
                                         const GaussianStep<scalar_t>& step, scalar_t grad,
                                         scalar_t* grad_mean, scalar_t* grad_log_var,
                                         int64_t data_dim) {
  const scalar_t half_grad = scalar_t(0.5) * grad;
  scalar_t total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t d = 0; d < data_dim; ++d) {
    const scalar_t diff = step.c0 * x0[d] + step.c1 * xt[d] - mean[d];  // mq - mean
    const scalar_t precision = Math<scalar_t>::exp_any(-log_var[d]);
    const scalar_t spread_ratio = (step.var_q + diff * diff) * precision;
    if constexpr (kMode != RowMode::kGrad) total += (log_var[d] + step.offset) + spread_ratio;
    if constexpr (kMode != RowMode::kValue) {
      grad_mean[d] = -grad * diff * precision;
      grad_log_var[d] = half_grad - half_grad * spread_ratio;
    }
  }
  return scalar_t(0.5) * total;
}

// The row functions, float with target clones (the clones must be whole
// functions, not template instances) and double without (libm, no SIMD).
#define GENVAR_GAUSSIAN_ROW(name, mode)                                                      \
  GENVAR_TARGET_CLONES float name(const float* x0, const float* xt, const float* mean,      \
                                  const float* log_var, const GaussianStep<float>& step,    \
                                  float grad, float* grad_mean, float* grad_log_var,        \
                                  int64_t data_dim) {                                       \
    return gaussian_row_impl<mode>(x0, xt, mean, log_var, step, grad, grad_mean,            \
                                   grad_log_var, data_dim);                                 \
  }                                                                                          \
  double name(const double* x0, const double* xt, const double* mean, const double* log_var, \
              const GaussianStep<double>& step, double grad, double* grad_mean,             \
              double* grad_log_var, int64_t data_dim) {                                     \
    return gaussian_row_impl<mode>(x0, xt, mean, log_var, step, grad, grad_mean,            \
                                   grad_log_var, data_dim);                                 \
  }

GENVAR_GAUSSIAN_ROW(gaussian_row, RowMode::kValue)
GENVAR_GAUSSIAN_ROW(gaussian_row_and_grad, RowMode::kValueAndGrad)
GENVAR_GAUSSIAN_ROW(gaussian_grad_row, RowMode::kGrad)
#undef GENVAR_GAUSSIAN_ROW

// One pass of `kMode` over every (slice, example) row. kl [T', B], grad
// [T', B] and the element outputs [T', B, D] are null where unused.
template <RowMode kMode, typename scalar_t>
void gaussian_pass(const scalar_t* x0, const scalar_t* xt, const scalar_t* mean,
                   const scalar_t* log_var, const int64_t* steps, const double* table,
                   const scalar_t* grad, scalar_t* kl, scalar_t* grad_mean,
                   scalar_t* grad_log_var, const DiffusionSizes& sizes) {
  const int64_t data_dim = sizes.data_dim;
  at::parallel_for(0, sizes.num_slices * sizes.batch, grain_rows(data_dim),
                   [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const GaussianStep<scalar_t> step = gaussian_step<scalar_t>(table, steps[row]);
      const int64_t offset = row * data_dim;
      const scalar_t* x0_row = x0 + (row % sizes.batch) * data_dim;
      const scalar_t scale = grad == nullptr ? scalar_t(1) : grad[row];
      scalar_t* mean_out = grad_mean == nullptr ? nullptr : grad_mean + offset;
      scalar_t* log_var_out = grad_log_var == nullptr ? nullptr : grad_log_var + offset;
      if constexpr (kMode == RowMode::kValue) {
        kl[row] = gaussian_row(x0_row, xt + offset, mean + offset, log_var + offset, step, scale,
                               mean_out, log_var_out, data_dim);
      } else if constexpr (kMode == RowMode::kValueAndGrad) {
        kl[row] = gaussian_row_and_grad(x0_row, xt + offset, mean + offset, log_var + offset,
                                        step, scale, mean_out, log_var_out, data_dim);
      } else {
        gaussian_grad_row(x0_row, xt + offset, mean + offset, log_var + offset, step, scale,
                          mean_out, log_var_out, data_dim);
      }
    }
  });
}

// Prepared inputs plus log_var, which the shared preparation does not know.
struct PreparedGaussian {
  PreparedDiffusion common;
  at::Tensor log_var;
};

PreparedGaussian prepare_gaussian(const at::Tensor& x0, const at::Tensor& xt,
                                  const at::Tensor& mean, const at::Tensor& log_var,
                                  const at::Tensor& steps, const at::Tensor& betas) {
  const DiffusionSizes sizes = check_diffusion_gaussian_kl_args(x0, xt, mean, log_var, steps,
                                                                betas);
  return {prepare_diffusion(x0, xt, mean, steps, betas, sizes, gaussian_schedule_table),
          log_var.contiguous()};
}

template <RowMode kMode>
void run_gaussian(const PreparedGaussian& in, const at::Tensor& grad, const at::Tensor& kl,
                  const at::Tensor& grad_mean, const at::Tensor& grad_log_var) {
  const PreparedDiffusion& common = in.common;
  AT_DISPATCH_FLOATING_TYPES(common.output.scalar_type(), "diffusion_gaussian_kl_cpu", [&] {
    gaussian_pass<kMode, scalar_t>(
        common.x0.const_data_ptr<scalar_t>(), common.xt.const_data_ptr<scalar_t>(),
        common.output.const_data_ptr<scalar_t>(), in.log_var.const_data_ptr<scalar_t>(),
        common.steps.const_data_ptr<int64_t>(), common.table.const_data_ptr<double>(),
        data_or_null<scalar_t>(grad), mutable_data_or_null<scalar_t>(kl),
        mutable_data_or_null<scalar_t>(grad_mean), mutable_data_or_null<scalar_t>(grad_log_var),
        common.sizes);
  });
}

at::Tensor diffusion_gaussian_kl_cpu(const at::Tensor& x0, const at::Tensor& xt,
                                     const at::Tensor& mean, const at::Tensor& log_var,
                                     const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  at::Tensor kl = at::empty({in.common.sizes.num_slices, in.common.sizes.batch}, mean.options());
  run_gaussian<RowMode::kValue>(in, at::Tensor(), kl, at::Tensor(), at::Tensor());
  return kl;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diffusion_gaussian_kl_and_grad_cpu(
    const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& mean,
    const at::Tensor& log_var, const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  at::Tensor kl = at::empty({in.common.sizes.num_slices, in.common.sizes.batch}, mean.options());
  at::Tensor dmean = at::empty(mean.sizes(), mean.options());
  at::Tensor dlog_var = at::empty(mean.sizes(), mean.options());
  run_gaussian<RowMode::kValueAndGrad>(in, at::Tensor(), kl, dmean, dlog_var);
  return {kl, dmean, dlog_var};
}

std::tuple<at::Tensor, at::Tensor> diffusion_gaussian_kl_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& mean,
    const at::Tensor& log_var, const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  check_diffusion_grad(grad, mean, "mean", in.common.sizes);
  at::Tensor grad_mean = at::empty(mean.sizes(), mean.options());
  at::Tensor grad_log_var = at::empty(mean.sizes(), mean.options());
  run_gaussian<RowMode::kGrad>(in, grad.contiguous(), at::Tensor(), grad_mean, grad_log_var);
  return {grad_mean, grad_log_var};
}

void diffusion_gaussian_kl_and_grad_backward_cpu(const at::Tensor& grad, at::Tensor& dmean,
                                                 at::Tensor& dlog_var) {
  check_diffusion_and_grad_backward_args(grad, dmean, "dmean");
  check_diffusion_and_grad_backward_args(grad, dlog_var, "dlog_var");
  check_shape(dlog_var, "dlog_var", dmean.sizes(), "[T', B, D] (from dmean)");
  scale_buffer_in_place(grad, dmean, "dmean");
  scale_buffer_in_place(grad, dlog_var, "dlog_var");
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("diffusion_gaussian_kl", &diffusion_gaussian_kl_cpu);
  m.impl("diffusion_gaussian_kl_backward", &diffusion_gaussian_kl_backward_cpu);
  m.impl("diffusion_gaussian_kl_and_grad", &diffusion_gaussian_kl_and_grad_cpu);
  m.impl("diffusion_gaussian_kl_and_grad_backward_", &diffusion_gaussian_kl_and_grad_backward_cpu);
}

}  // namespace genvar::cpu
