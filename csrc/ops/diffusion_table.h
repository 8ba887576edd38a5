// Column layout of the diffusion KL ops' per-step schedule tables: one row of
// double per step t = 1..T (row t - 1). Torch-free, so that the CUDA kernels
// (built by nvcc alone) read the same layout the host code writes.
#pragma once

#include <cstdint>

namespace genvar {

// Binomial: q(x_{t-1} = 1 | x_t, x_0) and the entropy term softplus(lq) - q lq
// (the posterior's entropy, nats) for the four binary cells, indexed
// 2 x_t + x_0. At t = 1, q = x_0 and the entropy is 0.
constexpr int64_t kBinomialQ = 0;
constexpr int64_t kBinomialEntropy = 4;
constexpr int64_t kBinomialColumns = 8;

// Gaussian: mq = c0 x_0 + c1 x_t, vq, and the constant of the per-element KL,
// -log vq - 1 (t > 1) or log(2 pi) (t = 1, where c0 = 1, c1 = 0, vq = 0 and
// the term is -log N(x_0; mean, e^log_var)).
constexpr int64_t kGaussianC0 = 0;
constexpr int64_t kGaussianC1 = 1;
constexpr int64_t kGaussianVarQ = 2;
constexpr int64_t kGaussianOffset = 3;
constexpr int64_t kGaussianColumns = 4;

}  // namespace genvar
