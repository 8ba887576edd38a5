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
#pragma once

#include "fast_math.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

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
