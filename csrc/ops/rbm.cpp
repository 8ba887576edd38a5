// genvar::rbm_gibbs (RBM Gibbs sweeps with a counter-based Philox stream): its
// schema, the argument checks every backend shares (rbm.h), and the CPU
// kernel, registered here; the CUDA one is ../cuda/rbm_kernel.cu.
#include "rbm.h"
#include "checks.h"
#include "../philox.h"
#include "../cpu/fast_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

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

// ---------------------------------------------------------------------------
// CPU kernel of rbm_gibbs: one parallel region over chains (chains are
// independent, so a thread runs its chains through every sweep with no
// barrier), buffers allocated once per call and reused by every sweep.
//
// Each half-sweep is a product, x [n, K] times M [K, N] (v W for the hidden
// layer, h W' for the visible one), then one fused pass per row: bias, beta,
// sigmoid, the row's Philox words (../philox.h) and the Bernoulli draw, which
// also rebuilds the row's active and inactive index lists. The product is
// either MKL's GEMM (at::mm_out, sequential inside the region) or the
// binary-gather product below; see kGatherMaxWork for the rule.
// Either way a row's numbers do not depend on the thread layout, and float64
// samples equal rbm_gibbs_ref's: sums in another order and the fused
// beta * pre + shift (FMA in the AVX2/AVX-512 clones) move p by a few ulp,
// which flips a draw only if a 24-bit u lies within those ulp of p.

// ---------------------------------------------------------------------------
// Binary rows of the RBM sweeps (CPU): their index lists, and the
// binary-gather product. For binary rows x [n, K] given by active/inactive
// index lists, out[r, :] = x[r, :] M for M [K, N] is the sum of M's rows at
// the active units, or M's column totals minus its rows at the inactive ones
// when more than half are active: at most K / 2 row adds per output row, adds
// rather than FMAs.
//
// M is a zero-padded copy, [K, stride] with stride a multiple of one vector
// (64 bytes), so every load is a whole vector, packed in panels of
// kTileVectors vectors (128 floats, 64 doubles: 8 zmm accumulators), each
// panel one contiguous [K, 512 bytes] block. All rows of a thread go through
// one panel before the next, so the panel in use stays in L2 (400 KB for
// K = 784; Zen 4 has 1 MB per core), and a panel is walked in chunks of
// kChunkRows rows that stay in L1.

