// Schema of genvar::rbm_gibbs (RBM Gibbs sweeps with a counter-based Philox
// stream) and its argument checks, shared by every backend.
#include "rbm.h"
#include "checks.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

namespace genvar {

RbmSizes check_rbm_gibbs_args(const at::Tensor& v, const at::Tensor& weight,
                              const at::Tensor& visible_bias, const at::Tensor& hidden_bias,
                              double beta, int64_t sweeps, int64_t seed, int64_t offset,
                              const std::optional<at::Tensor>& base_visible_bias) {
  check_floating(v, "v");
  check_rank(v, "v", 2, "[B, D]");
  check_rank(weight, "weight", 2, "[D, H]");
  const RbmSizes sizes{v.size(0), v.size(1), weight.size(1)};
  check_shape(weight, "weight", {sizes.visible, sizes.hidden}, "[D, H] (D from v)");
  check_shape(visible_bias, "visible_bias", {sizes.visible}, "[D]");
  check_shape(hidden_bias, "hidden_bias", {sizes.hidden}, "[H] (H from weight)");
  check_same_dtype_and_device(v, "v", weight, "weight");
  check_same_dtype_and_device(v, "v", visible_bias, "visible_bias");
  check_same_dtype_and_device(v, "v", hidden_bias, "hidden_bias");
  if (base_visible_bias.has_value()) {
    check_shape(*base_visible_bias, "base_visible_bias", {sizes.visible}, "[D]");
    check_same_dtype_and_device(v, "v", *base_visible_bias, "base_visible_bias");
  }
  TORCH_CHECK(sizes.chains <= int64_t{0xFFFFFFFF}, "v must have fewer than 2^32 rows (B is a ",
              "counter word of the random stream), got ", sizes.chains);
  TORCH_CHECK(sweeps >= 1, "sweeps must be >= 1, got ", sweeps);
  TORCH_CHECK(seed >= 0, "seed must be in [0, 2^63), got ", seed);
  constexpr int64_t kMaxSweeps = std::numeric_limits<int64_t>::max() / 2;
  TORCH_CHECK(sweeps <= kMaxSweeps && offset >= 0 &&
                  offset <= std::numeric_limits<int64_t>::max() - 2 * sweeps,
              "offset must be >= 0 and leave room for the sweeps (offset + 2 sweeps < 2^63), ",
              "got offset ", offset, " with ", sweeps, " sweeps");
  TORCH_CHECK(beta >= 0.0 && beta <= 1.0, "beta must be in [0, 1], got ", beta);
  return sizes;
}

at::Tensor rbm_visible_shift(const at::Tensor& visible_bias, double beta,
                             const std::optional<at::Tensor>& base_visible_bias) {
  at::Tensor shift = at::mul(visible_bias, beta);
  if (base_visible_bias.has_value()) shift = shift + at::mul(*base_visible_bias, 1.0 - beta);
  return shift.contiguous();
}

TORCH_LIBRARY_FRAGMENT(genvar, m) {
  // Returns (v after the last sweep [B, D], the hidden sample of the last sweep [B, H]).
  m.def(
      "rbm_gibbs(Tensor v, Tensor weight, Tensor visible_bias, Tensor hidden_bias, float beta, "
      "int sweeps, int seed, int offset, Tensor? base_visible_bias=None) -> (Tensor, Tensor)");
  // Test hook (CPU): Philox4x32-10 of int64 counters [..., 4] holding 32-bit words,
  // key (key0, key1); returns the [..., 4] output words.
  m.def("philox4x32_10(Tensor counter, int key0, int key1) -> Tensor");
}

}  // namespace genvar
