// The sigmoid-belief-network ops: schemas, the argument checks every backend
// shares (sbn.h), and the CPU kernels, registered here; the CUDA ones are
// ../cuda/sbn_kernel.cu.
#include "sbn.h"
#include "checks.h"
#include "../cpu/bernoulli_rows.h"
#include "../cpu/fast_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

namespace genvar {
namespace {

// h [k, B, H], prior_logits [H] and q_logits [B, H] against k and B, which the
// caller took from logits (or dlogits), named `source`.
int64_t check_latent_args(const at::Tensor& source, const char* source_name,
                          int64_t num_samples, int64_t batch, const at::Tensor& h,
                          const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  check_rank(h, "h", 3, "[k, B, H]");
  check_rank(prior_logits, "prior_logits", 1, "[H]");
  check_rank(q_logits, "q_logits", 2, "[B, H]");
  const int64_t latent_dim = h.size(2);
  check_shape(h, "h", {num_samples, batch, latent_dim}, "[k, B, H] (k, B from logits)");
  check_shape(prior_logits, "prior_logits", {latent_dim}, "[H] (from h)");
  check_shape(q_logits, "q_logits", {batch, latent_dim}, "[B, H] (from h)");
  check_same_dtype_and_device(source, source_name, h, "h");
  check_same_dtype_and_device(source, source_name, prior_logits, "prior_logits");
  check_same_dtype_and_device(source, source_name, q_logits, "q_logits");
  return latent_dim;
}

}  // namespace

SbnSizes check_sbn_log_weights_args(const at::Tensor& logits, const at::Tensor& x,
                                    const at::Tensor& h, const at::Tensor& prior_logits,
                                    const at::Tensor& q_logits) {
  check_floating(logits, "logits");
  check_rank(logits, "logits", 3, "[k, B, D]");
  check_rank(x, "x", 2, "[B, D]");
  SbnSizes sizes{logits.size(0), logits.size(1), logits.size(2), 0};
  TORCH_CHECK(sizes.num_samples > 0, "logits must have k > 0 samples, got shape ",
              logits.sizes());
  check_shape(x, "x", {sizes.batch, sizes.data_dim}, "[B, D] (from logits [k, B, D])");
  check_same_dtype_and_device(logits, "logits", x, "x");
  sizes.latent_dim = check_latent_args(logits, "logits", sizes.num_samples, sizes.batch, h,
                                       prior_logits, q_logits);
  return sizes;
}

SbnSizes check_sbn_log_weights_backward_args(const at::Tensor& grad_log_weights,
                                             const at::Tensor& logits, const at::Tensor& x,
                                             const at::Tensor& h,
                                             const at::Tensor& prior_logits,
                                             const at::Tensor& q_logits) {
  const SbnSizes sizes = check_sbn_log_weights_args(logits, x, h, prior_logits, q_logits);
  check_shape(grad_log_weights, "grad_log_weights", {sizes.num_samples, sizes.batch}, "[k, B]");
  check_same_dtype_and_device(logits, "logits", grad_log_weights, "grad_log_weights");
  return sizes;
}

SbnSizes check_sbn_log_weights_and_grad_backward_args(const at::Tensor& grad_log_weights,
                                                      const at::Tensor& dlogits,
                                                      const at::Tensor& h,
                                                      const at::Tensor& prior_logits,
                                                      const at::Tensor& q_logits) {
  check_floating(dlogits, "dlogits");
  check_rank(dlogits, "dlogits", 3, "[k, B, D]");
  SbnSizes sizes{dlogits.size(0), dlogits.size(1), dlogits.size(2), 0};
  TORCH_CHECK(sizes.num_samples > 0, "dlogits must have k > 0 samples, got shape ",
              dlogits.sizes());
  check_shape(grad_log_weights, "grad_log_weights", {sizes.num_samples, sizes.batch}, "[k, B]");
  check_same_dtype_and_device(dlogits, "dlogits", grad_log_weights, "grad_log_weights");
  sizes.latent_dim = check_latent_args(dlogits, "dlogits", sizes.num_samples, sizes.batch, h,
                                       prior_logits, q_logits);
  return sizes;
}

TORCH_LIBRARY_FRAGMENT(genvar, m) {
  m.def(
      "sbn_log_weights(Tensor logits, Tensor x, Tensor h, Tensor prior_logits, "
      "Tensor q_logits) -> Tensor");
  // Gradients of logits, h, prior_logits and q_logits; x is data and gets none.
  m.def(
      "sbn_log_weights_backward(Tensor grad_log_weights, Tensor logits, Tensor x, Tensor h, "
      "Tensor prior_logits, Tensor q_logits) -> (Tensor, Tensor, Tensor, Tensor)");
  // Training path on CPU: log_w and d log_w[k, b] / d logits[k, b, :] in one pass.
  m.def(
      "sbn_log_weights_and_grad(Tensor logits, Tensor x, Tensor h, Tensor prior_logits, "
      "Tensor q_logits) -> (Tensor, Tensor)");
  // Its backward: scales dlogits in place into the logits gradient (no second
  // [k, B, D] tensor) and returns the gradients of h, prior_logits and q_logits.
  m.def(
      "sbn_log_weights_and_grad_backward_(Tensor grad_log_weights, Tensor(a!) dlogits, "
      "Tensor h, Tensor prior_logits, Tensor q_logits) -> (Tensor, Tensor, Tensor)");
}

}  // namespace genvar

