// CUDA kernels of the IWAE ops and their launchers.
//
// No torch header is included: the kernels then compile with plain nvcc,
// also where the installed torch ships no CUDA headers, and iwae_cuda.cpp
// keeps all tensor handling. Sums run in scalar_t (float for float32): the
// loops are short or split across threads, so float rounding stays at the
// level of the float32 reference.
#include "iwae_launchers.h"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace genvar::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxRowThreads = 256;
constexpr int kPacksPerThread = 4;  // work per thread a row kernel aims for
constexpr int kColumnTile = 32;     // columns per block: a warp reads 32 adjacent ones
constexpr int kSampleLanes = 16;    // threads per column, splitting its loop over k
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride loops cover the rest

// ---------------------------------------------------------------------------
// Scalar math. The accurate libm forms on purpose: __expf loses accuracy for
// large arguments, and both float and double must match the CPU reference.

__device__ __forceinline__ float exp_of(float value) { return expf(value); }
__device__ __forceinline__ double exp_of(double value) { return ::exp(value); }
__device__ __forceinline__ float log_of(float value) { return logf(value); }
__device__ __forceinline__ double log_of(double value) { return ::log(value); }
__device__ __forceinline__ float log1p_of(float value) { return log1pf(value); }
__device__ __forceinline__ double log1p_of(double value) { return ::log1p(value); }
__device__ __forceinline__ float abs_of(float value) { return fabsf(value); }
__device__ __forceinline__ double abs_of(double value) { return ::fabs(value); }

template <typename scalar_t>
__device__ __forceinline__ scalar_t negative_infinity();
template <>
__device__ __forceinline__ float negative_infinity<float>() { return -CUDART_INF_F; }
template <>
__device__ __forceinline__ double negative_infinity<double>() { return -CUDART_INF; }

// Written with exp(-|l|) so that no exponent overflows at l = +-80 and beyond.
template <typename scalar_t>
__device__ __forceinline__ scalar_t softplus(scalar_t logit) {
  const scalar_t positive_part = logit > scalar_t(0) ? logit : scalar_t(0);
  return positive_part + log1p_of(exp_of(-abs_of(logit)));
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t sigmoid(scalar_t logit) {
  const scalar_t e = exp_of(-abs_of(logit));
  return logit >= scalar_t(0) ? scalar_t(1) / (scalar_t(1) + e) : e / (scalar_t(1) + e);
}

// log p(z) - log q(z | x) for one latent coordinate; the log(2 pi) terms cancel.
template <typename scalar_t>
__device__ __forceinline__ scalar_t latent_term(scalar_t z, scalar_t mean, scalar_t logvar) {
  const scalar_t diff = z - mean;
  return scalar_t(0.5) * (diff * diff * exp_of(-logvar) + logvar - z * z);
}

// ---------------------------------------------------------------------------
// Row kernels: one block per (k, b) row of logits, threads striding over D.

// A 16-byte load of kVec scalars; the launcher checks the alignment.
template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) Packed {
  scalar_t val[kVec];
};