namespace genvar::cpu {

constexpr int kTileVectors = 8;

// Index lists of a binary [rows, K] matrix: row r's active units in
// active[r * stride ..], its inactive ones in inactive[r * stride ..], and its
// number of active units in num_active[r]. stride = K + kListSlack: the
// vectorised list builder stores whole vectors past a list's end.
constexpr int64_t kListSlack = 16;

struct BinaryRows {
  const int32_t* active;
  const int32_t* inactive;
  const int32_t* num_active;
  int64_t length;  // K
  int64_t stride;  // K + kListSlack
};

// The active and inactive units of a row x [K], ascending; returns the number
// active. `nonbinary` counts entries neither 0 nor 1 (NaN included). From
// `k` on; the vectorised form below does the first whole vectors.
template <typename scalar_t>
GENVAR_INLINE int32_t index_row_tail(const scalar_t* x, int64_t k, int64_t length,
                                     int32_t* active, int32_t* inactive, int32_t on_count,
                                     int64_t& nonbinary) {
  int32_t off_count = static_cast<int32_t>(k) - on_count;
  for (; k < length; ++k) {  // branch-free: both lists written, one advances
    const scalar_t value = x[k];
    const int32_t on = value != scalar_t(0);
    nonbinary += (value != scalar_t(0)) & (value != scalar_t(1));
    active[on_count] = static_cast<int32_t>(k);
    inactive[off_count] = static_cast<int32_t>(k);
    on_count += on;
    off_count += 1 - on;
  }
  return on_count;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GENVAR_HAVE_AVX512_LISTS 1
// 16 (float) or 8 (double) units a step: each list compressed in a register
// and stored whole (vpcompressd to memory is slow on Zen 4); the lists' slack
// (kListSlack) takes the lanes past their ends.
template <typename scalar_t>
__attribute__((target("avx512f,avx512vl"))) int32_t index_row_avx512(
    const scalar_t* x, int64_t length, int32_t* active, int32_t* inactive,
    int64_t& nonbinary) {
  constexpr int kStep = 64 / sizeof(scalar_t);
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(kStep);
  int32_t on_count = 0, off_count = 0;
  int64_t bad = 0, k = 0;
  for (; k + kStep <= length; k += kStep) {
    __mmask16 on, is_one;
    if constexpr (sizeof(scalar_t) == 4) {
      const __m512 values = _mm512_loadu_ps(x + k);
      on = _mm512_cmp_ps_mask(values, _mm512_setzero_ps(), _CMP_NEQ_UQ);
      is_one = _mm512_cmp_ps_mask(values, _mm512_set1_ps(1.0f), _CMP_EQ_OQ);
    } else {
      const __m512d values = _mm512_loadu_pd(x + k);
      on = _mm512_cmp_pd_mask(values, _mm512_setzero_pd(), _CMP_NEQ_UQ);
      is_one = _mm512_cmp_pd_mask(values, _mm512_set1_pd(1.0), _CMP_EQ_OQ);
    }
    const auto off = static_cast<__mmask16>(~on & ((1u << kStep) - 1));
    _mm512_storeu_si512(active + on_count, _mm512_maskz_compress_epi32(on, index));
    _mm512_storeu_si512(inactive + off_count, _mm512_maskz_compress_epi32(off, index));
    const int count = __builtin_popcount(on);
    on_count += count;
    off_count += kStep - count;
    bad += count - __builtin_popcount(is_one);
    index = _mm512_add_epi32(index, step);
  }
  nonbinary = bad;
  return index_row_tail(x, k, length, active, inactive, on_count, nonbinary);
}
#endif

template <typename scalar_t>
int32_t index_row(const scalar_t* x, int64_t length, int32_t* active, int32_t* inactive,
                  int64_t& nonbinary) {
#if defined(GENVAR_HAVE_AVX512_LISTS)
  static const bool avx512 =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  if (avx512) return index_row_avx512(x, length, active, inactive, nonbinary);
#endif
  nonbinary = 0;
  return index_row_tail(x, 0, length, active, inactive, 0, nonbinary);
}

template <typename scalar_t>
struct Vector {
  typedef scalar_t type __attribute__((vector_size(64)));
  static constexpr int kLanes = 64 / sizeof(scalar_t);
};

// Through memory rather than a return value: vector returns warn of an ABI
// change (-Wpsabi) in the clones without AVX-512.
template <typename scalar_t, typename V>
GENVAR_INLINE void load_vector(const scalar_t* from, V& value) {
  std::memcpy(&value, from, sizeof(value));
}

// out[0, kVectors lanes) = init +- the sum of M's rows list[0 .. count) at
// those columns, accumulated in registers.
template <int kVectors, bool kSubtract, typename scalar_t>
GENVAR_INLINE void gather_tile(const scalar_t* matrix, int64_t stride, const int32_t* list,
                               int64_t count, const scalar_t* init, scalar_t* out) {
  using V = typename Vector<scalar_t>::type;
  constexpr int kLanes = Vector<scalar_t>::kLanes;
  V sum[kVectors];
#pragma GCC unroll 8
  for (int k = 0; k < kVectors; ++k) load_vector(init + k * kLanes, sum[k]);
  for (int64_t t = 0; t < count; ++t) {
    const scalar_t* row = matrix + list[t] * stride;
#pragma GCC unroll 8
    for (int k = 0; k < kVectors; ++k) {
      V term;
      load_vector(row + k * kLanes, term);
      if constexpr (kSubtract) {
        sum[k] -= term;
      } else {
        sum[k] += term;
      }
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < kVectors; ++k) std::memcpy(out + k * kLanes, &sum[k], sizeof(V));
}

// Rows of M a panel is walked in: 48 x 512 bytes = 24 KB, which stays in L1
// (32 KB on Zen 4) while every row of the thread adds its units in that
// range, so M is read from L2 once per panel rather than once per row of x.
// Whole sweeps (float32, 784 x 500, B = 100, density 0.5): 16 rows 22.8 ms,
// 32 rows 19.8 ms, 48 rows 19.0 ms; without chunks (L2-bound) 21.3 ms.
constexpr int64_t kChunkRows = 48;

// The list one row of x is summed over: its active units from zero, or its
// inactive ones subtracted from M's column totals.
struct RowList {
  const int32_t* units;
  int64_t count;
  bool subtract;
};

GENVAR_INLINE RowList row_list(const BinaryRows& x, int64_t row) {
  const int64_t on = x.num_active[row], length = x.length;
  if (on <= length - on) return {x.active + row * x.stride, on, false};
  return {x.inactive + row * x.stride, length - on, true};
}

// out_row[0, kVectors lanes) = init +- the panel's rows units[0 .. count) at
// columns [offset, offset + kVectors lanes).
template <int kVectors, typename scalar_t>
GENVAR_INLINE void gather_row_tile(const scalar_t* panel, int64_t width, int64_t offset,
                                   const RowList& list, const int32_t* units, int64_t count,
                                   const scalar_t* init, scalar_t* out_row) {
  if (list.subtract) {
    gather_tile<kVectors, true>(panel + offset, width, units, count, init, out_row);
  } else {
    gather_tile<kVectors, false>(panel + offset, width, units, count, init, out_row);
  }
}

// out[r, 0 .. stride) for rows [begin, end) of x; out rows are `stride` long.
// `packed` holds M [K, stride] in panels (pack_panels); totals [stride] holds
// M's column sums, zeros [kTileVectors lanes] zeros. Each panel is walked in
// chunks of kChunkRows rows of M; a row of x keeps its running sum in `out`
// and its place in its (ascending) list in cursors[row - begin].
template <typename scalar_t>
GENVAR_INLINE void gather_product_impl(const scalar_t* packed, int64_t stride,
                                       const scalar_t* totals, const scalar_t* zeros,
                                       const BinaryRows& x, int64_t begin, int64_t end,
                                       scalar_t* out, int64_t* cursors) {
  constexpr int64_t kLanes = Vector<scalar_t>::kLanes, kPanel = kTileVectors * kLanes;
  for (int64_t column = 0; column < stride; column += kPanel) {
    const scalar_t* panel = packed + x.length * column;
    const int64_t width = std::min(kPanel, stride - column), vectors = width / kLanes;
    for (int64_t row = begin; row < end; ++row) cursors[row - begin] = 0;
    for (int64_t chunk = 0; chunk < std::max<int64_t>(x.length, 1); chunk += kChunkRows) {
      const int64_t chunk_end = chunk + kChunkRows;
      for (int64_t row = begin; row < end; ++row) {
        const RowList list = row_list(x, row);
        const int64_t first = cursors[row - begin];
        int64_t last = first;
        while (last < list.count && list.units[last] < chunk_end) ++last;
        cursors[row - begin] = last;
        scalar_t* out_row = out + row * stride + column;
        const scalar_t* init = chunk > 0 ? out_row : (list.subtract ? totals + column : zeros);
        const int32_t* units = list.units + first;
        if (vectors == kTileVectors) {
          gather_row_tile<kTileVectors>(panel, width, 0, list, units, last - first, init,
                                        out_row);
          continue;
        }
        int64_t at = 0;  // the last, narrower panel: 4 + 2 + 1 vectors
        if (vectors & 4) {
          gather_row_tile<4>(panel, width, at, list, units, last - first,
                             init == zeros ? zeros : init + at, out_row + at);
          at += 4 * kLanes;
        }
        if (vectors & 2) {
          gather_row_tile<2>(panel, width, at, list, units, last - first,
                             init == zeros ? zeros : init + at, out_row + at);
          at += 2 * kLanes;
        }
        if (vectors & 1) {
          gather_row_tile<1>(panel, width, at, list, units, last - first,
                             init == zeros ? zeros : init + at, out_row + at);
        }
      }
    }
  }
}

}  // namespace genvar::cpu

namespace genvar::cpu {
namespace {

// The product rule, from measurements on this project's 2-core EPYC (Zen 4,
// AVX-512, 32 KB L1 and 1 MB L2 per core): D = 784, H = 500, B = 100 chains
// (50 per thread), W ~ N(0, 0.05^2), equal biases setting the densities; f is
// the fraction of M's rows the gather reads, min(active, inactive) / K
// averaged over rows and both layers (at most 1/2). Medians of whole calls,
// gather / GEMM (GENVAR_RBM_PRODUCT forcing one):
//
//   25 sweeps          density v/h   f      float32         float64
//                      0.02/0.02    0.02    8.7 / 25.9 ms   21.3 / 61.9 ms
//                      0.13/0.13    0.13   12.2 / 26.1     32.9 / 67.0
//                      0.29/0.31    0.30   16.0 / 26.3     50.6 / 76.5
//                      0.52/0.53    0.47   20.5 / 26.0     68.3 / 84.1
//                      0.71/0.71    0.29   15.9 / 25.9     46.2 / 71.9
//                      0.85/0.83    0.16   12.8 / 25.7     35.2 / 66.1
//                      0.97/0.96    0.04    9.4 / 25.6     22.3 / 59.9
//
// Per product the gather wins at every density in both dtypes (by 0.11 ms a
// product at f = 0.47 in float32, by 0.34 ms at f = 0.13), so the per-product
// threshold kGatherMaxWork is 1/2, i.e. any f. But the gather costs a fixed
// ~2 ms a call at this size (packing the two panel copies into fresh pages,
// a first pass on cold caches), so short calls lose (float32):
//
//   sweeps             1            2            4            8
//   f = 0.13     3.27 / 1.16  3.65 / 2.18  4.47 / 4.31  5.94 / 8.29 ms
//   f = 0.47     3.72 / 1.20  4.45 / 2.26  6.04 / 4.31  8.73 / 8.34
//
// Hence kGatherMinSweeps = 8: from 8 sweeps on the gather loses at most 5%
// (the densest case) and wins 28% at f = 0.13; shorter calls, such as the
// 1-sweep steps of AIS, use GEMM throughout.
constexpr double kGatherMaxWork = 0.5;
constexpr int64_t kGatherMinSweeps = 8;

// GENVAR_RBM_PRODUCT=gather or blas forces one product (tests and the
// measurements behind the rule use it); unset or "auto": the rule.
enum class ProductChoice { kAuto, kGather, kBlas };

ProductChoice product_choice() {
  const char* setting = std::getenv("GENVAR_RBM_PRODUCT");
  if (setting == nullptr || std::strcmp(setting, "auto") == 0) return ProductChoice::kAuto;
  if (std::strcmp(setting, "gather") == 0) return ProductChoice::kGather;
  if (std::strcmp(setting, "blas") == 0) return ProductChoice::kBlas;
  TORCH_CHECK(false, "GENVAR_RBM_PRODUCT must be auto, gather or blas, got '", setting, "'");
}

// ---------------------------------------------------------------------------
// Row passes: float with target clones, double without vectorised
// transcendentals (libm, as in fast_math.h) but with clones for the Philox loop.

// out[j] = 1 if u(row, j) < sigmoid(beta (pre[j] + add[j]) + shift[j]) else 0,
// j < columns; `words` holds 4 ceil(columns / 4) words.
template <typename scalar_t>
GENVAR_INLINE void sample_row_impl(const scalar_t* pre, const scalar_t* add,
                                   const scalar_t* shift, scalar_t beta,
                                   PhiloxLayerStream stream, uint32_t row, int64_t columns,
                                   uint32_t* words, scalar_t* out) {
  const int64_t blocks = (columns + 3) / 4;
#pragma omp simd
  for (int64_t block = 0; block < blocks; ++block) {
    uint32_t x0, x1, x2, x3;
    philox_block_words(stream, static_cast<uint32_t>(block), row, x0, x1, x2, x3);
    words[4 * block] = x0;
    words[4 * block + 1] = x1;
    words[4 * block + 2] = x2;
    words[4 * block + 3] = x3;
  }
#pragma omp simd
  for (int64_t j = 0; j < columns; ++j) {
    const scalar_t p = Math<scalar_t>::sigmoid(beta * (pre[j] + add[j]) + shift[j]);
    out[j] = philox_uniform<scalar_t>(words[j]) < p ? scalar_t(1) : scalar_t(0);
  }
}

#define GENVAR_RBM_ROWS(scalar_t)                                                              \
  GENVAR_TARGET_CLONES void sample_row(const scalar_t* pre, const scalar_t* add,              \
                                       const scalar_t* shift, scalar_t beta,                  \
                                       PhiloxLayerStream stream, uint32_t row,                \
                                       int64_t columns, uint32_t* words, scalar_t* out) {     \
    sample_row_impl(pre, add, shift, beta, stream, row, columns, words, out);                 \
  }                                                                                            \
  GENVAR_TARGET_CLONES void gather_product(const scalar_t* matrix, int64_t stride,            \
                                           const scalar_t* totals, const scalar_t* zeros,     \
                                           const BinaryRows& x, int64_t begin, int64_t end,   \
                                           scalar_t* out, int64_t* cursors) {                 \
    gather_product_impl(matrix, stride, totals, zeros, x, begin, end, out, cursors);          \
  }
GENVAR_RBM_ROWS(float)
GENVAR_RBM_ROWS(double)
#undef GENVAR_RBM_ROWS

// ---------------------------------------------------------------------------
// One layer's state and operands: the dense sample [B, K] (the op's output),
// its index lists, and the product that maps it to the other layer.

struct Layer {
  at::Tensor sample;      // [B, K], 0/1
  at::Tensor active;      // [B, K + kListSlack] int32
  at::Tensor inactive;    // [B, K + kListSlack] int32
  at::Tensor num_active;  // [B] int32
  BinaryRows rows() const {
    return {active.const_data_ptr<int32_t>(), inactive.const_data_ptr<int32_t>(),
            num_active.const_data_ptr<int32_t>(), sample.size(1), active.size(1)};
  }
  // Rebuilds row `row`'s lists from its sample.
  template <typename scalar_t>
  int64_t index(int64_t row) const {
    const int64_t length = sample.size(1), stride = active.size(1);
    int64_t nonbinary;
    num_active.mutable_data_ptr<int32_t>()[row] =
        index_row(sample.const_data_ptr<scalar_t>() + row * length, length,
                  active.mutable_data_ptr<int32_t>() + row * stride,
                  inactive.mutable_data_ptr<int32_t>() + row * stride, nonbinary);
    return nonbinary;
  }
};

Layer new_layer(at::Tensor sample) {
  const auto index_options = sample.options().dtype(at::kInt);
  const int64_t rows = sample.size(0), stride = sample.size(1) + kListSlack;
  return {sample, at::empty({rows, stride}, index_options),
          at::empty({rows, stride}, index_options), at::empty({rows}, index_options)};
}

// x [B, K] -> the other layer: M [K, N] for GEMM (W, or the view W'), its
// zero-padded copy [K, stride] packed in panels and its column totals
// [stride] for the gather, and the pre-activation buffer [B, stride].
struct Product {
  at::Tensor matrix, packed, totals, pre;
};

// M [K, N] (W, or the view W') zero-padded to [K, stride] and packed in
// panels of `panel` columns (the last one narrower), each panel one
// contiguous [K, width] block: a tile's slice of M is one stretch of memory,
// which the caches hold without conflict misses (rows of a [K, 512] float
// matrix lie 2 KB apart and would fall into 1/32 of the L1's sets). A loop
// of our own rather than copy_ per panel: at 784 x 500 copy_ from the
// transposed view cost 2 ms a call, more than a whole AIS sweep.
template <typename scalar_t>
at::Tensor pack_panels(const at::Tensor& matrix, int64_t stride, int64_t panel) {
  const int64_t length = matrix.size(0), columns = matrix.size(1);
  const int64_t row_step = matrix.stride(0), column_step = matrix.stride(1);
  const scalar_t* source = matrix.const_data_ptr<scalar_t>();
  at::Tensor packed = at::zeros({length * stride}, matrix.options());
  scalar_t* target = packed.mutable_data_ptr<scalar_t>();
  const int64_t panels = (stride + panel - 1) / panel;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t column = index * panel, width = std::min(panel, stride - column);
      const int64_t real = std::min(width, columns - column);
      scalar_t* block = target + length * column;
      if (column_step == 1) {  // W: rows of the panel are contiguous runs
        for (int64_t k = 0; k < length; ++k) {
          std::memcpy(block + k * width, source + k * row_step + column,
                      real * sizeof(scalar_t));
        }
      } else {  // W': read W's rows, write the panel's columns
        for (int64_t c = 0; c < real; ++c) {
          const scalar_t* from = source + (column + c) * column_step;
          for (int64_t k = 0; k < length; ++k) block[k * width + c] = from[k * row_step];
        }
      }
    }
  });
  return packed;
}

// With `gather`, also the packed copy and the column totals (summed in double).
template <typename scalar_t>
Product new_product(const at::Tensor& matrix, int64_t rows, bool gather) {
  const int64_t columns = matrix.size(1);
  const int64_t lanes = 64 / sizeof(scalar_t);
  const int64_t stride = (columns + lanes - 1) / lanes * lanes;
  Product product{matrix, at::Tensor(), at::Tensor(),
                  at::empty({rows, stride}, matrix.options())};
  if (gather) {
    product.packed = pack_panels<scalar_t>(matrix, stride, kTileVectors * lanes);
    product.totals = at::zeros({stride}, matrix.options());
    product.totals.narrow(0, 0, columns).copy_(at::sum(matrix, {0}, false, at::kDouble));
  }
  return product;
}

// The fraction of M's rows the gather reads for rows [begin, end) of x.
double gather_work(const BinaryRows& x, int64_t begin, int64_t end) {
  int64_t reads = 0;
  for (int64_t row = begin; row < end; ++row) {
    reads += std::min<int64_t>(x.num_active[row], x.length - x.num_active[row]);
  }
  const int64_t total = std::max<int64_t>(1, (end - begin) * x.length);
  return static_cast<double>(reads) / static_cast<double>(total);
}

template <typename scalar_t>
struct Sweeper {
  const Product& product;
  const scalar_t* add;    // [N]
  const scalar_t* shift;  // [N]
  scalar_t beta;
  ProductChoice choice;
  double gather_max_work;

