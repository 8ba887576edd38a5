// The IWAE ops: schemas, the argument checks every backend shares (iwae.h),
// and the CPU kernels, registered here; the CUDA ones are ../cuda/iwae_kernel.cu.
#include "iwae.h"
#include "checks.h"
#include "../cpu/bernoulli_rows.h"
#include "../cpu/fast_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace genvar {

IwaeSizes check_iwae_log_weights_args(const at::Tensor& logits, const at::Tensor& x,
                                      const at::Tensor& z, const at::Tensor& mu,
                                      const at::Tensor& logvar) {
  check_floating(logits, "logits");
  check_rank(logits, "logits", 3, "[k, B, D]");
  check_rank(x, "x", 2, "[B, D]");
  check_rank(z, "z", 3, "[k, B, Z]");
  check_rank(mu, "mu", 2, "[B, Z]");
  check_rank(logvar, "logvar", 2, "[B, Z]");
  const IwaeSizes sizes{logits.size(0), logits.size(1), logits.size(2), z.size(2)};
  TORCH_CHECK(sizes.num_samples > 0, "logits must have k > 0 samples, got shape ",
              logits.sizes());
  check_shape(x, "x", {sizes.batch, sizes.data_dim}, "[B, D] (from logits [k, B, D])");
  check_shape(z, "z", {sizes.num_samples, sizes.batch, sizes.latent_dim},
              "[k, B, Z] (k, B from logits)");
  check_shape(mu, "mu", {sizes.batch, sizes.latent_dim}, "[B, Z] (from z)");
  check_shape(logvar, "logvar", {sizes.batch, sizes.latent_dim}, "[B, Z] (from z)");
  check_same_dtype_and_device(logits, "logits", x, "x");
  check_same_dtype_and_device(logits, "logits", z, "z");
  check_same_dtype_and_device(logits, "logits", mu, "mu");
  check_same_dtype_and_device(logits, "logits", logvar, "logvar");
  return sizes;
}

IwaeSizes check_iwae_log_weights_backward_args(const at::Tensor& grad_log_weights,
                                               const at::Tensor& logits, const at::Tensor& x,
                                               const at::Tensor& z, const at::Tensor& mu,
                                               const at::Tensor& logvar) {
  const IwaeSizes sizes = check_iwae_log_weights_args(logits, x, z, mu, logvar);
  check_shape(grad_log_weights, "grad_log_weights", {sizes.num_samples, sizes.batch}, "[k, B]");
  check_same_dtype_and_device(logits, "logits", grad_log_weights, "grad_log_weights");
  return sizes;
}

IwaeSizes check_iwae_log_weights_and_grad_backward_args(const at::Tensor& grad_log_weights,
                                                        const at::Tensor& dlogits,
                                                        const at::Tensor& z, const at::Tensor& mu,
                                                        const at::Tensor& logvar) {
  check_floating(dlogits, "dlogits");
  check_rank(dlogits, "dlogits", 3, "[k, B, D]");
  check_rank(z, "z", 3, "[k, B, Z]");
  const IwaeSizes sizes{dlogits.size(0), dlogits.size(1), dlogits.size(2), z.size(2)};
  TORCH_CHECK(sizes.num_samples > 0, "dlogits must have k > 0 samples, got shape ",
              dlogits.sizes());
  check_shape(grad_log_weights, "grad_log_weights", {sizes.num_samples, sizes.batch}, "[k, B]");
  check_shape(z, "z", {sizes.num_samples, sizes.batch, sizes.latent_dim}, "[k, B, Z]");
  check_shape(mu, "mu", {sizes.batch, sizes.latent_dim}, "[B, Z] (from z)");
  check_shape(logvar, "logvar", {sizes.batch, sizes.latent_dim}, "[B, Z] (from z)");
  check_same_dtype_and_device(dlogits, "dlogits", grad_log_weights, "grad_log_weights");
  check_same_dtype_and_device(dlogits, "dlogits", z, "z");
  check_same_dtype_and_device(dlogits, "dlogits", mu, "mu");
  check_same_dtype_and_device(dlogits, "dlogits", logvar, "logvar");
  return sizes;
}

