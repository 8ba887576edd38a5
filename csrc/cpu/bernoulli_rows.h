// Bernoulli log-likelihood rows shared by the CPU kernels of the ops whose
// decoder is a factorised Bernoulli over the data (iwae_log_weights,
// sbn_log_weights): logits [rows, D] against x [B, D], row r using x[r % B].
//
// The row functions are compiled once, with target clones, in
// bernoulli_rows.cpp, so every op gets the same vectorised code and the
// same rounding.
#pragma once

#include <algorithm>
#include <cstdint>

namespace genvar::cpu {

// Rows of at least this many elements each make a parallel task worth it.
constexpr int64_t kGrainElements = 32768;

inline int64_t grain_rows(int64_t row_length) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_length));
}

// sum_d x_d * l_d - softplus(l_d) over one row.
float bernoulli_row(const float* logits, const float* x, int64_t data_dim);
double bernoulli_row(const double* logits, const double* x, int64_t data_dim);

// The same sum, and d/dl_d = x_d - sigmoid(l_d) written to dlogits, sharing
// one exp per element between the two.
float bernoulli_row_and_grad(const float* logits, const float* x, float* dlogits,
                             int64_t data_dim);
double bernoulli_row_and_grad(const double* logits, const double* x, double* dlogits,
                              int64_t data_dim);

// grad_logits[r, d] = grad[r] * (x[r % B, d] - sigmoid(logits[r, d])), OpenMP over rows.
template <typename scalar_t>
void bernoulli_grad_rows(const scalar_t* grad, const scalar_t* logits, const scalar_t* x,
                         scalar_t* grad_logits, int64_t rows, int64_t batch, int64_t data_dim);

// values[r, :] *= grad[r]: turns the dlogits of bernoulli_row_and_grad into the
// logits gradient in place, without a second transcendental pass.
template <typename scalar_t>
void scale_rows(const scalar_t* grad, scalar_t* values, int64_t rows, int64_t row_length);

}  // namespace genvar::cpu
