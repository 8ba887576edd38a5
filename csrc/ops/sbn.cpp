// Schemas of the sigmoid-belief-network ops and the argument checks every backend shares.
#include "sbn.h"
#include "checks.h"

#include <torch/library.h>

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