void check_iwae_bound_args(const at::Tensor& log_weights) {
  check_floating(log_weights, "log_weights");
  check_rank(log_weights, "log_weights", 2, "[k, B]");
  TORCH_CHECK(log_weights.size(0) > 0, "log_weights must have k > 0 samples, got shape ",
              log_weights.sizes());
}

void check_iwae_bound_backward_args(const at::Tensor& grad_bound, const at::Tensor& grad_weights,
                                    const at::Tensor& weights) {
  check_iwae_bound_args(weights);
  check_shape(grad_bound, "grad_bound", {weights.size(1)}, "[B]");
  check_shape(grad_weights, "grad_weights", weights.sizes(), "[k, B]");
  check_same_dtype_and_device(weights, "weights", grad_bound, "grad_bound");
  check_same_dtype_and_device(weights, "weights", grad_weights, "grad_weights");
}

TORCH_LIBRARY_FRAGMENT(genvar, m) {
  m.def("iwae_log_weights(Tensor logits, Tensor x, Tensor z, Tensor mu, Tensor logvar) -> Tensor");
  m.def(
      "iwae_log_weights_backward(Tensor grad_log_weights, Tensor logits, Tensor x, Tensor z, "
      "Tensor mu, Tensor logvar) -> (Tensor, Tensor, Tensor, Tensor)");
  // Training path on CPU: log_w and d log_w[k, b] / d logits[k, b, :] in one pass.
  m.def(
      "iwae_log_weights_and_grad(Tensor logits, Tensor x, Tensor z, Tensor mu, Tensor logvar) "
      "-> (Tensor, Tensor)");
  // Its backward: scales dlogits in place into the logits gradient (no second
  // [k, B, D] tensor) and returns the gradients of z, mu and logvar.
  m.def(
      "iwae_log_weights_and_grad_backward_(Tensor grad_log_weights, Tensor(a!) dlogits, "
      "Tensor z, Tensor mu, Tensor logvar) -> (Tensor, Tensor, Tensor)");
  m.def("iwae_bound(Tensor log_weights) -> (Tensor, Tensor)");
  m.def(
      "iwae_bound_backward(Tensor grad_bound, Tensor grad_weights, Tensor weights) -> Tensor");
}

}  // namespace genvar

// ---------------------------------------------------------------------------
// CPU kernels of iwae_log_weights: OpenMP over rows, SIMD inside a row.

