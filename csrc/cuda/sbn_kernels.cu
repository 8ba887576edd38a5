// CUDA kernels of the sigmoid-belief-network ops and their launchers.
//
// No torch header is included: the kernels then compile with plain nvcc,
// also where the installed torch ships no CUDA headers, and sbn_cuda.cpp
// keeps all tensor handling. Sums over a row of D (or H) run in scalar_t,
// like iwae_kernels.cu; sums over samples accumulate in double for float32
// too and are cast once at the end.
#include "sbn_launchers.h"
#include "device_utils.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace genvar::cuda {
namespace {

constexpr int kColumnTile = 32;     // columns per block: a warp reads 32 adjacent ones
constexpr int kSampleLanes = 16;    // threads per column, splitting its loop over samples
constexpr int kColumnThreads = kColumnTile * kSampleLanes;
constexpr int kColumnBlocksPerSm = 2;  // as in iwae_kernels.cu: 64 registers, no spills
// The forward gives a block several samples of one example, so that the
// example's softplus(q_logits) - softplus(prior_logits) is computed once for
// them, but only while enough blocks remain to fill the GPU.
constexpr int64_t kTargetRowBlocks = 1024;
constexpr int64_t kMaxSamplesPerBlock = 16;

using accumulate_t = double;

// ---------------------------------------------------------------------------

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
  using Pack = Packed<scalar_t, kVec>;
  const int64_t num_packs = data_dim / kVec;
  const int64_t sample_runs = (num_samples + samples_per_block - 1) / samples_per_block;
  for (int64_t unit = blockIdx.x; unit < batch * sample_runs; unit += gridDim.x) {
    const int64_t b = unit % batch;
    const int64_t first = (unit / batch) * samples_per_block;
    const int64_t last =
        first + samples_per_block < num_samples ? first + samples_per_block : num_samples;
    const scalar_t* q_row = q_logits + b * latent_dim;
    const Pack* x_row = reinterpret_cast<const Pack*>(x + b * data_dim);
    // This thread's share of the part of the latent terms that every sample shares.
    scalar_t shared_latent = 0;
    for (int64_t j = threadIdx.x; j < latent_dim; j += blockDim.x) {
      shared_latent += softplus(q_row[j]) - softplus(prior_logits[j]);
    }
    for (int64_t s = first; s < last; ++s) {
      const int64_t row = s * batch + b;
      const Pack* logit_row = reinterpret_cast<const Pack*>(logits + row * data_dim);
      scalar_t total = shared_latent;
      for (int64_t p = threadIdx.x; p < num_packs; p += blockDim.x) {
        const Pack logit = logit_row[p];
        const Pack target = x_row[p];
        if constexpr (kWriteGrad) {
          Pack grad;
#pragma unroll
          for (int i = 0; i < kVec; ++i) {
            const scalar_t e = exp_neg_abs(logit.val[i]);
            total += target.val[i] * logit.val[i] - softplus_given(logit.val[i], e);
            grad.val[i] = target.val[i] - sigmoid_given(logit.val[i], e);
          }
          reinterpret_cast<Pack*>(dlogits + row * data_dim)[p] = grad;
        } else {
#pragma unroll
          for (int i = 0; i < kVec; ++i) {
            total += target.val[i] * logit.val[i] - softplus(logit.val[i]);
          }
        }
      }
      for (int64_t j = threadIdx.x; j < latent_dim; j += blockDim.x) {
        total += h[row * latent_dim + j] * (prior_logits[j] - q_row[j]);
      }
      total = block_sum(total);
      if (threadIdx.x == 0) log_weights[row] = total;
    }
  }
}

