// Shared declarations of the RBM Gibbs-sweep op, genvar::rbm_gibbs: the
// argument checks every backend makes. The specification, with the random
// stream's layout, is genvar_bench/ops/rbm.py; the Philox generator is
// ../philox.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace genvar {

// Sizes of a call: v [B, D], weight [D, H].
struct RbmSizes {
  int64_t chains;   // B
  int64_t visible;  // D
  int64_t hidden;   // H
};

// Checks ranks, shapes, dtypes (float32 or float64, all equal), devices (all
// equal), sweeps >= 1, seed >= 0, offset >= 0 with offset + 2 sweeps < 2^63,
// beta in [0, 1] and B < 2^32 (a counter word); throws a RuntimeError naming
// the argument. v's values (binary) are checked by the CPU kernel's first pass.
RbmSizes check_rbm_gibbs_args(const at::Tensor& v, const at::Tensor& weight,
                              const at::Tensor& visible_bias, const at::Tensor& hidden_bias,
                              double beta, int64_t sweeps, int64_t seed, int64_t offset,
                              const std::optional<at::Tensor>& base_visible_bias);

// beta b + (1 - beta) b_A [D] in v's dtype, as the reference rounds it (b alone
// when there is no b_A).
at::Tensor rbm_visible_shift(const at::Tensor& visible_bias, double beta,
                             const std::optional<at::Tensor>& base_visible_bias);

}  // namespace genvar