// ---------------------------------------------------------------------------
// CPU kernels of the sigmoid-belief-network ops: OpenMP over rows, SIMD inside a row.
//
// The latent terms are regrouped per example,
//   sum_j h_j a_j - softplus(a_j) - h_j m_bj + softplus(m_bj)
//     = sum_j h_j (a_j - m_bj) + sum_j (softplus(m_bj) - softplus(a_j)),
// so the transcendentals run B x H times rather than k x B x H, and each
// sample's row costs a dot product. Sums over samples (k reaches thousands)
// accumulate in double, also for float32.

namespace genvar::cpu {
namespace {

// Row helpers: SIMD inside a row. float gets target clones; double keeps libm
// (see fast_math.h), so it has nothing to vectorise and no clones.

template <typename scalar_t>
GENVAR_INLINE scalar_t dot_row_impl(const scalar_t* a, const scalar_t* b, int64_t length) {
  scalar_t total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < length; ++j) total += a[j] * b[j];
  return total;
}

GENVAR_TARGET_CLONES float dot_row(const float* a, const float* b, int64_t length) {
  return dot_row_impl(a, b, length);
}
double dot_row(const double* a, const double* b, int64_t length) {
  return dot_row_impl(a, b, length);
}

template <typename scalar_t>
GENVAR_INLINE scalar_t softplus_sum_impl(const scalar_t* logits, int64_t length) {
  scalar_t total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < length; ++j) total += Math<scalar_t>::softplus(logits[j]);
  return total;
}

GENVAR_TARGET_CLONES float softplus_sum(const float* logits, int64_t length) {
  return softplus_sum_impl(logits, length);
}
double softplus_sum(const double* logits, int64_t length) {
  return softplus_sum_impl(logits, length);
}

// One sample of an example: grad_h_j = g (a_j - m_j), and gh_sum_j += g h_j.
template <typename scalar_t>
GENVAR_INLINE void latent_grad_row_impl(scalar_t grad, const scalar_t* h,
                                        const scalar_t* prior_minus_q, scalar_t* grad_h,
                                        double* gh_sum, int64_t length) {
#pragma omp simd
  for (int64_t j = 0; j < length; ++j) {
    grad_h[j] = grad * prior_minus_q[j];
    gh_sum[j] += static_cast<double>(grad) * h[j];
  }
}

GENVAR_TARGET_CLONES void latent_grad_row(float grad, const float* h, const float* prior_minus_q,
                                          float* grad_h, double* gh_sum, int64_t length) {
  latent_grad_row_impl(grad, h, prior_minus_q, grad_h, gh_sum, length);
}
void latent_grad_row(double grad, const double* h, const double* prior_minus_q, double* grad_h,
                     double* gh_sum, int64_t length) {
  latent_grad_row_impl(grad, h, prior_minus_q, grad_h, gh_sum, length);
}

