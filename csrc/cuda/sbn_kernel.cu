// The sigmoid-belief-network ops on CUDA: kernels, their launchers, and the
// ops' CUDA implementations.
//
// The kernels and launchers include no torch header, so they compile with
// plain nvcc (also where the installed torch ships no CUDA headers); the
// implementations at the end keep all tensor handling. Sums over a row of D
// (or H) run in scalar_t, like iwae_kernel.cu; sums over samples accumulate
// in double for float32 too and are cast once at the end.
//
// Launchers: all pointers are device pointers to contiguous row-major arrays
// of the shapes named in the comments (k = num_samples, B = batch, D =
// data_dim, H = latent_dim). Each launcher enqueues on `stream`, never
// synchronises, launches nothing for an empty output and returns the launch
// error (cudaSuccess when nothing was launched). Only the float and double
// instantiations exist (explicit, after the launchers).
//
// Implementations: inputs are made contiguous because the kernels index
// row-major arrays directly, and everything is enqueued on torch's current
// stream so the ops order correctly with the rest of the program without
// synchronising.
#include "bernoulli_rows.cuh"
#include "device_utils.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {
namespace {

// The forward gives a block several samples of one example, so that the
// example's softplus(q_logits) - softplus(prior_logits) is computed once for
// them, but only while enough blocks remain to fill the GPU.
constexpr int64_t kTargetRowBlocks = 1024;
constexpr int64_t kMaxSamplesPerBlock = 16;

// ---------------------------------------------------------------------------
// Row kernels: a block per (example, run of samples), threads striding over D.

// log_weights[s, b] = sum_d x_d l_d - softplus(l_d)
//                     + sum_j h_j (a_j - m_bj) + softplus(m_bj) - softplus(a_j),
// for samples s of example b in [first, first + samples_per_block). With
// kWriteGrad, also dlogits[s, b, d] = x_d - sigmoid(l_d) from the same exp.
template <typename scalar_t, int kVec, bool kWriteGrad>
__global__ void __launch_bounds__(kMaxRowThreads)
    log_weights_kernel(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                       const scalar_t* __restrict__ h,
                       const scalar_t* __restrict__ prior_logits,
                       const scalar_t* __restrict__ q_logits, scalar_t* __restrict__ log_weights,
                       scalar_t* __restrict__ dlogits, int64_t num_samples, int64_t batch,
                       int64_t data_dim, int64_t latent_dim, int64_t samples_per_block) {
  const int64_t sample_runs = (num_samples + samples_per_block - 1) / samples_per_block;
  for (int64_t unit = blockIdx.x; unit < batch * sample_runs; unit += gridDim.x) {
    const int64_t b = unit % batch;
    const int64_t first = (unit / batch) * samples_per_block;
    const int64_t last =
        first + samples_per_block < num_samples ? first + samples_per_block : num_samples;
    const scalar_t* q_row = q_logits + b * latent_dim;
    // This thread's share of the part of the latent terms that every sample shares.
    scalar_t shared_latent = 0;
    for (int64_t j = threadIdx.x; j < latent_dim; j += blockDim.x) {
      shared_latent += softplus(q_row[j]) - softplus(prior_logits[j]);
    }
    for (int64_t s = first; s < last; ++s) {
      const int64_t row = s * batch + b;
      scalar_t* dlogit_row = kWriteGrad ? dlogits + row * data_dim : nullptr;
      scalar_t total = data_term_share<scalar_t, kVec, kWriteGrad>(
          logits + row * data_dim, x + b * data_dim, dlogit_row, data_dim, shared_latent);
      for (int64_t j = threadIdx.x; j < latent_dim; j += blockDim.x) {
        total += h[row * latent_dim + j] * (prior_logits[j] - q_row[j]);
      }
      total = block_sum(total);
      if (threadIdx.x == 0) log_weights[row] = total;
    }
  }
}

// ---------------------------------------------------------------------------
// Column kernels: an array reduced over its rows for each column, in the
// column tiles of bernoulli_rows.cuh.

// sum of g h and sum of g over the rows of one column, in double.
struct WeightedSums {
  accumulate_t grad_h;
  accumulate_t grad;
};

__device__ __forceinline__ WeightedSums operator+(WeightedSums a, WeightedSums b) {
  return {a.grad_h + b.grad_h, a.grad + b.grad};
}

// Columns (b, j) of h[k, B, H], rows k:
//   grad_h[s, b, j] = g[s, b] (a_j - m_bj)
//   grad_q[b, j]    = -sum_s g[s, b] (h[s, b, j] - sigmoid(m_bj))
//                   = sigmoid(m_bj) sum_s g[s, b] - sum_s g[s, b] h[s, b, j]
// grad_h needs the same g reads as the sums, so one pass serves both.
template <typename scalar_t>
__global__ void __launch_bounds__(kColumnThreads, kColumnBlocksPerSm)
    q_grads_kernel(const scalar_t* __restrict__ grad_log_weights,
                   const scalar_t* __restrict__ h, const scalar_t* __restrict__ prior_logits,
                   const scalar_t* __restrict__ q_logits, scalar_t* __restrict__ grad_h,
                   scalar_t* __restrict__ grad_q, int64_t num_samples, int64_t batch,
                   int64_t latent_dim) {
  const int64_t columns = batch * latent_dim;
  for (int64_t tile = blockIdx.x; tile * kColumnTile < columns; tile += gridDim.x) {
    const int64_t column = tile * kColumnTile + threadIdx.x;
    const bool active = column < columns;
    WeightedSums sums{0, 0};
    scalar_t q_logit = 0;
    if (active) {
      const int64_t b = column / latent_dim;
      q_logit = q_logits[column];
      const scalar_t prior_minus_q = prior_logits[column % latent_dim] - q_logit;
      for (int64_t s = threadIdx.y; s < num_samples; s += kSampleLanes) {
        const scalar_t grad = grad_log_weights[s * batch + b];
        const int64_t index = s * columns + column;
        grad_h[index] = grad * prior_minus_q;
        sums.grad_h += static_cast<accumulate_t>(grad) * h[index];
        sums.grad += grad;
      }
    }
    sums = combine_sample_lanes(sums, Add{});
    if (active && threadIdx.y == 0) {
      grad_q[column] = static_cast<scalar_t>(
          sigmoid(static_cast<accumulate_t>(q_logit)) * sums.grad - sums.grad_h);
    }
  }
}

// Columns j of h viewed as [k * B, H]:
//   grad_prior[j] = sum_rows g (h_j - sigmoid(a_j)) = sum_rows g h_j - sigmoid(a_j) sum_rows g.
// No rows (B = 0) gives zeros, as the sum over an empty batch should.
template <typename scalar_t>
__global__ void __launch_bounds__(kColumnThreads, kColumnBlocksPerSm)
    prior_grad_kernel(const scalar_t* __restrict__ grad_log_weights,
                      const scalar_t* __restrict__ h, const scalar_t* __restrict__ prior_logits,
                      scalar_t* __restrict__ grad_prior, int64_t num_rows, int64_t latent_dim) {
  for (int64_t tile = blockIdx.x; tile * kColumnTile < latent_dim; tile += gridDim.x) {
    const int64_t j = tile * kColumnTile + threadIdx.x;
    const bool active = j < latent_dim;
    WeightedSums sums{0, 0};
    for (int64_t row = threadIdx.y; active && row < num_rows; row += kSampleLanes) {
      const scalar_t grad = grad_log_weights[row];
      sums.grad_h += static_cast<accumulate_t>(grad) * h[row * latent_dim + j];
      sums.grad += grad;
    }
    sums = combine_sample_lanes(sums, Add{});
    if (active && threadIdx.y == 0) {
      grad_prior[j] = static_cast<scalar_t>(
          sums.grad_h - sigmoid(static_cast<accumulate_t>(prior_logits[j])) * sums.grad);
    }
  }
}

// ---------------------------------------------------------------------------
// Launch helpers.

// sbn_log_weights, and with kWriteGrad sbn_log_weights_and_grad (dlogits is
// null without it).
template <typename scalar_t, bool kWriteGrad>
cudaError_t log_weights_forward(const scalar_t* logits, const scalar_t* x, const scalar_t* h,
                                const scalar_t* prior_logits, const scalar_t* q_logits,
                                scalar_t* log_weights, scalar_t* dlogits, int64_t num_samples,
                                int64_t batch, int64_t data_dim, int64_t latent_dim,
                                cudaStream_t stream) {
  if (num_samples * batch == 0) return cudaSuccess;
  const int64_t samples_per_block = std::clamp<int64_t>(
      num_samples * batch / kTargetRowBlocks, 1, std::min(kMaxSamplesPerBlock, num_samples));
  const int64_t units = batch * ((num_samples + samples_per_block - 1) / samples_per_block);
  return with_pack_width<scalar_t>(data_dim, {logits, x, dlogits}, [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    const int threads = row_block_threads(std::max(data_dim / kVec, latent_dim));
    log_weights_kernel<scalar_t, kVec, kWriteGrad><<<grid_blocks(units), threads, 0, stream>>>(
        logits, x, h, prior_logits, q_logits, log_weights, dlogits, num_samples, batch,
        data_dim, latent_dim, samples_per_block);
  });
}

// The backward of both forms: grad_logits from `source` (logits and x with
// kRecompute, else the saved dlogits, x null), then the latent gradients.
template <typename scalar_t, bool kRecompute>
cudaError_t log_weights_backward(const scalar_t* grad_log_weights, const scalar_t* source,
                                 const scalar_t* x, const scalar_t* h,
                                 const scalar_t* prior_logits, const scalar_t* q_logits,
                                 scalar_t* grad_logits, scalar_t* grad_h, scalar_t* grad_prior,
                                 scalar_t* grad_q, int64_t num_samples, int64_t batch,
                                 int64_t data_dim, int64_t latent_dim, cudaStream_t stream) {
  const int64_t num_rows = num_samples * batch;
  cudaError_t error = launch_logits_grad<scalar_t, kRecompute>(
      grad_log_weights, source, x, grad_logits, num_rows, batch, data_dim, stream);
  if (error != cudaSuccess) return error;
  if (latent_dim == 0) return cudaSuccess;
  if (batch > 0) {
    q_grads_kernel<scalar_t><<<column_grid(batch * latent_dim), column_block(), 0, stream>>>(
        grad_log_weights, h, prior_logits, q_logits, grad_h, grad_q, num_samples, batch,
        latent_dim);
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  prior_grad_kernel<scalar_t><<<column_grid(latent_dim), column_block(), 0, stream>>>(
      grad_log_weights, h, prior_logits, grad_prior, num_rows, latent_dim);
  return cudaGetLastError();
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers.

// log_weights[k, B] from logits[k, B, D], x[B, D], h[k, B, H],
// prior_logits[H] and q_logits[B, H].
template <typename scalar_t>
cudaError_t launch_sbn_log_weights(const scalar_t* logits, const scalar_t* x, const scalar_t* h,
                                   const scalar_t* prior_logits, const scalar_t* q_logits,
                                   scalar_t* log_weights, int64_t num_samples, int64_t batch,
                                   int64_t data_dim, int64_t latent_dim, cudaStream_t stream) {
  return log_weights_forward<scalar_t, false>(logits, x, h, prior_logits, q_logits, log_weights,
                                              nullptr, num_samples, batch, data_dim, latent_dim,
                                              stream);
}

// grad_logits[k, B, D], grad_h[k, B, H], grad_prior_logits[H] and
// grad_q_logits[B, H] from grad_log_weights[k, B] and the forward inputs.
// grad_prior_logits is written also when B = 0 (zeros then).
template <typename scalar_t>
cudaError_t launch_sbn_log_weights_backward(
    const scalar_t* grad_log_weights, const scalar_t* logits, const scalar_t* x,
    const scalar_t* h, const scalar_t* prior_logits, const scalar_t* q_logits,
    scalar_t* grad_logits, scalar_t* grad_h, scalar_t* grad_prior_logits,
    scalar_t* grad_q_logits, int64_t num_samples, int64_t batch, int64_t data_dim,
    int64_t latent_dim, cudaStream_t stream) {
  return log_weights_backward<scalar_t, true>(
      grad_log_weights, logits, x, h, prior_logits, q_logits, grad_logits, grad_h,
      grad_prior_logits, grad_q_logits, num_samples, batch, data_dim, latent_dim, stream);
}

// log_weights[k, B] as launch_sbn_log_weights, and in the same pass
// dlogits[k, B, D] = x[b, d] - sigmoid(logits[k, b, d]), the gradient of
// log_weights[k, b] with respect to its own row of logits.
template <typename scalar_t>
cudaError_t launch_sbn_log_weights_and_grad(const scalar_t* logits, const scalar_t* x,
                                            const scalar_t* h, const scalar_t* prior_logits,
                                            const scalar_t* q_logits, scalar_t* log_weights,
                                            scalar_t* dlogits, int64_t num_samples,
                                            int64_t batch, int64_t data_dim, int64_t latent_dim,
                                            cudaStream_t stream) {
  return log_weights_forward<scalar_t, true>(logits, x, h, prior_logits, q_logits, log_weights,
                                             dlogits, num_samples, batch, data_dim, latent_dim,
                                             stream);
}

// grad_logits[k, B, D] = grad_log_weights[k, b] * dlogits[k, b, :], and
// grad_h, grad_prior_logits and grad_q_logits as in launch_sbn_log_weights_backward.
template <typename scalar_t>
cudaError_t launch_sbn_log_weights_and_grad_backward(
    const scalar_t* grad_log_weights, const scalar_t* dlogits, const scalar_t* h,
    const scalar_t* prior_logits, const scalar_t* q_logits, scalar_t* grad_logits,
    scalar_t* grad_h, scalar_t* grad_prior_logits, scalar_t* grad_q_logits,
    int64_t num_samples, int64_t batch, int64_t data_dim, int64_t latent_dim,
    cudaStream_t stream) {
  return log_weights_backward<scalar_t, false>(
      grad_log_weights, dlogits, nullptr, h, prior_logits, q_logits, grad_logits, grad_h,
      grad_prior_logits, grad_q_logits, num_samples, batch, data_dim, latent_dim, stream);
}

#define GENVAR_INSTANTIATE_SBN_LAUNCHERS(scalar_t)                                            \
  template cudaError_t launch_sbn_log_weights<scalar_t>(                                      \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,    \
      scalar_t*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                           \
  template cudaError_t launch_sbn_log_weights_backward<scalar_t>(                             \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,    \
      const scalar_t*, scalar_t*, scalar_t*, scalar_t*, scalar_t*, int64_t, int64_t, int64_t, \
      int64_t, cudaStream_t);                                                                 \
  template cudaError_t launch_sbn_log_weights_and_grad<scalar_t>(                             \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,    \
      scalar_t*, scalar_t*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                \
  template cudaError_t launch_sbn_log_weights_and_grad_backward<scalar_t>(                    \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,    \
      scalar_t*, scalar_t*, scalar_t*, scalar_t*, int64_t, int64_t, int64_t, int64_t,         \
      cudaStream_t);

GENVAR_INSTANTIATE_SBN_LAUNCHERS(float)
GENVAR_INSTANTIATE_SBN_LAUNCHERS(double)

#undef GENVAR_INSTANTIATE_SBN_LAUNCHERS

}  // namespace genvar::cuda

// ---------------------------------------------------------------------------
// The ops' CUDA implementations and their registration: tensor handling in
// ATen, raw pointers into the launchers above. Only a CUDA build of the
// extension (GENVAR_WITH_CUDA: setup.py, CMake) compiles this part; nvcc
// alone, as in tests/test_cuda_compile.py, compiles the kernels without torch.
#ifdef GENVAR_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/sbn.h"
#include "stream.h"

namespace genvar {
namespace {

// The inputs of a forward, contiguous.
struct SbnInputs {
  at::Tensor logits, x, h, prior_logits, q_logits;
};

SbnInputs contiguous_inputs(const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
                            const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  return {logits.contiguous(), x.contiguous(), h.contiguous(), prior_logits.contiguous(),
          q_logits.contiguous()};
}

// Runs the forward; fills `dlogits` too when it is defined.
at::Tensor log_weights_cuda(const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
                            const at::Tensor& prior_logits, const at::Tensor& q_logits,
                            const at::Tensor& dlogits) {
  const SbnSizes sizes = check_sbn_log_weights_args(logits, x, h, prior_logits, q_logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const SbnInputs in = contiguous_inputs(logits, x, h, prior_logits, q_logits);
  at::Tensor log_weights = at::empty({sizes.num_samples, sizes.batch}, in.logits.options());
  if (log_weights.numel() == 0) return log_weights;
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "sbn_log_weights_cuda", [&] {
    const scalar_t* logits_ptr = in.logits.const_data_ptr<scalar_t>();
    const scalar_t* x_ptr = in.x.const_data_ptr<scalar_t>();
    const scalar_t* h_ptr = in.h.const_data_ptr<scalar_t>();
    const scalar_t* prior_ptr = in.prior_logits.const_data_ptr<scalar_t>();
    const scalar_t* q_ptr = in.q_logits.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = log_weights.mutable_data_ptr<scalar_t>();
    if (dlogits.defined()) {
      C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights_and_grad<scalar_t>(
          logits_ptr, x_ptr, h_ptr, prior_ptr, q_ptr, out_ptr,
          dlogits.mutable_data_ptr<scalar_t>(), sizes.num_samples, sizes.batch, sizes.data_dim,
          sizes.latent_dim, current_stream()));
    } else {
      C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights<scalar_t>(
          logits_ptr, x_ptr, h_ptr, prior_ptr, q_ptr, out_ptr, sizes.num_samples, sizes.batch,
          sizes.data_dim, sizes.latent_dim, current_stream()));
    }
  });
  return log_weights;
}

at::Tensor sbn_log_weights_cuda(const at::Tensor& logits, const at::Tensor& x,
                                const at::Tensor& h, const at::Tensor& prior_logits,
                                const at::Tensor& q_logits) {
  return log_weights_cuda(logits, x, h, prior_logits, q_logits, at::Tensor());
}

// Forward of the training path: log_weights and, in the same pass, dlogits =
// d log_weights[k, b] / d logits[k, b, :].
std::tuple<at::Tensor, at::Tensor> sbn_log_weights_and_grad_cuda(
    const at::Tensor& logits, const at::Tensor& x, const at::Tensor& h,
    const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  // The checks run before the allocation, so a bad logits is reported as such.
  check_sbn_log_weights_args(logits, x, h, prior_logits, q_logits);
  at::Tensor dlogits = at::empty(logits.sizes(), logits.options());
  at::Tensor log_weights = log_weights_cuda(logits, x, h, prior_logits, q_logits, dlogits);
  return {log_weights, dlogits};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sbn_log_weights_backward_cuda(
    const at::Tensor& grad_log_weights, const at::Tensor& logits, const at::Tensor& x,
    const at::Tensor& h, const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  const SbnSizes sizes =
      check_sbn_log_weights_backward_args(grad_log_weights, logits, x, h, prior_logits, q_logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const at::Tensor grad_c = grad_log_weights.contiguous();
  const SbnInputs in = contiguous_inputs(logits, x, h, prior_logits, q_logits);
  at::Tensor grad_logits = at::empty(in.logits.sizes(), in.logits.options());
  at::Tensor grad_h = at::empty(in.h.sizes(), in.h.options());
  at::Tensor grad_prior = at::empty(in.prior_logits.sizes(), in.prior_logits.options());
  at::Tensor grad_q = at::empty(in.q_logits.sizes(), in.q_logits.options());
  // No early return for B = 0: grad_prior_logits is [H] and must be zeros then.
  // The launcher skips whichever of its kernels has an empty output.
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "sbn_log_weights_backward_cuda", [&] {
    C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights_backward<scalar_t>(
        grad_c.const_data_ptr<scalar_t>(), in.logits.const_data_ptr<scalar_t>(),
        in.x.const_data_ptr<scalar_t>(), in.h.const_data_ptr<scalar_t>(),
        in.prior_logits.const_data_ptr<scalar_t>(), in.q_logits.const_data_ptr<scalar_t>(),
        grad_logits.mutable_data_ptr<scalar_t>(), grad_h.mutable_data_ptr<scalar_t>(),
        grad_prior.mutable_data_ptr<scalar_t>(), grad_q.mutable_data_ptr<scalar_t>(),
        sizes.num_samples, sizes.batch, sizes.data_dim, sizes.latent_dim, current_stream()));
  });
  return {grad_logits, grad_h, grad_prior, grad_q};
}

// Scales dlogits in place into the logits gradient (the op's schema marks it
// mutated). The launcher's outputs may not alias its inputs, so the product
// goes through a temporary and is copied back; the training path uses this op
// on the CPU only, where the in-place form saves the allocation.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sbn_log_weights_and_grad_backward_cuda(
    const at::Tensor& grad_log_weights, at::Tensor& dlogits, const at::Tensor& h,
    const at::Tensor& prior_logits, const at::Tensor& q_logits) {
  const SbnSizes sizes = check_sbn_log_weights_and_grad_backward_args(
      grad_log_weights, dlogits, h, prior_logits, q_logits);
  const c10::cuda::CUDAGuard device_guard(dlogits.device());
  const at::Tensor grad_c = grad_log_weights.contiguous();
  const at::Tensor dlogits_c = dlogits.contiguous();
  const at::Tensor h_c = h.contiguous();
  const at::Tensor prior_c = prior_logits.contiguous();
  const at::Tensor q_c = q_logits.contiguous();
  at::Tensor grad_logits = at::empty(dlogits_c.sizes(), dlogits_c.options());
  at::Tensor grad_h = at::empty(h_c.sizes(), h_c.options());
  at::Tensor grad_prior = at::empty(prior_c.sizes(), prior_c.options());
  at::Tensor grad_q = at::empty(q_c.sizes(), q_c.options());
  AT_DISPATCH_FLOATING_TYPES(
      dlogits_c.scalar_type(), "sbn_log_weights_and_grad_backward_cuda", [&] {
        C10_CUDA_CHECK(genvar::cuda::launch_sbn_log_weights_and_grad_backward<scalar_t>(
            grad_c.const_data_ptr<scalar_t>(), dlogits_c.const_data_ptr<scalar_t>(),
            h_c.const_data_ptr<scalar_t>(), prior_c.const_data_ptr<scalar_t>(),
            q_c.const_data_ptr<scalar_t>(), grad_logits.mutable_data_ptr<scalar_t>(),
            grad_h.mutable_data_ptr<scalar_t>(), grad_prior.mutable_data_ptr<scalar_t>(),
            grad_q.mutable_data_ptr<scalar_t>(), sizes.num_samples, sizes.batch,
            sizes.data_dim, sizes.latent_dim, current_stream()));
      });
  dlogits.copy_(grad_logits);
  return {grad_h, grad_prior, grad_q};
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) {
  m.impl("sbn_log_weights", &sbn_log_weights_cuda);
  m.impl("sbn_log_weights_backward", &sbn_log_weights_backward_cuda);
  m.impl("sbn_log_weights_and_grad", &sbn_log_weights_and_grad_cuda);
  m.impl("sbn_log_weights_and_grad_backward_", &sbn_log_weights_and_grad_backward_cuda);
}

}  // namespace genvar

#endif  // GENVAR_WITH_CUDA
