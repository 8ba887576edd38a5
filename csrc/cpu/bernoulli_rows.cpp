// Bernoulli log-likelihood rows: SIMD inside a row, OpenMP over rows.
#include "bernoulli_rows.h"
#include "fast_math.h"

#include <ATen/Parallel.h>

namespace genvar::cpu {
namespace {

template <typename scalar_t>
GENVAR_INLINE scalar_t bernoulli_row_impl(const scalar_t* logits, const scalar_t* x,
                                          int64_t data_dim) {
  scalar_t total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t d = 0; d < data_dim; ++d) {
    total += x[d] * logits[d] - Math<scalar_t>::softplus(logits[d]);
  }
  return total;
}

template <typename scalar_t>
GENVAR_INLINE scalar_t bernoulli_row_and_grad_impl(const scalar_t* logits, const scalar_t* x,
                                                   scalar_t* dlogits, int64_t data_dim) {
  scalar_t total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t d = 0; d < data_dim; ++d) {
    scalar_t softplus, sigmoid;
    Math<scalar_t>::softplus_sigmoid(logits[d], softplus, sigmoid);
    total += x[d] * logits[d] - softplus;
    dlogits[d] = x[d] - sigmoid;
  }
  return total;
}

template <typename scalar_t>
GENVAR_INLINE void bernoulli_row_grad_impl(const scalar_t* logits, const scalar_t* x,
                                           scalar_t grad, scalar_t* grad_logits,
                                           int64_t data_dim) {
#pragma omp simd
  for (int64_t d = 0; d < data_dim; ++d) {
    grad_logits[d] = grad * (x[d] - Math<scalar_t>::sigmoid(logits[d]));
  }
}

GENVAR_TARGET_CLONES void bernoulli_row_grad(const float* logits, const float* x, float grad,
                                             float* grad_logits, int64_t data_dim) {
  bernoulli_row_grad_impl(logits, x, grad, grad_logits, data_dim);
}
// double keeps libm (see fast_math.h): nothing to vectorise, so no clones.
void bernoulli_row_grad(const double* logits, const double* x, double grad,
                        double* grad_logits, int64_t data_dim) {
  bernoulli_row_grad_impl(logits, x, grad, grad_logits, data_dim);
}

}  // namespace

GENVAR_TARGET_CLONES float bernoulli_row(const float* logits, const float* x, int64_t data_dim) {
  return bernoulli_row_impl(logits, x, data_dim);
}
double bernoulli_row(const double* logits, const double* x, int64_t data_dim) {
  return bernoulli_row_impl(logits, x, data_dim);
}

GENVAR_TARGET_CLONES float bernoulli_row_and_grad(const float* logits, const float* x,
                                                  float* dlogits, int64_t data_dim) {
  return bernoulli_row_and_grad_impl(logits, x, dlogits, data_dim);
}
double bernoulli_row_and_grad(const double* logits, const double* x, double* dlogits,
                              int64_t data_dim) {
  return bernoulli_row_and_grad_impl(logits, x, dlogits, data_dim);
}

template <typename scalar_t>
void bernoulli_grad_rows(const scalar_t* grad, const scalar_t* logits, const scalar_t* x,
                         scalar_t* grad_logits, int64_t rows, int64_t batch, int64_t data_dim) {
  at::parallel_for(0, rows, grain_rows(data_dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      bernoulli_row_grad(logits + row * data_dim, x + (row % batch) * data_dim, grad[row],
                         grad_logits + row * data_dim, data_dim);
    }
  });
}

template <typename scalar_t>
void scale_rows(const scalar_t* grad, scalar_t* values, int64_t rows, int64_t row_length) {
  at::parallel_for(0, rows, grain_rows(row_length), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t g = grad[row];
      scalar_t* row_values = values + row * row_length;
#pragma omp simd
      for (int64_t d = 0; d < row_length; ++d) row_values[d] *= g;
    }
  });
}

template void bernoulli_grad_rows<float>(const float*, const float*, const float*, float*,
                                         int64_t, int64_t, int64_t);
template void bernoulli_grad_rows<double>(const double*, const double*, const double*, double*,
                                          int64_t, int64_t, int64_t);
template void scale_rows<float>(const float*, float*, int64_t, int64_t);
template void scale_rows<double>(const double*, double*, int64_t, int64_t);

}  // namespace genvar::cpu
