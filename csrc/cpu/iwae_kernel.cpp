// CPU kernels of the IWAE ops: OpenMP over rows, SIMD inside a row.
#include "../ops/iwae.h"
#include "bernoulli_rows.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("iwae_log_weights", &iwae_log_weights_cpu);
  m.impl("iwae_log_weights_backward", &iwae_log_weights_backward_cpu);
  m.impl("iwae_log_weights_and_grad", &iwae_log_weights_and_grad_cpu);
  m.impl("iwae_log_weights_and_grad_backward_", &iwae_log_weights_and_grad_backward_cpu);
}

}  // namespace genvar::cpu