// grad_q_j = -sum_k g (h_kj - sigmoid(m_j)) = sigmoid(m_j) g_sum - gh_sum_j.
template <typename scalar_t>
GENVAR_INLINE void q_grad_row_impl(const scalar_t* q_logits, double g_sum, const double* gh_sum,
                                   scalar_t* grad_q, int64_t length) {
#pragma omp simd
  for (int64_t j = 0; j < length; ++j) {
    const double sigmoid = Math<scalar_t>::sigmoid(q_logits[j]);
    grad_q[j] = static_cast<scalar_t>(sigmoid * g_sum - gh_sum[j]);
  }
}

GENVAR_TARGET_CLONES void q_grad_row(const float* q_logits, double g_sum, const double* gh_sum,
                                     float* grad_q, int64_t length) {
  q_grad_row_impl(q_logits, g_sum, gh_sum, grad_q, length);
}
void q_grad_row(const double* q_logits, double g_sum, const double* gh_sum, double* grad_q,
                int64_t length) {
  q_grad_row_impl(q_logits, g_sum, gh_sum, grad_q, length);
}

// What every sample of example b shares: prior_minus_q[b, j] = a_j - m_bj and
// constant[b] = sum_j softplus(m_bj) - softplus(a_j).
template <typename scalar_t>
void latent_terms_impl(const scalar_t* prior_logits, const scalar_t* q_logits,
                       scalar_t* prior_minus_q, double* constant, const SbnSizes& sizes) {
  const int64_t latent_dim = sizes.latent_dim;
  const double prior_softplus = softplus_sum(prior_logits, latent_dim);
  at::parallel_for(0, sizes.batch, grain_rows(latent_dim), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* q_row = q_logits + b * latent_dim;
      scalar_t* difference_row = prior_minus_q + b * latent_dim;
      for (int64_t j = 0; j < latent_dim; ++j) difference_row[j] = prior_logits[j] - q_row[j];
      constant[b] = softplus_sum(q_row, latent_dim) - prior_softplus;
    }
  });
}

// dlogits == nullptr: forward only; otherwise also the gradient of each
// log_w[k, b] with respect to its own row of logits.
template <typename scalar_t>
void log_weights_impl(const scalar_t* logits, const scalar_t* x, const scalar_t* h,
                      const scalar_t* prior_minus_q, const double* constant, scalar_t* out,
                      scalar_t* dlogits, const SbnSizes& sizes) {
  const int64_t data_dim = sizes.data_dim, latent_dim = sizes.latent_dim;
  at::parallel_for(0, sizes.num_samples * sizes.batch, grain_rows(data_dim + latent_dim),
                   [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row % sizes.batch;
      const scalar_t* logits_row = logits + row * data_dim;
      const scalar_t* x_row = x + b * data_dim;
      const scalar_t bernoulli =
          dlogits == nullptr
              ? bernoulli_row(logits_row, x_row, data_dim)
              : bernoulli_row_and_grad(logits_row, x_row, dlogits + row * data_dim, data_dim);
      const scalar_t latent =
          dot_row(h + row * latent_dim, prior_minus_q + b * latent_dim, latent_dim);
      out[row] = static_cast<scalar_t>(static_cast<double>(bernoulli) + latent + constant[b]);
    }
  });
}

