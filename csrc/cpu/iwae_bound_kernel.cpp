// CPU kernels of iwae_bound: a stable logsumexp over k and the softmax
// weights, column-blocked so each pass walks contiguous memory.
#include "../ops/iwae.h"
#include "fast_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

namespace genvar::cpu {
namespace {

constexpr int64_t kGrainColumns = 16;

// Sums over k (up to thousands of terms) accumulate in double, so float32
// results keep float32 accuracy whatever k is.
using accumulate_t = double;

// One row of k: total[i] += exp(row[i] - shift[i]), terms in the input type,
// sums in double. The float version vectorises; it needs row - shift <= 0,
// which holds unless a column's max is +inf (see bound_impl).
GENVAR_TARGET_CLONES void add_exp_row(const float* row, const float* shift, double* total,
                                      int64_t width) {
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) total[i] += exp_nonpositive(row[i] - shift[i]);
}
void add_exp_row(const double* row, const double* shift, double* total, int64_t width) {
  for (int64_t i = 0; i < width; ++i) total[i] += std::exp(row[i] - shift[i]);
}

// out[i] = exp(row[i] - shift[i]) * inverse_total[i].
GENVAR_TARGET_CLONES void weights_row(const float* row, const float* shift,
                                      const double* inverse_total, float* out, int64_t width) {
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) {
    out[i] = static_cast<float>(exp_nonpositive(row[i] - shift[i]) * inverse_total[i]);
  }
}
void weights_row(const double* row, const double* shift, const double* inverse_total,
                 double* out, int64_t width) {
  for (int64_t i = 0; i < width; ++i) out[i] = std::exp(row[i] - shift[i]) * inverse_total[i];
}

// The exact (libm) forms, for blocks holding a column whose max is +inf.
template <typename scalar_t>
void add_exp_row_libm(const scalar_t* row, const scalar_t* shift, double* total, int64_t width) {
  for (int64_t i = 0; i < width; ++i) total[i] += std::exp(row[i] - shift[i]);
}
template <typename scalar_t>
void weights_row_libm(const scalar_t* row, const scalar_t* shift, const double* inverse_total,
                      scalar_t* out, int64_t width) {
  for (int64_t i = 0; i < width; ++i) {
    out[i] = static_cast<scalar_t>(std::exp(row[i] - shift[i]) * inverse_total[i]);
  }
}

// shift[i] = max(shift[i], row[i]); a NaN entry is not taken.
GENVAR_TARGET_CLONES void max_row(const float* row, float* shift, int64_t width) {
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) shift[i] = row[i] > shift[i] ? row[i] : shift[i];
}
void max_row(const double* row, double* shift, int64_t width) {
  for (int64_t i = 0; i < width; ++i) shift[i] = row[i] > shift[i] ? row[i] : shift[i];
}

// The backward's two passes over a row of k: centre[i] += w[i] g[i] (in double), then
// out[i] = w[i] (grad_bound[i] + g[i] - centre[i]). Columns are independent, so the SIMD
// forms add in the same order as the scalar ones.
GENVAR_TARGET_CLONES void centre_row(const float* weights, const float* grad_weights,
                                     double* centre, int64_t width) {
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) {
    centre[i] += static_cast<double>(weights[i]) * grad_weights[i];
  }
}
void centre_row(const double* weights, const double* grad_weights, double* centre,
                int64_t width) {
  for (int64_t i = 0; i < width; ++i) centre[i] += weights[i] * grad_weights[i];
}
GENVAR_TARGET_CLONES void grad_row(const float* weights, const float* grad_weights,
                                   const float* grad_bound, const double* centre, float* out,
                                   int64_t width) {
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) {
    out[i] = weights[i] * static_cast<float>(grad_bound[i] + grad_weights[i] - centre[i]);
  }
}
void grad_row(const double* weights, const double* grad_weights, const double* grad_bound,
              const double* centre, double* out, int64_t width) {
  for (int64_t i = 0; i < width; ++i) {
    out[i] = weights[i] * (grad_bound[i] + grad_weights[i] - centre[i]);
  }
}

// shift[i]: the column max where finite, else 0. Returns whether every max is
// below +inf, so that every row - shift <= 0 (NaN entries do not count as max).
template <typename scalar_t>
bool column_shifts(const scalar_t* log_weights, int64_t num_samples, int64_t batch,
                   int64_t begin, int64_t width, std::vector<scalar_t>& shift) {
  shift.assign(width, -std::numeric_limits<scalar_t>::infinity());
  for (int64_t k = 0; k < num_samples; ++k) {
    max_row(log_weights + k * batch + begin, shift.data(), width);
  }
  bool bounded = true;
  for (int64_t i = 0; i < width; ++i) {
    bounded = bounded && shift[i] != std::numeric_limits<scalar_t>::infinity();
    shift[i] = std::isfinite(shift[i]) ? shift[i] : scalar_t(0);
  }
  return bounded;
}