template <typename scalar_t>
__device__ __forceinline__ scalar_t warp_sum(scalar_t value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Block-wide sum, valid in thread 0; blockDim.x must be a multiple of 32.
template <typename scalar_t>
__device__ scalar_t block_sum(scalar_t value) {
  __shared__ scalar_t warp_totals[kMaxRowThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  value = warp_sum(value);
  if (lane == 0) warp_totals[warp] = value;
  __syncthreads();
  const int num_warps = blockDim.x / kWarpSize;
  value = threadIdx.x < num_warps ? warp_totals[threadIdx.x] : scalar_t(0);
  if (warp == 0) value = warp_sum(value);
  __syncthreads();  // warp_totals is reused by the block's next row
  return value;
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kMaxRowThreads)
    log_weights_kernel(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                       const scalar_t* __restrict__ z, const scalar_t* __restrict__ mu,
                       const scalar_t* __restrict__ logvar, scalar_t* __restrict__ log_weights,
                       int64_t num_rows, int64_t batch, int64_t data_dim, int64_t latent_dim) {
  using Pack = Packed<scalar_t, kVec>;
  const int64_t num_packs = data_dim / kVec;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    const int64_t b = row % batch;
    const Pack* logit_row = reinterpret_cast<const Pack*>(logits + row * data_dim);
    const Pack* x_row = reinterpret_cast<const Pack*>(x + b * data_dim);
    scalar_t total = 0;
    for (int64_t p = threadIdx.x; p < num_packs; p += blockDim.x) {
      const Pack logit = logit_row[p];
      const Pack target = x_row[p];
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        total += target.val[i] * logit.val[i] - softplus(logit.val[i]);
      }
    }
    for (int64_t j = threadIdx.x; j < latent_dim; j += blockDim.x) {
      total += latent_term(z[row * latent_dim + j], mu[b * latent_dim + j],
                           logvar[b * latent_dim + j]);
    }
    total = block_sum(total);
    if (threadIdx.x == 0) log_weights[row] = total;
  }
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kMaxRowThreads)
    logits_grad_kernel(const scalar_t* __restrict__ grad_log_weights,
                       const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                       scalar_t* __restrict__ grad_logits, int64_t num_rows, int64_t batch,
                       int64_t data_dim) {
  using Pack = Packed<scalar_t, kVec>;
  const int64_t num_packs = data_dim / kVec;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    const scalar_t grad = grad_log_weights[row];
    const Pack* logit_row = reinterpret_cast<const Pack*>(logits + row * data_dim);
    const Pack* x_row = reinterpret_cast<const Pack*>(x + (row % batch) * data_dim);
    Pack* grad_row = reinterpret_cast<Pack*>(grad_logits + row * data_dim);
    for (int64_t p = threadIdx.x; p < num_packs; p += blockDim.x) {
      const Pack logit = logit_row[p];
      const Pack target = x_row[p];
      Pack result;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        result.val[i] = grad * (target.val[i] - sigmoid(logit.val[i]));
      }
      grad_row[p] = result;
    }
  }
}

// ---------------------------------------------------------------------------
// Column kernels: a [k, C] array reduced over k for each column. A block
// takes 32 adjacent columns (coalesced row reads) and 16 threads per column
// split the k loop (k can be 5000), combined in a fixed order so results are
// deterministic.

template <typename scalar_t>
struct SumPair {
  scalar_t first;
  scalar_t second;
};

struct Add {
  template <typename scalar_t>
  __device__ scalar_t operator()(scalar_t a, scalar_t b) const {
    return a + b;
  }
};

struct AddPairs {
  template <typename scalar_t>
  __device__ SumPair<scalar_t> operator()(SumPair<scalar_t> a, SumPair<scalar_t> b) const {
    return {a.first + b.first, a.second + b.second};
  }
};

// Every thread of a column gets the combined value of its column's lanes.
template <typename State, typename Combine>
__device__ State combine_sample_lanes(State partial, Combine combine) {
  __shared__ State partials[kSampleLanes][kColumnTile];
  partials[threadIdx.y][threadIdx.x] = partial;
  __syncthreads();
  State total = partials[0][threadIdx.x];
  for (int lane = 1; lane < kSampleLanes; ++lane) {
    total = combine(total, partials[lane][threadIdx.x]);
  }
  __syncthreads();  // partials is reused by the block's next tile
  return total;
}