// Runs the forward; fills `dlogits` too when it is defined.
at::Tensor log_weights_cpu(const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
                           const at::Tensor& prior_logits, const at::Tensor& q_logits,
                           const at::Tensor& dlogits) {
  const SbnSizes sizes = check_sbn_log_weights_args(logits, x, h, prior_logits, q_logits);
  const auto logits_c = logits.contiguous(), x_c = x.contiguous(), h_c = h.contiguous();
  const auto prior_c = prior_logits.contiguous(), q_c = q_logits.contiguous();
  at::Tensor prior_minus_q = at::empty(q_logits.sizes(), q_logits.options());
  std::vector<double> constant(sizes.batch);
  at::Tensor out = at::empty({sizes.num_samples, sizes.batch}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "sbn_log_weights_cpu", [&] {
    latent_terms_impl<scalar_t>(prior_c.const_data_ptr<scalar_t>(), q_c.const_data_ptr<scalar_t>(),
                                prior_minus_q.mutable_data_ptr<scalar_t>(), constant.data(),
                                sizes);
    log_weights_impl<scalar_t>(
        logits_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
        h_c.const_data_ptr<scalar_t>(), prior_minus_q.const_data_ptr<scalar_t>(),
        constant.data(), out.mutable_data_ptr<scalar_t>(),
        dlogits.defined() ? dlogits.mutable_data_ptr<scalar_t>() : nullptr, sizes);
  });
  return out;
}

at::Tensor sbn_log_weights_cpu(const at::Tensor& logits, const at::Tensor& x,
                               const at::Tensor& h, const at::Tensor& prior_logits,
                               const at::Tensor& q_logits) {
  return log_weights_cpu(logits, x, h, prior_logits, q_logits, at::Tensor());
}

std::tuple<at::Tensor, at::Tensor> sbn_log_weights_and_grad_cpu(
    const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
    const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  at::Tensor dlogits = at::empty(logits.sizes(), logits.options());
  at::Tensor log_weights = log_weights_cpu(logits, x, h, prior_logits, q_logits, dlogits);
  return {log_weights, dlogits};
}

// Per example b: grad_h[k, b, j] = g (a_j - m_bj) and grad_q[b, :], from the
// sums over k gh_sum[b, j] = sum_k g h_kbj and g_sum[b] = sum_k g, which are
// kept for grad_prior.
template <typename scalar_t>
void per_example_grads_impl(const scalar_t* grad, const scalar_t* h,
                            const scalar_t* prior_logits, const scalar_t* q_logits,
                            scalar_t* grad_h, scalar_t* grad_q, double* gh_sum, double* g_sum,
                            const SbnSizes& sizes) {
  const int64_t latent_dim = sizes.latent_dim;
  at::parallel_for(0, sizes.batch, grain_rows(sizes.num_samples * latent_dim),
                   [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> prior_minus_q(latent_dim);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* q_row = q_logits + b * latent_dim;
      double* gh_row = gh_sum + b * latent_dim;
      for (int64_t j = 0; j < latent_dim; ++j) {
        prior_minus_q[j] = prior_logits[j] - q_row[j];
        gh_row[j] = 0;
      }
      double total = 0;
      for (int64_t k = 0; k < sizes.num_samples; ++k) {
        const int64_t row = k * sizes.batch + b;
        latent_grad_row(grad[row], h + row * latent_dim, prior_minus_q.data(),
                        grad_h + row * latent_dim, gh_row, latent_dim);
        total += grad[row];
      }
      g_sum[b] = total;
      q_grad_row(q_row, total, gh_row, grad_q + b * latent_dim, latent_dim);
    }
  });
}

// grad_prior[j] = sum_{k, b} g (h_kbj - sigmoid(a_j))
//               = sum_b gh_sum[b, j] - sigmoid(a_j) sum_b g_sum[b].
template <typename scalar_t>
void prior_grad_impl(const scalar_t* prior_logits, const double* gh_sum, const double* g_sum,
                     scalar_t* grad_prior, const SbnSizes& sizes) {
  const int64_t latent_dim = sizes.latent_dim;
  std::vector<double> prior_sum(latent_dim, 0.0);
  double g_total = 0;
  for (int64_t b = 0; b < sizes.batch; ++b) {
    g_total += g_sum[b];
    const double* gh_row = gh_sum + b * latent_dim;
    for (int64_t j = 0; j < latent_dim; ++j) prior_sum[j] += gh_row[j];
  }
  for (int64_t j = 0; j < latent_dim; ++j) {
    grad_prior[j] =
        static_cast<scalar_t>(prior_sum[j] - Math<double>::sigmoid(prior_logits[j]) * g_total);
  }
}

using LatentGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The gradients of h, prior_logits and q_logits; grad is contiguous.
LatentGrads latent_grads(const at::Tensor& grad, const at::Tensor& h,
                         const at::Tensor& prior_logits, const at::Tensor& q_logits,
                         const SbnSizes& sizes) {
  const auto h_c = h.contiguous(), prior_c = prior_logits.contiguous();
  const auto q_c = q_logits.contiguous();
  at::Tensor grad_h = at::empty(h.sizes(), h.options());
  at::Tensor grad_prior = at::empty(prior_logits.sizes(), prior_logits.options());
  at::Tensor grad_q = at::empty(q_logits.sizes(), q_logits.options());
  std::vector<double> gh_sum(sizes.batch * sizes.latent_dim), g_sum(sizes.batch);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "sbn_latent_grads_cpu", [&] {
    per_example_grads_impl<scalar_t>(
        grad.const_data_ptr<scalar_t>(), h_c.const_data_ptr<scalar_t>(),
        prior_c.const_data_ptr<scalar_t>(), q_c.const_data_ptr<scalar_t>(),
        grad_h.mutable_data_ptr<scalar_t>(), grad_q.mutable_data_ptr<scalar_t>(), gh_sum.data(),
        g_sum.data(), sizes);
    prior_grad_impl<scalar_t>(prior_c.const_data_ptr<scalar_t>(), gh_sum.data(), g_sum.data(),
                              grad_prior.mutable_data_ptr<scalar_t>(), sizes);
  });
  return {grad_h, grad_prior, grad_q};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sbn_log_weights_backward_cpu(
    const at::Tensor& grad_log_weights, const at::Tensor& logits, const at::Tensor& x,
    const at::Tensor& h, const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  const SbnSizes sizes =
      check_sbn_log_weights_backward_args(grad_log_weights, logits, x, h, prior_logits, q_logits);
  const auto grad_c = grad_log_weights.contiguous(), logits_c = logits.contiguous();
  const auto x_c = x.contiguous();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "sbn_log_weights_backward_cpu", [&] {
    bernoulli_grad_rows<scalar_t>(grad_c.const_data_ptr<scalar_t>(),
                                  logits_c.const_data_ptr<scalar_t>(),
                                  x_c.const_data_ptr<scalar_t>(),
                                  grad_logits.mutable_data_ptr<scalar_t>(),
                                  sizes.num_samples * sizes.batch, sizes.batch, sizes.data_dim);
  });
  auto [grad_h, grad_prior, grad_q] = latent_grads(grad_c, h, prior_logits, q_logits, sizes);
  return {grad_logits, grad_h, grad_prior, grad_q};
}

LatentGrads sbn_log_weights_and_grad_backward_cpu(const at::Tensor& grad_log_weights,
                                                  at::Tensor& dlogits, const at::Tensor& h,
                                                  const at::Tensor& prior_logits,
                                                  const at::Tensor& q_logits) {
  const SbnSizes sizes = check_sbn_log_weights_and_grad_backward_args(
      grad_log_weights, dlogits, h, prior_logits, q_logits);
  TORCH_CHECK(dlogits.is_contiguous(), "dlogits must be contiguous (it is scaled in place)");
  const auto grad_c = grad_log_weights.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dlogits.scalar_type(), "sbn_log_weights_and_grad_backward_cpu", [&] {
    scale_rows<scalar_t>(grad_c.const_data_ptr<scalar_t>(), dlogits.mutable_data_ptr<scalar_t>(),
                         sizes.num_samples * sizes.batch, sizes.data_dim);
  });
  return latent_grads(grad_c, h, prior_logits, q_logits, sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("sbn_log_weights", &sbn_log_weights_cpu);
  m.impl("sbn_log_weights_backward", &sbn_log_weights_backward_cpu);
  m.impl("sbn_log_weights_and_grad", &sbn_log_weights_and_grad_cpu);
  m.impl("sbn_log_weights_and_grad_backward_", &sbn_log_weights_and_grad_backward_cpu);
}

}  // namespace genvar::cpu
