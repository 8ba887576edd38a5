// One tile of the mixture log-density: what the CPU passes and the CUDA
// kernels are handed. No torch header, so that mixture_kernels.cu builds with
// nvcc alone.
//
// The GEMM gives gram = z' c'^T for centred z' = z - shift, c' = c - shift.
// A pass turns it into the logits
//   t[m, n] = gram[m, n] / s^2 - |c'_n|^2 / (2 s^2)
//           = |z'_m|^2 / (2 s^2) - |z'_m - c'_n|^2 / (2 s^2),
// which carry the rounding of the expanded square: up to about (band - T) / 2
// per row, T the part of the band that bounds the weight of what lies below it
// (see prepare_mixture). Entries of t within `band` of the row's largest are
// recomputed as -|z - c|^2 / (2 s^2) in double from the inputs as given, and
// summed with their own shift: the terms that make up the sum are exact,
// however large the rounding of t.
#pragma once

#include <cstdint>

namespace genvar {

template <typename scalar_t>
struct MixtureTile {
  scalar_t* gram;                 // [rows, cols] z' c'^T of the tile; the pass overwrites it
  const scalar_t* center_bias;    // [cols] -|c'_n|^2 / (2 s^2)
  const scalar_t* queries;        // [rows, dim] z as given, for exact differences
  const scalar_t* centers;        // [cols, dim] the centers as given
  const double* half_query_norm;  // [rows] |z'_m|^2 / (2 s^2); not finite: the row is skipped
  const double* band;             // [rows] refinement band in nats; negative: no refinement
  scalar_t inv_scale_sq;          // 1 / s^2
  double inv_two_scale_sq;        // 1 / (2 s^2)
  int64_t rows;
  int64_t cols;
  int64_t dim;
};

}  // namespace genvar