// Fused: grad_z needs the same z and g reads as the sums over k for grad_mu
// and grad_logvar, so one pass over z serves all three. Columns are (b, j).
template <typename scalar_t>
__global__ void __launch_bounds__(kColumnTile * kSampleLanes)
    latent_grads_kernel(const scalar_t* __restrict__ grad_log_weights,
                        const scalar_t* __restrict__ z, const scalar_t* __restrict__ mu,
                        const scalar_t* __restrict__ logvar, scalar_t* __restrict__ grad_z,
                        scalar_t* __restrict__ grad_mu, scalar_t* __restrict__ grad_logvar,
                        int64_t num_samples, int64_t batch, int64_t latent_dim) {
  const int64_t columns = batch * latent_dim;
  for (int64_t tile = blockIdx.x; tile * kColumnTile < columns; tile += gridDim.x) {
    const int64_t column = tile * kColumnTile + threadIdx.x;
    const bool active = column < columns;
    SumPair<scalar_t> sums{0, 0};  // grad_mu, grad_logvar
    if (active) {
      const int64_t b = column / latent_dim;
      const scalar_t mean = mu[column];
      const scalar_t precision = exp_of(-logvar[column]);
      for (int64_t s = threadIdx.y; s < num_samples; s += kSampleLanes) {
        const scalar_t grad = grad_log_weights[s * batch + b];
        const scalar_t z_value = z[s * columns + column];
        const scalar_t diff = z_value - mean;
        const scalar_t scaled = diff * precision;
        grad_z[s * columns + column] = grad * (scaled - z_value);
        sums.first -= grad * scaled;
        sums.second += grad * (scalar_t(0.5) - scalar_t(0.5) * diff * scaled);
      }
    }
    sums = combine_sample_lanes(sums, AddPairs{});
    if (active && threadIdx.y == 0) {
      grad_mu[column] = sums.first;
      grad_logvar[column] = sums.second;
    }
  }
}

// Online logsumexp: sum holds sum(exp(v - max)) over the values seen.
template <typename scalar_t>
struct LseState {
  scalar_t max;
  scalar_t sum;
};

// exp(from - to), but exactly 1 when equal so that -inf or +inf maxima give
// no inf - inf = NaN.
template <typename scalar_t>
__device__ __forceinline__ scalar_t rescale(scalar_t from, scalar_t to) {
  return from == to ? scalar_t(1) : exp_of(from - to);
}

struct CombineLse {
  template <typename scalar_t>
  __device__ LseState<scalar_t> operator()(LseState<scalar_t> a, LseState<scalar_t> b) const {
    const scalar_t max = a.max > b.max ? a.max : b.max;  // max is never NaN
    return {max, a.sum * rescale(a.max, max) + b.sum * rescale(b.max, max)};
  }
};

// -inf adds nothing; a NaN keeps max untouched but poisons sum, which then
// stays NaN through every combine (NaN * 0 is NaN).
template <typename scalar_t>
__device__ __forceinline__ LseState<scalar_t> lse_of(scalar_t log_weight) {
  const scalar_t neg_inf = negative_infinity<scalar_t>();
  if (log_weight != log_weight) return {neg_inf, log_weight};
  return {log_weight, log_weight == neg_inf ? scalar_t(0) : scalar_t(1)};
}

