// Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers:
// as easy as 1, 2, 3"), shared by the C++ kernels and CUDA device code, and
// the counter layout of the RBM sampler (genvar_bench/ops/rbm.py is the
// specification; tests/test_rbm_ops.py checks the Random123 known answers).
//
// Plain C++ with no torch header, so nvcc compiles it into kernels; under nvcc
// every function is __host__ __device__ and the high product word is __umulhi.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GENVAR_PHILOX_FN __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define GENVAR_PHILOX_FN inline __attribute__((always_inline))
#else
#define GENVAR_PHILOX_FN inline
#endif

namespace genvar {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // key bumps: golden ratio, sqrt(3) - 1
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

GENVAR_PHILOX_FN void philox_mulhilo(uint32_t a, uint32_t multiplier, uint32_t& hi,
                                     uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, multiplier);
  lo = a * multiplier;
#else
  // A 32 x 32 -> 64-bit product, which compilers vectorise (vpmuludq).
  const uint64_t product = static_cast<uint64_t>(a) * multiplier;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
#endif
}

// Ten rounds on the counter (c0, c1, c2, c3) in place, key (k0, k1).
GENVAR_PHILOX_FN void philox4x32_10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                    uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#elif defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#pragma GCC unroll 10
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(c0, kPhiloxM0, hi0, lo0);
    philox_mulhilo(c2, kPhiloxM1, hi1, lo1);
    const uint32_t next0 = hi1 ^ c1 ^ k0, next2 = hi0 ^ c3 ^ k1;
    c0 = next0;
    c1 = lo1;
    c2 = next2;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// The stream of one layer at one step of an RBM call: unit (row r, column j)
// uses word j % 4 of philox4x32_10(counter = (j / 4, r, step_lo, step_hi),
// key = (seed_lo, seed_hi)).
struct PhiloxLayerStream {
  uint32_t step_lo, step_hi, key0, key1;
};

GENVAR_PHILOX_FN PhiloxLayerStream philox_layer_stream(uint64_t seed, uint64_t step) {
  return {static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
          static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
}

// The four words of columns 4 block .. 4 block + 3 of `row`.
GENVAR_PHILOX_FN void philox_block_words(const PhiloxLayerStream& stream, uint32_t block,
                                         uint32_t row, uint32_t& x0, uint32_t& x1,
                                         uint32_t& x2, uint32_t& x3) {
  x0 = block;
  x1 = row;
  x2 = stream.step_lo;
  x3 = stream.step_hi;
  philox4x32_10(x0, x1, x2, x3, stream.key0, stream.key1);
}

// u = (x >> 8) 2^-24 in [0, 1): 24 bits, exact in float and double.
template <typename scalar_t>
GENVAR_PHILOX_FN scalar_t philox_uniform(uint32_t word) {
  return static_cast<scalar_t>(static_cast<int32_t>(word >> 8)) *
         static_cast<scalar_t>(5.9604644775390625e-08);
}

}  // namespace genvar
