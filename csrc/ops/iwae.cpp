// Schemas of the IWAE ops and the argument checks every backend shares.
#include "iwae.h"
#include "checks.h"

#include <torch/library.h>

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
