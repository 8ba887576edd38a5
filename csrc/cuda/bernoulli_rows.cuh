// What the IWAE and SBN log-weight kernels share. Both have p(x | tau) a
// product of Bernoullis with logits[k, B, D]: the data term of a row of
// logits, sum_d x_d l_d - softplus(l_d), and its gradient x_d - sigmoid(l_d)
// are the same, and so is the backward's grad_logits pass. Both reduce [k, C]
// arrays over k column by column with the same tile. The per-sample latent
// terms, which differ, stay in iwae_kernel.cu and sbn_kernel.cu.
//
// Everything here has internal linkage on purpose: each .cu file that
// includes it gets its own copy of these kernels, as when each file wrote
// them out, so no kernel symbol is shared between two files' device modules.
// No torch header: the including files' kernels still compile with plain nvcc.
#pragma once

#include "device_utils.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace genvar::cuda {
namespace {

// ---------------------------------------------------------------------------
// Column tiles: a [k, C] array reduced over k for each column. A block takes
// 32 adjacent columns (coalesced row reads) and 16 threads per column split
// the k loop (k can be 5000), combined in a fixed order so results are
// deterministic. Sums over k are in accumulate_t (double) from the first term
// to the combined total, for float32 too.

constexpr int kColumnTile = 32;     // columns per block: a warp reads 32 adjacent ones
constexpr int kSampleLanes = 16;    // threads per column, splitting its loop over k
constexpr int kColumnThreads = kColumnTile * kSampleLanes;
// Two 512-thread blocks per SM: up to 64 registers. Without a minimum, ptxas
// for sm_80 held the double-accumulating column kernels to 40 and spilled.
constexpr int kColumnBlocksPerSm = 2;

// The type of every sum over k, whatever scalar_t is (as on the CPU).
using accumulate_t = double;

struct Add {
  template <typename value_t>
  __device__ value_t operator()(value_t a, value_t b) const {
    return a + b;
  }
};

// Max{}(value, running): a NaN value loses (NaN > x is false), so a running
// max that starts at -inf never becomes NaN.
struct Max {
  template <typename value_t>
  __device__ value_t operator()(value_t a, value_t b) const {
    return a > b ? a : b;
  }
};

// Two sums over k carried together (added member by member).
struct SumPair {
  accumulate_t first;
  accumulate_t second;
};

__device__ __forceinline__ SumPair operator+(SumPair a, SumPair b) {
  return {a.first + b.first, a.second + b.second};
}

// Every thread of a column gets the combined value of its column's lanes,
// lane 0 first. All threads of the block must call it (it holds barriers).
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

inline unsigned column_grid(int64_t columns) {
  return grid_blocks((columns + kColumnTile - 1) / kColumnTile);
}

inline dim3 column_block() { return dim3(kColumnTile, kSampleLanes); }

// ---------------------------------------------------------------------------
// Rows of logits, read in 16-byte packs where every row start is aligned: D a
// multiple of the pack width and 16-byte-aligned base pointers (a sliced
// tensor may not be; a null pointer counts as aligned).

template <typename scalar_t>
constexpr int kPackWidth = 16 / static_cast<int>(sizeof(scalar_t));

template <typename scalar_t>
bool can_pack(int64_t data_dim, std::initializer_list<const void*> bases) {
  if (data_dim % kPackWidth<scalar_t> != 0) return false;
  return std::all_of(bases.begin(), bases.end(), [](const void* base) {
    return reinterpret_cast<std::uintptr_t>(base) % 16 == 0;
  });
}

// Calls launch(std::integral_constant<int, kVec>{}) with kVec the pack width
// when `bases` allow it, else 1, and returns the launch error.
template <typename scalar_t, typename Launch>
cudaError_t with_pack_width(int64_t data_dim, std::initializer_list<const void*> bases,
                            Launch launch) {
  if (can_pack<scalar_t>(data_dim, bases)) {
    launch(std::integral_constant<int, kPackWidth<scalar_t>>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
  return cudaGetLastError();
}

// This thread's share (packs threadIdx.x, + blockDim.x, ...) of a row's data
// term sum_d x_d l_d - softplus(l_d). With kWriteGrad, also writes the row's
// dlogits[d] = x_d - sigmoid(l_d), from the same e = exp(-|l_d|).
template <typename scalar_t, int kVec, bool kWriteGrad>
__device__ __forceinline__ scalar_t data_term_share(const scalar_t* __restrict__ logit_row,
                                                    const scalar_t* __restrict__ x_row,
                                                    scalar_t* __restrict__ dlogit_row,
                                                    int64_t data_dim, scalar_t total) {
  using Pack = Packed<scalar_t, kVec>;
  const int64_t num_packs = data_dim / kVec;
  const Pack* logits = reinterpret_cast<const Pack*>(logit_row);
  const Pack* targets = reinterpret_cast<const Pack*>(x_row);
  for (int64_t p = threadIdx.x; p < num_packs; p += blockDim.x) {
    const Pack logit = logits[p];
    const Pack target = targets[p];
    if constexpr (kWriteGrad) {
      Pack grad;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const scalar_t e = exp_neg_abs(logit.val[i]);
        total += target.val[i] * logit.val[i] - softplus_given(logit.val[i], e);
        grad.val[i] = target.val[i] - sigmoid_given(logit.val[i], e);
      }
      reinterpret_cast<Pack*>(dlogit_row)[p] = grad;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        total += target.val[i] * logit.val[i] - softplus(logit.val[i]);
      }
    }
  }
  return total;
}

// grad_logits[row, :] = grad_log_weights[row] * d log_w[row] / d logits[row, :],
// one block per (k, b) row. kRecompute: the derivative x_d - sigmoid(l_d) is
// recomputed from `source` = logits and x (the ops' `_backward`). Otherwise
// `source` is the dlogits the forward wrote and x is not read (the training
// path's `_and_grad_backward`).
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

// The grad_logits[k, B, D] pass of both ops' backwards (nothing for an empty
// one), from `source` (logits and x with kRecompute, else dlogits, x null).
template <typename scalar_t, bool kRecompute>
cudaError_t launch_logits_grad(const scalar_t* grad_log_weights, const scalar_t* source,
                               const scalar_t* x, scalar_t* grad_logits, int64_t num_rows,
                               int64_t batch, int64_t data_dim, cudaStream_t stream) {
  if (num_rows == 0 || data_dim == 0) return cudaSuccess;
  return with_pack_width<scalar_t>(data_dim, {source, x, grad_logits}, [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    logits_grad_kernel<scalar_t, kVec, kRecompute>
        <<<grid_blocks(num_rows), row_block_threads(data_dim / kVec), 0, stream>>>(
            grad_log_weights, source, x, grad_logits, num_rows, batch, data_dim);
  });
}

}  // namespace
}  // namespace genvar::cuda