// grad_logits[row, :] = grad_log_weights[row] * d log_w[row] / d logits[row, :].
// kRecompute: the derivative x_d - sigmoid(l_d) is recomputed from `source` =
// logits and x (sbn_log_weights_backward). Otherwise `source` is the dlogits
// the forward wrote and x is not read (sbn_log_weights_and_grad_backward_).
template <typename scalar_t, int kVec, bool kRecompute>
__global__ void __launch_bounds__(kMaxRowThreads)
    logits_grad_kernel(const scalar_t* __restrict__ grad_log_weights,
                       const scalar_t* __restrict__ source, const scalar_t* __restrict__ x,
                       scalar_t* __restrict__ grad_logits, int64_t num_rows, int64_t batch,
                       int64_t data_dim) {
  using Pack = Packed<scalar_t, kVec>;
  const int64_t num_packs = data_dim / kVec;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    const scalar_t grad = grad_log_weights[row];
    const Pack* source_row = reinterpret_cast<const Pack*>(source + row * data_dim);
    const Pack* x_row =
        kRecompute ? reinterpret_cast<const Pack*>(x + (row % batch) * data_dim) : nullptr;
    Pack* grad_row = reinterpret_cast<Pack*>(grad_logits + row * data_dim);
    for (int64_t p = threadIdx.x; p < num_packs; p += blockDim.x) {
      const Pack value = source_row[p];
      Pack result;
      if constexpr (kRecompute) {
        const Pack target = x_row[p];
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          result.val[i] = grad * (target.val[i] - sigmoid(value.val[i]));
        }
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) result.val[i] = grad * value.val[i];
      }
      grad_row[p] = result;
    }
  }
}

// ---------------------------------------------------------------------------
// Column kernels: an array reduced over its rows for each column. A block
// takes 32 adjacent columns (coalesced row reads) and 16 threads per column
// split the row loop, combined in a fixed order so results are deterministic.

// sum of g h and sum of g over the rows of one column, in double.
struct WeightedSums {
  accumulate_t grad_h;
  accumulate_t grad;
};

// Every thread of a column gets the combined sums of its column's lanes.
// All threads of the block must call it (it holds barriers).
__device__ WeightedSums combine_sample_lanes(WeightedSums partial) {
  __shared__ WeightedSums partials[kSampleLanes][kColumnTile];
  partials[threadIdx.y][threadIdx.x] = partial;
  __syncthreads();
  WeightedSums total = partials[0][threadIdx.x];
  for (int lane = 1; lane < kSampleLanes; ++lane) {
    total.grad_h += partials[lane][threadIdx.x].grad_h;
    total.grad += partials[lane][threadIdx.x].grad;
  }
  __syncthreads();  // partials is reused by the block's next tile
  return total;
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
    sums = combine_sample_lanes(sums);
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
    sums = combine_sample_lanes(sums);
    if (active && threadIdx.y == 0) {
      grad_prior[j] = static_cast<scalar_t>(
          sums.grad_h - sigmoid(static_cast<accumulate_t>(prior_logits[j])) * sums.grad);
    }
  }
}

// ---------------------------------------------------------------------------
// Launch helpers.

unsigned column_grid(int64_t columns) {
  return grid_blocks((columns + kColumnTile - 1) / kColumnTile);
}

// 16-byte packs need every row start aligned: D a multiple of the pack width
// and 16-byte-aligned base pointers (a sliced tensor may not be).
template <typename scalar_t>
constexpr int kPackWidth = 16 / static_cast<int>(sizeof(scalar_t));

template <typename scalar_t>
bool can_pack(int64_t data_dim, std::initializer_list<const void*> bases) {
  if (data_dim % kPackWidth<scalar_t> != 0) return false;
  return std::all_of(bases.begin(), bases.end(), [](const void* base) {
    return reinterpret_cast<std::uintptr_t>(base) % 16 == 0;
  });
}

template <typename scalar_t, int kVec, bool kWriteGrad>
void launch_log_weights_rows(const scalar_t* logits, const scalar_t* x, const scalar_t* h,
                             const scalar_t* prior_logits, const scalar_t* q_logits,
                             scalar_t* log_weights, scalar_t* dlogits, int64_t num_samples,
                             int64_t batch, int64_t data_dim, int64_t latent_dim,
                             cudaStream_t stream) {
  const int64_t samples_per_block = std::clamp<int64_t>(
      num_samples * batch / kTargetRowBlocks, 1, std::min(kMaxSamplesPerBlock, num_samples));
  const int64_t units = batch * ((num_samples + samples_per_block - 1) / samples_per_block);
  const int threads = row_block_threads(std::max(data_dim / kVec, latent_dim));
  log_weights_kernel<scalar_t, kVec, kWriteGrad><<<grid_blocks(units), threads, 0, stream>>>(
      logits, x, h, prior_logits, q_logits, log_weights, dlogits, num_samples, batch, data_dim,
      latent_dim, samples_per_block);
}