template <typename scalar_t>
void bound_impl(const scalar_t* log_weights, scalar_t* bound, scalar_t* weights,
                int64_t num_samples, int64_t batch) {
  const scalar_t log_k = std::log(static_cast<scalar_t>(num_samples));
  at::parallel_for(0, batch, kGrainColumns, [&](int64_t begin, int64_t end) {
    const int64_t width = end - begin;
    std::vector<scalar_t> shift;
    const bool bounded = column_shifts(log_weights, num_samples, batch, begin, width, shift);
    std::vector<accumulate_t> total(width, 0.0), inverse_total(width);
    for (int64_t k = 0; k < num_samples; ++k) {
      const scalar_t* row = log_weights + k * batch + begin;
      bounded ? add_exp_row(row, shift.data(), total.data(), width)
              : add_exp_row_libm(row, shift.data(), total.data(), width);
    }
    for (int64_t i = 0; i < width; ++i) {
      bound[begin + i] = static_cast<scalar_t>(std::log(total[i])) + shift[i] - log_k;
      // A column of -inf has total 0: no sample is possible, weights stay 0.
      // (A NaN column has total NaN and keeps NaN weights.)
      inverse_total[i] = total[i] == 0 ? 0.0 : 1.0 / total[i];
    }
    for (int64_t k = 0; k < num_samples; ++k) {
      const scalar_t* row = log_weights + k * batch + begin;
      scalar_t* out_row = weights + k * batch + begin;
      bounded ? weights_row(row, shift.data(), inverse_total.data(), out_row, width)
              : weights_row_libm(row, shift.data(), inverse_total.data(), out_row, width);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> iwae_bound_cpu(const at::Tensor& log_weights) {
  check_iwae_bound_args(log_weights);
  const auto log_weights_c = log_weights.contiguous();
  const int64_t num_samples = log_weights.size(0), batch = log_weights.size(1);
  at::Tensor bound = at::empty({batch}, log_weights.options());
  at::Tensor weights = at::empty({num_samples, batch}, log_weights.options());
  AT_DISPATCH_FLOATING_TYPES(log_weights.scalar_type(), "iwae_bound_cpu", [&] {
    bound_impl<scalar_t>(log_weights_c.const_data_ptr<scalar_t>(), bound.mutable_data_ptr<scalar_t>(),
                         weights.mutable_data_ptr<scalar_t>(), num_samples, batch);
  });
  return {bound, weights};
}

// grad_log_w = w * (grad_bound + grad_w - sum_k w * grad_w), per column.
template <typename scalar_t>
void bound_backward_impl(const scalar_t* grad_bound, const scalar_t* grad_weights,
                         const scalar_t* weights, scalar_t* grad_log_weights,
                         int64_t num_samples, int64_t batch) {
  at::parallel_for(0, batch, kGrainColumns, [&](int64_t begin, int64_t end) {
    const int64_t width = end - begin;
    std::vector<accumulate_t> centre(width, accumulate_t(0));
    for (int64_t k = 0; k < num_samples; ++k) {
      const int64_t row = k * batch + begin;
      centre_row(weights + row, grad_weights + row, centre.data(), width);
    }
    for (int64_t k = 0; k < num_samples; ++k) {
      const int64_t row = k * batch + begin;
      grad_row(weights + row, grad_weights + row, grad_bound + begin, centre.data(),
               grad_log_weights + row, width);
    }
  });
}

at::Tensor iwae_bound_backward_cpu(const at::Tensor& grad_bound, const at::Tensor& grad_weights,
                                   const at::Tensor& weights) {
  check_iwae_bound_backward_args(grad_bound, grad_weights, weights);
  const auto grad_bound_c = grad_bound.contiguous(), grad_weights_c = grad_weights.contiguous();
  const auto weights_c = weights.contiguous();
  at::Tensor grad_log_weights = at::empty(weights.sizes(), weights.options());
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "iwae_bound_backward_cpu", [&] {
    bound_backward_impl<scalar_t>(grad_bound_c.const_data_ptr<scalar_t>(),
                                  grad_weights_c.const_data_ptr<scalar_t>(),
                                  weights_c.const_data_ptr<scalar_t>(),
                                  grad_log_weights.mutable_data_ptr<scalar_t>(),
                                  weights.size(0), weights.size(1));
  });
  return grad_log_weights;
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("iwae_bound", &iwae_bound_cpu);
  m.impl("iwae_bound_backward", &iwae_bound_backward_cpu);
}

}  // namespace genvar::cpu