// An all -inf column has max -inf and sum 0 (NaN if it held a NaN): its
// weights are that sum, so 0 rather than 0 / 0.
template <typename scalar_t>
__device__ __forceinline__ scalar_t softmax_weight(scalar_t log_weight,
                                                   LseState<scalar_t> total) {
  if (total.max == negative_infinity<scalar_t>()) return total.sum;
  return rescale(log_weight, total.max) / total.sum;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kColumnTile * kSampleLanes)
    bound_kernel(const scalar_t* __restrict__ log_weights, scalar_t* __restrict__ bound,
                 scalar_t* __restrict__ weights, int64_t num_samples, int64_t batch) {
  const scalar_t log_num_samples = log_of(static_cast<scalar_t>(num_samples));
  for (int64_t tile = blockIdx.x; tile * kColumnTile < batch; tile += gridDim.x) {
    const int64_t b = tile * kColumnTile + threadIdx.x;
    const bool active = b < batch;
    LseState<scalar_t> state{negative_infinity<scalar_t>(), scalar_t(0)};
    for (int64_t s = threadIdx.y; active && s < num_samples; s += kSampleLanes) {
      state = CombineLse{}(state, lse_of(log_weights[s * batch + b]));
    }
    state = combine_sample_lanes(state, CombineLse{});
    if (!active) continue;  // no barrier follows in this tile
    // max + log(sum) is -inf + -inf = -inf for an all -inf column.
    if (threadIdx.y == 0) bound[b] = state.max + log_of(state.sum) - log_num_samples;
    for (int64_t s = threadIdx.y; s < num_samples; s += kSampleLanes) {
      weights[s * batch + b] = softmax_weight(log_weights[s * batch + b], state);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kColumnTile * kSampleLanes)
    bound_grad_kernel(const scalar_t* __restrict__ grad_bound,
                      const scalar_t* __restrict__ grad_weights,
                      const scalar_t* __restrict__ weights,
                      scalar_t* __restrict__ grad_log_weights, int64_t num_samples,
                      int64_t batch) {
  for (int64_t tile = blockIdx.x; tile * kColumnTile < batch; tile += gridDim.x) {
    const int64_t b = tile * kColumnTile + threadIdx.x;
    const bool active = b < batch;
    scalar_t dot = 0;  // sum over k of weights * grad_weights
    for (int64_t s = threadIdx.y; active && s < num_samples; s += kSampleLanes) {
      dot += weights[s * batch + b] * grad_weights[s * batch + b];
    }
    dot = combine_sample_lanes(dot, Add{});
    if (!active) continue;  // no barrier follows in this tile
    for (int64_t s = threadIdx.y; s < num_samples; s += kSampleLanes) {
      const int64_t index = s * batch + b;
      grad_log_weights[index] =
          weights[index] * (grad_bound[b] + grad_weights[index] - dot);
    }
  }
}

// ---------------------------------------------------------------------------
// Launch helpers.

unsigned grid_blocks(int64_t units) {
  return static_cast<unsigned>(std::min(units, kMaxBlocks));
}

// Enough warps that each thread has about kPacksPerThread items of its row:
// short rows do not idle most of a 256-thread block, long rows get all 256.
int row_block_threads(int64_t row_items) {
  const int64_t per_warp = int64_t{kWarpSize} * kPacksPerThread;
  const int64_t warps = (row_items + per_warp - 1) / per_warp;
  return static_cast<int>(std::clamp<int64_t>(warps, 1, kMaxRowThreads / kWarpSize)) *
         kWarpSize;
}

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

template <typename scalar_t, int kVec>
void launch_log_weights_rows(const scalar_t* logits, const scalar_t* x, const scalar_t* z,
                             const scalar_t* mu, const scalar_t* logvar, scalar_t* log_weights,
                             int64_t num_rows, int64_t batch, int64_t data_dim,
                             int64_t latent_dim, cudaStream_t stream) {
  const int threads = row_block_threads(std::max(data_dim / kVec, latent_dim));
  log_weights_kernel<scalar_t, kVec><<<grid_blocks(num_rows), threads, 0, stream>>>(
      logits, x, z, mu, logvar, log_weights, num_rows, batch, data_dim, latent_dim);
}

template <typename scalar_t, int kVec>
void launch_logits_grad_rows(const scalar_t* grad_log_weights, const scalar_t* logits,
                             const scalar_t* x, scalar_t* grad_logits, int64_t num_rows,
                             int64_t batch, int64_t data_dim, cudaStream_t stream) {
  const int threads = row_block_threads(data_dim / kVec);
  logits_grad_kernel<scalar_t, kVec><<<grid_blocks(num_rows), threads, 0, stream>>>(
      grad_log_weights, logits, x, grad_logits, num_rows, batch, data_dim);
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers.

template <typename scalar_t>
cudaError_t launch_iwae_log_weights(const scalar_t* logits, const scalar_t* x,
                                    const scalar_t* z, const scalar_t* mu,
                                    const scalar_t* logvar, scalar_t* log_weights,
                                    int64_t num_samples, int64_t batch, int64_t data_dim,
                                    int64_t latent_dim, cudaStream_t stream) {
  const int64_t num_rows = num_samples * batch;
  if (num_rows == 0) return cudaSuccess;
  if (can_pack<scalar_t>(data_dim, {logits, x})) {
    launch_log_weights_rows<scalar_t, kPackWidth<scalar_t>>(
        logits, x, z, mu, logvar, log_weights, num_rows, batch, data_dim, latent_dim, stream);
  } else {
    launch_log_weights_rows<scalar_t, 1>(logits, x, z, mu, logvar, log_weights, num_rows,
                                         batch, data_dim, latent_dim, stream);
  }
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_iwae_log_weights_backward(
    const scalar_t* grad_log_weights, const scalar_t* logits, const scalar_t* x,
    const scalar_t* z, const scalar_t* mu, const scalar_t* logvar, scalar_t* grad_logits,
    scalar_t* grad_z, scalar_t* grad_mu, scalar_t* grad_logvar, int64_t num_samples,
    int64_t batch, int64_t data_dim, int64_t latent_dim, cudaStream_t stream) {
  const int64_t num_rows = num_samples * batch;
  if (num_rows > 0 && data_dim > 0) {
    if (can_pack<scalar_t>(data_dim, {logits, x, grad_logits})) {
      launch_logits_grad_rows<scalar_t, kPackWidth<scalar_t>>(
          grad_log_weights, logits, x, grad_logits, num_rows, batch, data_dim, stream);
    } else {
      launch_logits_grad_rows<scalar_t, 1>(grad_log_weights, logits, x, grad_logits,
                                           num_rows, batch, data_dim, stream);
    }
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  const int64_t columns = batch * latent_dim;
  if (columns == 0) return cudaSuccess;
  latent_grads_kernel<scalar_t><<<column_grid(columns), dim3(kColumnTile, kSampleLanes), 0,
                                  stream>>>(grad_log_weights, z, mu, logvar, grad_z, grad_mu,
                                            grad_logvar, num_samples, batch, latent_dim);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_iwae_bound(const scalar_t* log_weights, scalar_t* bound, scalar_t* weights,
                              int64_t num_samples, int64_t batch, cudaStream_t stream) {
  if (batch == 0 || num_samples == 0) return cudaSuccess;
  bound_kernel<scalar_t><<<column_grid(batch), dim3(kColumnTile, kSampleLanes), 0, stream>>>(
      log_weights, bound, weights, num_samples, batch);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_iwae_bound_backward(const scalar_t* grad_bound,
                                       const scalar_t* grad_weights, const scalar_t* weights,
                                       scalar_t* grad_log_weights, int64_t num_samples,
                                       int64_t batch, cudaStream_t stream) {
  if (batch == 0 || num_samples == 0) return cudaSuccess;
  bound_grad_kernel<scalar_t><<<column_grid(batch), dim3(kColumnTile, kSampleLanes), 0,
                                stream>>>(grad_bound, grad_weights, weights, grad_log_weights,
                                          num_samples, batch);
  return cudaGetLastError();
}

#define GENVAR_INSTANTIATE_IWAE_LAUNCHERS(scalar_t)                                          \
  template cudaError_t launch_iwae_log_weights<scalar_t>(                                   \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,  \
      scalar_t*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                         \
  template cudaError_t launch_iwae_log_weights_backward<scalar_t>(                          \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,  \
      const scalar_t*, scalar_t*, scalar_t*, scalar_t*, scalar_t*, int64_t, int64_t,        \
      int64_t, int64_t, cudaStream_t);                                                      \
  template cudaError_t launch_iwae_bound<scalar_t>(const scalar_t*, scalar_t*, scalar_t*,   \
                                                   int64_t, int64_t, cudaStream_t);         \
  template cudaError_t launch_iwae_bound_backward<scalar_t>(                                \
      const scalar_t*, const scalar_t*, const scalar_t*, scalar_t*, int64_t, int64_t,       \
      cudaStream_t);

GENVAR_INSTANTIATE_IWAE_LAUNCHERS(float)
GENVAR_INSTANTIATE_IWAE_LAUNCHERS(double)

#undef GENVAR_INSTANTIATE_IWAE_LAUNCHERS

}  // namespace genvar::cuda