namespace genvar::cpu {
namespace {

// log N(z; 0, 1) - log N(z; mu, exp(logvar)) summed over the latent row;
// inv_var = exp(-logvar) is computed once per example, not once per sample.
template <typename scalar_t>
inline scalar_t gaussian_ratio_row(const scalar_t* z, const scalar_t* mu, const scalar_t* logvar,
                                   const scalar_t* inv_var, int64_t latent_dim) {
  scalar_t total = 0;
  for (int64_t j = 0; j < latent_dim; ++j) {
    const scalar_t diff = z[j] - mu[j];
    total += scalar_t(0.5) * (diff * diff * inv_var[j] + logvar[j] - z[j] * z[j]);
  }
  return total;
}

// dlogits == nullptr: forward only; otherwise also the gradient of each
// log_w[k, b] with respect to its own row of logits.
template <typename scalar_t>
void log_weights_impl(const scalar_t* logits, const scalar_t* x, const scalar_t* z,
                      const scalar_t* mu, const scalar_t* logvar, const scalar_t* inv_var,
                      scalar_t* out,
                      scalar_t* dlogits, const IwaeSizes& sizes) {
  const int64_t rows = sizes.num_samples * sizes.batch;
  const int64_t data_dim = sizes.data_dim;
  at::parallel_for(0, rows, grain_rows(data_dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row % sizes.batch;
      const scalar_t* logits_row = logits + row * data_dim;
      const scalar_t* x_row = x + b * data_dim;
      const scalar_t bernoulli =
          dlogits == nullptr
              ? bernoulli_row(logits_row, x_row, data_dim)
              : bernoulli_row_and_grad(logits_row, x_row, dlogits + row * data_dim, data_dim);
      out[row] = bernoulli +
                 gaussian_ratio_row(z + row * sizes.latent_dim, mu + b * sizes.latent_dim,
                                    logvar + b * sizes.latent_dim, inv_var + b * sizes.latent_dim,
                                    sizes.latent_dim);
    }
  });
}

// Runs the forward; fills `dlogits` too when it is defined.
at::Tensor log_weights_cpu(const at::Tensor& logits, const at::Tensor& x, const at::Tensor& z,
                           const at::Tensor& mu, const at::Tensor& logvar, at::Tensor dlogits) {
  const IwaeSizes sizes = check_iwae_log_weights_args(logits, x, z, mu, logvar);
  const auto logits_c = logits.contiguous(), x_c = x.contiguous(), z_c = z.contiguous();
  const auto mu_c = mu.contiguous(), logvar_c = logvar.contiguous();
  const at::Tensor inv_var = at::exp(-logvar_c);
  at::Tensor out = at::empty({sizes.num_samples, sizes.batch}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "iwae_log_weights_cpu", [&] {
    log_weights_impl<scalar_t>(
        logits_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
        z_c.const_data_ptr<scalar_t>(), mu_c.const_data_ptr<scalar_t>(),
        logvar_c.const_data_ptr<scalar_t>(), inv_var.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(),
        dlogits.defined() ? dlogits.mutable_data_ptr<scalar_t>() : nullptr, sizes);
  });
  return out;
}

at::Tensor iwae_log_weights_cpu(const at::Tensor& logits, const at::Tensor& x,
                                const at::Tensor& z, const at::Tensor& mu,
                                const at::Tensor& logvar) {
  return log_weights_cpu(logits, x, z, mu, logvar, at::Tensor());
}

std::tuple<at::Tensor, at::Tensor> iwae_log_weights_and_grad_cpu(
    const at::Tensor& logits, const at::Tensor& x, const at::Tensor& z, const at::Tensor& mu,
    const at::Tensor& logvar) {
  at::Tensor dlogits = at::empty(logits.sizes(), logits.options());
  at::Tensor log_weights = log_weights_cpu(logits, x, z, mu, logvar, dlogits);
  return {log_weights, dlogits};
}

// Gradients of the Gaussian terms: grad_z per (k, b, j); grad_mu and
// grad_logvar summed over k, so each b owns its output row (no atomics).
template <typename scalar_t>
void gaussian_grad_impl(const scalar_t* grad, const scalar_t* z, const scalar_t* mu,
                        const scalar_t* inv_var, scalar_t* grad_z, scalar_t* grad_mu,
                        scalar_t* grad_logvar, const IwaeSizes& sizes) {
  const int64_t latent_dim = sizes.latent_dim;
  at::parallel_for(0, sizes.batch, grain_rows(sizes.num_samples * latent_dim),
                   [&](int64_t begin, int64_t end) {
    // Sums over k accumulate in double: k reaches thousands.
    std::vector<double> sum_mu(latent_dim), sum_logvar(latent_dim);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* mu_row = mu + b * latent_dim;
      const scalar_t* inv_var_row = inv_var + b * latent_dim;
      std::fill(sum_mu.begin(), sum_mu.end(), 0.0);
      std::fill(sum_logvar.begin(), sum_logvar.end(), 0.0);
      for (int64_t k = 0; k < sizes.num_samples; ++k) {
        const int64_t row = k * sizes.batch + b;
        const scalar_t g = grad[row];
        for (int64_t j = 0; j < latent_dim; ++j) {
          const scalar_t zj = z[row * latent_dim + j];
          const scalar_t scaled = (zj - mu_row[j]) * inv_var_row[j];
          grad_z[row * latent_dim + j] = g * (scaled - zj);
          sum_mu[j] -= g * scaled;
          sum_logvar[j] += g * scalar_t(0.5) * (scalar_t(1) - scaled * (zj - mu_row[j]));
        }
      }
      for (int64_t j = 0; j < latent_dim; ++j) {
        grad_mu[b * latent_dim + j] = static_cast<scalar_t>(sum_mu[j]);
        grad_logvar[b * latent_dim + j] = static_cast<scalar_t>(sum_logvar[j]);
      }
    }
  });
}

using GradTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Fills grad_z, grad_mu and grad_logvar of a result whose grad_logits the caller fills.
GradTuple gaussian_grads(const at::Tensor& grad, const at::Tensor& grad_logits,
                         const at::Tensor& z, const at::Tensor& mu, const at::Tensor& logvar,
                         const IwaeSizes& sizes) {
  const auto z_c = z.contiguous(), mu_c = mu.contiguous();
  const at::Tensor inv_var = at::exp(-logvar.contiguous());
  at::Tensor grad_z = at::empty(z.sizes(), z.options());
  at::Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  at::Tensor grad_logvar = at::empty(logvar.sizes(), logvar.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "iwae_gaussian_grads_cpu", [&] {
    gaussian_grad_impl<scalar_t>(grad.const_data_ptr<scalar_t>(), z_c.const_data_ptr<scalar_t>(),
                                 mu_c.const_data_ptr<scalar_t>(),
                                 inv_var.const_data_ptr<scalar_t>(),
                                 grad_z.mutable_data_ptr<scalar_t>(),
                                 grad_mu.mutable_data_ptr<scalar_t>(),
                                 grad_logvar.mutable_data_ptr<scalar_t>(), sizes);
  });
  return {grad_logits, grad_z, grad_mu, grad_logvar};
}

GradTuple iwae_log_weights_backward_cpu(const at::Tensor& grad_log_weights,
                                        const at::Tensor& logits, const at::Tensor& x,
                                        const at::Tensor& z, const at::Tensor& mu,
                                        const at::Tensor& logvar) {
  const IwaeSizes sizes =
      check_iwae_log_weights_backward_args(grad_log_weights, logits, x, z, mu, logvar);
  const auto grad_c = grad_log_weights.contiguous(), logits_c = logits.contiguous();
  const auto x_c = x.contiguous();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "iwae_log_weights_backward_cpu", [&] {
    bernoulli_grad_rows<scalar_t>(grad_c.const_data_ptr<scalar_t>(),
                                  logits_c.const_data_ptr<scalar_t>(),
                                  x_c.const_data_ptr<scalar_t>(),
                                  grad_logits.mutable_data_ptr<scalar_t>(),
                                  sizes.num_samples * sizes.batch, sizes.batch, sizes.data_dim);
  });
  return gaussian_grads(grad_c, grad_logits, z, mu, logvar, sizes);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> iwae_log_weights_and_grad_backward_cpu(
    const at::Tensor& grad_log_weights, at::Tensor& dlogits, const at::Tensor& z,
    const at::Tensor& mu, const at::Tensor& logvar) {
  const IwaeSizes sizes =
      check_iwae_log_weights_and_grad_backward_args(grad_log_weights, dlogits, z, mu, logvar);
  TORCH_CHECK(dlogits.is_contiguous(), "dlogits must be contiguous (it is scaled in place)");
  const auto grad_c = grad_log_weights.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dlogits.scalar_type(), "iwae_log_weights_and_grad_backward_cpu", [&] {
    scale_rows<scalar_t>(grad_c.const_data_ptr<scalar_t>(), dlogits.mutable_data_ptr<scalar_t>(),
                         sizes.num_samples * sizes.batch, sizes.data_dim);
  });
  auto [unused, grad_z, grad_mu, grad_logvar] =
      gaussian_grads(grad_c, dlogits, z, mu, logvar, sizes);
  return {grad_z, grad_mu, grad_logvar};
}

// ---------------------------------------------------------------------------
// CPU kernels of iwae_bound: a stable logsumexp over k and the softmax
// weights, column-blocked so each pass walks contiguous memory.

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
  m.impl("iwae_log_weights", &iwae_log_weights_cpu);
  m.impl("iwae_log_weights_backward", &iwae_log_weights_backward_cpu);
  m.impl("iwae_log_weights_and_grad", &iwae_log_weights_and_grad_cpu);
  m.impl("iwae_log_weights_and_grad_backward_", &iwae_log_weights_and_grad_backward_cpu);
  m.impl("iwae_bound", &iwae_bound_cpu);
  m.impl("iwae_bound_backward", &iwae_bound_backward_cpu);
}

}  // namespace genvar::cpu
