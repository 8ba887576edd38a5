// Shared declarations of the diffusion KL ops, for their CPU kernels
// (diffusion.cpp) and their CUDA ones (../cuda/diffusion_kernel.cu): the
// per-step schedule tables every backend reads, and the argument checks.
//
// Steps t = 1..T are 1-based; betas[t - 1] = beta_t, alpha_t = 1 - beta_t,
// abar_s = prod_{r <= s} alpha_r (abar_0 = 1). Tables (layout
// below) are built in double on the host from betas of any floating dtype,
// then moved to the data's device.
#pragma once

#include <cstdint>

// Column layout of the diffusion KL ops' per-step schedule tables: one row of
// double per step t = 1..T (row t - 1). Torch-free, so that the CUDA kernels
// (built by nvcc alone) read the same layout the host code writes.
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

// The rest needs torch: nvcc compiling the CUDA kernels alone (without
// GENVAR_WITH_CUDA, as tests/test_cuda_compile.py does) stops here.
#if !defined(__CUDACC__) || defined(GENVAR_WITH_CUDA)

#include <ATen/core/Tensor.h>

namespace genvar {

// Sizes of a diffusion KL call: x0 [B, D], xt and the network output
// [T', B, D], steps [T', B], betas [T].
struct DiffusionSizes {
  int64_t num_slices;  // T'
  int64_t batch;       // B
  int64_t data_dim;    // D
  int64_t num_steps;   // T
};

// Checks ranks, shapes, dtypes (x0, xt, output float32 or float64, all equal;
// steps int64; betas floating, 1-D, non-empty) and devices (all equal);
// throws a RuntimeError naming the argument. `output_name` is the network
// output's argument name ("logits" or "mean"). Values are checked by
// check_steps_in_range and the table builders.
DiffusionSizes check_diffusion_kl_args(const at::Tensor& x0, const at::Tensor& xt,
                                       const at::Tensor& output, const char* output_name,
                                       const at::Tensor& steps, const at::Tensor& betas);

// check_diffusion_kl_args with output "mean", and log_var of mean's shape,
// dtype and device.
DiffusionSizes check_diffusion_gaussian_kl_args(const at::Tensor& x0, const at::Tensor& xt,
                                                const at::Tensor& mean, const at::Tensor& log_var,
                                                const at::Tensor& steps,
                                                const at::Tensor& betas);

// grad [T', B] of the output's dtype and device.
void check_diffusion_grad(const at::Tensor& grad, const at::Tensor& output,
                          const char* output_name, const DiffusionSizes& sizes);

// Every step in [1, T], else an error naming the first bad entry. On CUDA this
// copies the min and max to the host: a synchronising check.
void check_steps_in_range(const at::Tensor& steps, int64_t num_steps);

// [T, kBinomialColumns] and [T, kGaussianColumns] float64 tables on `device`.
// Both check every beta in (0, 1] (on CUDA, reading betas synchronises); a
// schedule's table is built once and then served from a cache keyed by its values.
at::Tensor binomial_schedule_table(const at::Tensor& betas, at::Device device);
at::Tensor gaussian_schedule_table(const at::Tensor& betas, at::Device device);

// Contiguous inputs, the schedule table and the sizes: what every backend's
// pass reads.
struct PreparedDiffusion {
  at::Tensor x0, xt, output, steps, table;
  DiffusionSizes sizes;
};

// Checks the values (steps in [1, T], betas in (0, 1]) of arguments whose
// shapes, dtypes and devices the caller checked into `sizes`, and builds the
// op's table (binomial_schedule_table or gaussian_schedule_table) on the
// output's device.
PreparedDiffusion prepare_diffusion(const at::Tensor& x0, const at::Tensor& xt,
                                    const at::Tensor& output, const at::Tensor& steps,
                                    const at::Tensor& betas, const DiffusionSizes& sizes,
                                    at::Tensor (*build_table)(const at::Tensor&, at::Device));

// Backward of the *_and_grad training path: grad [T', B] and a derivative
// buffer [T', B, D] of its dtype and device, named `name`.
void check_diffusion_and_grad_backward_args(const at::Tensor& grad, const at::Tensor& buffer,
                                            const char* name);

}  // namespace genvar

#endif