  // pre[begin, end) = x[begin, end) M, then the fused sampling pass into `to`.
  void run(const Layer& from, const Layer& to, const scalar_t* zeros, PhiloxLayerStream stream,
           int64_t begin, int64_t end, std::vector<uint32_t>& words,
           std::vector<int64_t>& cursors) const {
    const BinaryRows x = from.rows();
    const int64_t stride = product.pre.size(1), columns = product.matrix.size(1);
    scalar_t* pre = product.pre.mutable_data_ptr<scalar_t>();
    const bool gather = choice == ProductChoice::kGather ||
                        (choice == ProductChoice::kAuto &&
                         gather_work(x, begin, end) <= gather_max_work);
    if (gather) {
      gather_product(product.packed.const_data_ptr<scalar_t>(), stride,
                     product.totals.const_data_ptr<scalar_t>(), zeros, x, begin, end, pre,
                     cursors.data());
    } else {
      at::Tensor out = product.pre.narrow(0, begin, end - begin).narrow(1, 0, columns);
      at::mm_out(out, from.sample.narrow(0, begin, end - begin), product.matrix);
    }
    scalar_t* sample = to.sample.mutable_data_ptr<scalar_t>();
    for (int64_t row = begin; row < end; ++row) {
      sample_row(pre + row * stride, add, shift, beta, stream, static_cast<uint32_t>(row),
                 columns, words.data(), sample + row * columns);
      to.index<scalar_t>(row);
    }
  }
};

// Names the first entry of v that is neither 0 nor 1 (an error path).
[[noreturn]] void raise_non_binary(const at::Tensor& v) {
  const at::Tensor bad = at::logical_and(v.ne(0), v.ne(1)).nonzero();
  TORCH_INTERNAL_ASSERT(bad.size(0) > 0, "a non-binary value was flagged in v but not found");
  const int64_t row = bad[0][0].item<int64_t>(), column = bad[0][1].item<int64_t>();
  TORCH_CHECK(false, "v must hold binary values (0 or 1): rbm_gibbs samples binary units, ",
              "got v[", row, ", ", column, "] = ", v[row][column].item<double>());
}

template <typename scalar_t>
void rbm_gibbs_chains(const Layer& visible, const Layer& hidden, const Sweeper<scalar_t>& up,
                      const Sweeper<scalar_t>& down, int64_t sweeps, int64_t seed,
                      int64_t offset) {
  const int64_t chains = visible.sample.size(0);
  const int64_t longest = std::max(visible.sample.size(1), hidden.sample.size(1));
  const std::vector<scalar_t> zeros(kTileVectors * Vector<scalar_t>::kLanes, scalar_t(0));
  at::parallel_for(0, chains, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> words((longest + 3) / 4 * 4);
    std::vector<int64_t> cursors(end - begin);
    for (int64_t sweep = 0; sweep < sweeps; ++sweep) {
      const uint64_t step = static_cast<uint64_t>(offset + 2 * sweep);
      up.run(visible, hidden, zeros.data(), philox_layer_stream(seed, step), begin, end, words,
             cursors);
      down.run(hidden, visible, zeros.data(), philox_layer_stream(seed, step + 1), begin, end,
               words, cursors);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> rbm_gibbs_cpu(
    const at::Tensor& v, const at::Tensor& weight, const at::Tensor& visible_bias,
    const at::Tensor& hidden_bias, double beta, int64_t sweeps, int64_t seed, int64_t offset,
    const std::optional<at::Tensor>& base_visible_bias) {
  const RbmSizes sizes = check_rbm_gibbs_args(v, weight, visible_bias, hidden_bias, beta, sweeps,
                                              seed, offset, base_visible_bias);
  ProductChoice choice = product_choice();
  if (choice == ProductChoice::kAuto && sweeps < kGatherMinSweeps) choice = ProductChoice::kBlas;
  const at::Tensor weight_c = weight.detach().contiguous();
  Layer visible = new_layer(v.detach().contiguous().clone());
  Layer hidden = new_layer(at::empty({sizes.chains, sizes.hidden}, v.options()));
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "rbm_gibbs_cpu", [&] {
    // The lists of v, and its binary check, before any sweep.
    std::atomic<bool> nonbinary{false};
    at::parallel_for(0, sizes.chains, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        if (visible.index<scalar_t>(row) != 0) nonbinary = true;
      }
    });
    if (nonbinary) raise_non_binary(visible.sample);
    const at::Tensor shift = rbm_visible_shift(visible_bias.detach(), beta, base_visible_bias);
    const at::Tensor hidden_add = hidden_bias.detach().contiguous();
    const at::Tensor zero_hidden = at::zeros({sizes.hidden}, v.options());
    const at::Tensor zero_visible = at::zeros({sizes.visible}, v.options());
    const bool gather = choice != ProductChoice::kBlas;
    const Product up_product = new_product<scalar_t>(weight_c, sizes.chains, gather);
    const Product down_product = new_product<scalar_t>(weight_c.t(), sizes.chains, gather);
    const double max_work = kGatherMaxWork;
    const auto beta_s = static_cast<scalar_t>(beta);
    const Sweeper<scalar_t> up{up_product, hidden_add.const_data_ptr<scalar_t>(),
                               zero_hidden.const_data_ptr<scalar_t>(), beta_s, choice, max_work};
    const Sweeper<scalar_t> down{down_product, zero_visible.const_data_ptr<scalar_t>(),
                                 shift.const_data_ptr<scalar_t>(), beta_s, choice, max_work};
    rbm_gibbs_chains<scalar_t>(visible, hidden, up, down, sweeps, seed, offset);
  });
  return {visible.sample, hidden.sample};
}

// The test hook: Philox4x32-10 of int64 counters [..., 4] holding 32-bit words.
at::Tensor philox4x32_10_cpu(const at::Tensor& counter, int64_t key0, int64_t key1) {
  TORCH_CHECK(counter.scalar_type() == at::kLong && counter.dim() >= 1 &&
                  counter.size(-1) == 4,
              "counter must be int64 [..., 4], got ", counter.scalar_type(), " ",
              counter.sizes());
  at::Tensor words = counter.contiguous().clone();
  int64_t* word = words.mutable_data_ptr<int64_t>();
  for (int64_t block = 0; block < words.numel() / 4; ++block, word += 4) {
    uint32_t c[4];
    for (int k = 0; k < 4; ++k) c[k] = static_cast<uint32_t>(word[k]);
    philox4x32_10(c[0], c[1], c[2], c[3], static_cast<uint32_t>(key0),
                  static_cast<uint32_t>(key1));
    for (int k = 0; k < 4; ++k) word[k] = c[k];
  }
  return words;
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("rbm_gibbs", &rbm_gibbs_cpu);
  m.impl("philox4x32_10", &philox4x32_10_cpu);
}

}  // namespace genvar::cpu
