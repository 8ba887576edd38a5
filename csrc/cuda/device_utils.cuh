// Device helpers shared by the CUDA kernels (after pyg-lib's cuda/utils.cuh):
// the accurate libm forms per dtype, softplus and sigmoid from e = exp(-|l|),
// 16-byte packs, warp and block sums, and grid sizes. No torch header: the
// kernels of the .cu files that include it compile with plain nvcc.
#pragma once

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {

constexpr int kWarpSize = 32;
constexpr int kMaxRowThreads = 256;                 // threads of a row block, at most
constexpr int kItemsPerThread = 4;                  // work per thread a row block aims for
constexpr int64_t kMaxBlocks = int64_t{1} << 20;    // grid-stride loops cover the rest

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

template <typename scalar_t>
__device__ __forceinline__ scalar_t quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() { return CUDART_NAN_F; }
template <>
__device__ __forceinline__ double quiet_nan<double>() { return CUDART_NAN; }

// softplus and sigmoid are written with e = exp(-|l|), so that no exponent
// overflows at l = +-80 and beyond; a pass that needs both computes e once.
template <typename scalar_t>
__device__ __forceinline__ scalar_t exp_neg_abs(scalar_t logit) {
  return exp_of(-abs_of(logit));
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t softplus_given(scalar_t logit, scalar_t e) {
  const scalar_t positive_part = logit > scalar_t(0) ? logit : scalar_t(0);
  return positive_part + log1p_of(e);
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t sigmoid_given(scalar_t logit, scalar_t e) {
  return logit >= scalar_t(0) ? scalar_t(1) / (scalar_t(1) + e) : e / (scalar_t(1) + e);
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t softplus(scalar_t logit) {
  return softplus_given(logit, exp_neg_abs(logit));
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t sigmoid(scalar_t logit) {
  return sigmoid_given(logit, exp_neg_abs(logit));
}

// ---------------------------------------------------------------------------
// Reductions and packs.

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

// Block-wide sum, valid in thread 0; blockDim.x must be a multiple of 32 and
// at most kMaxRowThreads.
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

// ---------------------------------------------------------------------------
// Launch helpers (host).

inline unsigned grid_blocks(int64_t units) {
  return static_cast<unsigned>(std::min(units, kMaxBlocks));
}

// Enough warps that each thread has about kItemsPerThread items of its row:
// short rows do not idle most of a 256-thread block, long rows get all 256.
inline int row_block_threads(int64_t row_items) {
  const int64_t per_warp = int64_t{kWarpSize} * kItemsPerThread;
  const int64_t warps = (row_items + per_warp - 1) / per_warp;
  return static_cast<int>(std::clamp<int64_t>(warps, 1, kMaxRowThreads / kWarpSize)) *
         kWarpSize;
}

}  // namespace genvar::cuda