// sbn_log_weights, and with kWriteGrad sbn_log_weights_and_grad (dlogits is
// null without it; a null pointer counts as aligned).
template <typename scalar_t, bool kWriteGrad>
cudaError_t log_weights_forward(const scalar_t* logits, const scalar_t* x, const scalar_t* h,
                                const scalar_t* prior_logits, const scalar_t* q_logits,
                                scalar_t* log_weights, scalar_t* dlogits, int64_t num_samples,
                                int64_t batch, int64_t data_dim, int64_t latent_dim,
                                cudaStream_t stream) {
  if (num_samples * batch == 0) return cudaSuccess;
  if (can_pack<scalar_t>(data_dim, {logits, x, dlogits})) {
    launch_log_weights_rows<scalar_t, kPackWidth<scalar_t>, kWriteGrad>(
        logits, x, h, prior_logits, q_logits, log_weights, dlogits, num_samples, batch,
        data_dim, latent_dim, stream);
  } else {
    launch_log_weights_rows<scalar_t, 1, kWriteGrad>(logits, x, h, prior_logits, q_logits,
                                                     log_weights, dlogits, num_samples, batch,
                                                     data_dim, latent_dim, stream);
  }
  return cudaGetLastError();
}

template <typename scalar_t, int kVec, bool kRecompute>
void launch_logits_grad_rows(const scalar_t* grad_log_weights, const scalar_t* source,
                             const scalar_t* x, scalar_t* grad_logits, int64_t num_rows,
                             int64_t batch, int64_t data_dim, cudaStream_t stream) {
  const int threads = row_block_threads(data_dim / kVec);
  logits_grad_kernel<scalar_t, kVec, kRecompute><<<grid_blocks(num_rows), threads, 0, stream>>>(
      grad_log_weights, source, x, grad_logits, num_rows, batch, data_dim);
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
  if (num_rows > 0 && data_dim > 0) {
    if (can_pack<scalar_t>(data_dim, {source, x, grad_logits})) {
      launch_logits_grad_rows<scalar_t, kPackWidth<scalar_t>, kRecompute>(
          grad_log_weights, source, x, grad_logits, num_rows, batch, data_dim, stream);
    } else {
      launch_logits_grad_rows<scalar_t, 1, kRecompute>(grad_log_weights, source, x,
                                                       grad_logits, num_rows, batch, data_dim,
                                                       stream);
    }
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  if (latent_dim == 0) return cudaSuccess;
  const dim3 column_threads(kColumnTile, kSampleLanes);
  if (batch > 0) {
    q_grads_kernel<scalar_t><<<column_grid(batch * latent_dim), column_threads, 0, stream>>>(
        grad_log_weights, h, prior_logits, q_logits, grad_h, grad_q, num_samples, batch,
        latent_dim);
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  prior_grad_kernel<scalar_t><<<column_grid(latent_dim), column_threads, 0, stream>>>(
      grad_log_weights, h, prior_logits, grad_prior, num_rows, latent_dim);
  return cudaGetLastError();
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers.

template <typename scalar_t>
cudaError_t launch_sbn_log_weights(const scalar_t* logits, const scalar_t* x, const scalar_t* h,
                                   const scalar_t* prior_logits, const scalar_t* q_logits,
                                   scalar_t* log_weights, int64_t num_samples, int64_t batch,
                                   int64_t data_dim, int64_t latent_dim, cudaStream_t stream) {
  return log_weights_forward<scalar_t, false>(logits, x, h, prior_logits, q_logits, log_weights,
                                              nullptr, num_samples, batch, data_dim, latent_dim,
                                              stream);
}

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
