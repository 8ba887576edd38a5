// The mixture log-density op, shared by its CPU kernels (mixture.cpp) and its
// CUDA ones (../cuda/mixture_kernel.cu): argument checks, the set-up in ATen
// ops, and the loop over tiles that calls a backend's passes.
//
// log p(z_m) = logsumexp_n t[m, n] - |z'_m|^2 / (2 s^2) - log N - Z/2 log(2 pi s^2),
// with t as in MixtureTile. One GEMM per tile of rows and centers gives
// z' c'^T; a pass reduces it in place while it is in cache, and a running shift
// and sum per row carry the logsumexp from one column tile to the next. Where
// the loops below call the GEMMs, they run outside the passes (all threads in
// the BLAS, then the passes parallel over rows); the CPU forward has a loop of
// its own, one GEMM per thread (see mixture.cpp).
#pragma once

#include <cstdint>

// One tile of the mixture log-density: what the CPU passes and the CUDA
// kernels are handed. Torch-free, so that the kernels build with nvcc alone.
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

// The rest needs torch: nvcc compiling the CUDA kernels alone (without
// GENVAR_WITH_CUDA, as tests/test_cuda_compile.py does) stops here.
#if !defined(__CUDACC__) || defined(GENVAR_WITH_CUDA)

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <tuple>

namespace genvar {

// z [M, Z] (queries), centers [N, Z].
struct MixtureSizes {
  int64_t num_queries;     // M
  int64_t num_components;  // N
  int64_t dim;             // Z
};

// Ranks, Z, dtypes (float32 or float64, equal), devices (equal), N > 0 and a
// finite scale > 0; throws a RuntimeError naming the argument.
MixtureSizes check_mixture_log_density_args(const at::Tensor& z, const at::Tensor& centers,
                                            double scale);

// The same, plus grad_log_density of shape [M].
MixtureSizes check_mixture_log_density_backward_args(const at::Tensor& grad_log_density,
                                                     const at::Tensor& z,
                                                     const at::Tensor& centers, double scale);

// The unit roundoff of a GEMM in this dtype on this backend under torch's
// float32 matmul precision (TF32 or bf16 where allowed): it sets the width of
// the refinement band, so reduced-precision GEMMs widen the band rather than
// give wrong results.
double gemm_unit_roundoff(at::ScalarType dtype, at::Float32Backend backend);

// Rows whose error bound exceeds this many units in the last place of the
// dtype are refined (see prepare_mixture). The forward's 4096 (5e-4 nats in
// float32) spares scales from about 1 up (for codes of unit spread), where the
// band would be wide and the rounding is small anyway; the backward refines
// almost always, so that every responsibility that matters is exact.
constexpr double kForwardRefineUlps = 4096;
constexpr double kBackwardRefineUlps = 16;

// Everything the tiles need that does not depend on the tile.
struct MixturePrepared {
  MixtureSizes sizes;
  double scale;
  at::Tensor queries, centers;                  // contiguous, as given
  at::Tensor shift;                             // [Z] the centers' mean, in the dtype
  at::Tensor centred_queries, centred_centers;  // z' = z - shift, c' = c - shift
  at::Tensor query_norm_sq;                     // [M] double, |z'|^2
  at::Tensor half_query_norm;                   // [M] double, |z'|^2 / (2 s^2)
  at::Tensor center_bias;                       // [N] dtype, -|c'|^2 / (2 s^2)
  at::Tensor band;                              // [M] double, see MixtureTile
  double log_norm;                              // log N + Z/2 log(2 pi s^2)
};

MixturePrepared prepare_mixture(const at::Tensor& z, const at::Tensor& centers, double scale,
                                double gemm_roundoff, double refine_ulps);

// log_density [M] = shift + log(sum) - log_norm from each row's running
// logsumexp (see mixture_log_kernel_sums), in the dtype.
at::Tensor finish_log_density(const MixturePrepared& prepared, const at::Tensor& running_shift,
                              const at::Tensor& running_sum);

struct MixtureTiling {
  int64_t rows;  // queries per GEMM
  int64_t cols;  // centers per GEMM
};

// The tiles of one chunk of rows, [row, row + rows), against every column
// tile: calls visit(tile, gram, col) after each tile's GEMM into `buffer`
// (at least rows x tiling.cols); gram is the tile as a tensor, col its first center.
template <typename scalar_t, typename Visit>
void for_each_column_tile(const MixturePrepared& prepared, MixtureTiling tiling,
                          at::Tensor& buffer, int64_t row, int64_t rows, Visit&& visit) {
  const MixtureSizes& sizes = prepared.sizes;
  const double scale_sq = prepared.scale * prepared.scale;
  for (int64_t col = 0; col < sizes.num_components; col += tiling.cols) {
    const int64_t cols = std::min(tiling.cols, sizes.num_components - col);
    at::Tensor gram = buffer.narrow(0, 0, rows * cols).view({rows, cols});
    at::mm_out(gram, prepared.centred_queries.narrow(0, row, rows),
               prepared.centred_centers.narrow(0, col, cols).t());
    const MixtureTile<scalar_t> tile{gram.mutable_data_ptr<scalar_t>(),
                                     prepared.center_bias.const_data_ptr<scalar_t>() + col,
                                     prepared.queries.const_data_ptr<scalar_t>() + row * sizes.dim,
                                     prepared.centers.const_data_ptr<scalar_t>() + col * sizes.dim,
                                     prepared.half_query_norm.const_data_ptr<double>() + row,
                                     prepared.band.const_data_ptr<double>() + row,
                                     static_cast<scalar_t>(1.0 / scale_sq),
                                     0.5 / scale_sq,
                                     rows,
                                     cols,
                                     sizes.dim};
    visit(tile, gram, col);
  }
}

// Calls visit(row, rows, buffer) for each chunk of rows, with the GEMM buffer
// the chunk's tiles share.
template <typename Visit>
void for_each_row_chunk(const MixturePrepared& prepared, MixtureTiling& tiling, Visit&& visit) {
  tiling.rows = std::min(tiling.rows, prepared.sizes.num_queries);
  tiling.cols = std::min(tiling.cols, prepared.sizes.num_components);
  at::Tensor buffer = at::empty({tiling.rows * tiling.cols}, prepared.queries.options());
  for (int64_t row = 0; row < prepared.sizes.num_queries; row += tiling.rows) {
    visit(row, std::min(tiling.rows, prepared.sizes.num_queries - row), buffer);
  }
}

// Each row's logsumexp of -|z - c_n|^2 / (2 s^2) over all centers, for rows
// [row, row + rows), as a running shift and sum of exp(exponent - shift)
// (double [rows] each). forward_pass(tile, shift, sum) folds in one tile.
template <typename scalar_t, typename ForwardPass>
void mixture_log_kernel_sums(const MixturePrepared& prepared, MixtureTiling tiling,
                             at::Tensor& buffer, int64_t row, int64_t rows, double* shift,
                             double* sum, ForwardPass&& forward_pass) {
  for_each_column_tile<scalar_t>(prepared, tiling, buffer, row, rows,
                                 [&](const MixtureTile<scalar_t>& tile, const at::Tensor&,
                                     int64_t) { forward_pass(tile, shift, sum); });
}

// The forward: log_density = shift + log(sum) - log_norm per row.
template <typename scalar_t, typename ForwardPass>
at::Tensor mixture_log_density_tiled(const MixturePrepared& prepared, MixtureTiling tiling,
                                     ForwardPass&& forward_pass) {
  const auto options = prepared.queries.options().dtype(at::kDouble);
  at::Tensor shift = at::full({prepared.sizes.num_queries},
                              -std::numeric_limits<double>::infinity(), options);
  at::Tensor sum = at::zeros({prepared.sizes.num_queries}, options);
  for_each_row_chunk(prepared, tiling, [&](int64_t row, int64_t rows, at::Tensor& buffer) {
    mixture_log_kernel_sums<scalar_t>(prepared, tiling, buffer, row, rows,
                                      shift.mutable_data_ptr<double>() + row,
                                      sum.mutable_data_ptr<double>() + row, forward_pass);
  });
  return finish_log_density(prepared, shift, sum);
}

// What the backward adds.
struct MixtureBackwardPrepared {
  at::Tensor row_weight;  // [M] dtype, grad_log_density / s^2
  // [M, Z + 1] and [N, Z + 1] double: z - shift and c - shift, exact in double
  // for float32 inputs, then a column of ones.
  at::Tensor augmented_queries, augmented_centers;
};

MixtureBackwardPrepared prepare_mixture_backward(const MixturePrepared& prepared,
                                                 const at::Tensor& grad_log_density);

// (grad_z, grad_centers). Per chunk of rows, a first sweep over the centers
// gives each row's log sum_n exp(-|z - c_n|^2 / (2 s^2)) in double (the
// forward's float32 output would scale every responsibility by its rounding);
// in the second, weights_pass(tile, log_kernel_sum, row_weight) turns each
// tile into W[m, n] = row_weight_m * responsibility[m, n], and
//   grad_z_m = sum_n W[m, n] c'_n - (sum_n W[m, n]) z'_m,
//   grad_c_n = sum_m W[m, n] z'_m - (sum_m W[m, n]) c'_n
// come from GEMMs of W against the augmented inputs (their ones column gives
// the row and column sums of W). These GEMMs run in double: long sums of
// float products lose digits, and only in double do the two terms cancel
// into sum W (c' - z') without loss, as the reference's differences do.
template <typename scalar_t, typename ForwardPass, typename WeightsPass>
std::tuple<at::Tensor, at::Tensor> mixture_log_density_backward_tiled(
    const MixturePrepared& prepared, const MixtureBackwardPrepared& backward,
    MixtureTiling tiling, ForwardPass&& forward_pass, WeightsPass&& weights_pass) {
  const int64_t dim = prepared.sizes.dim;
  const auto options = backward.augmented_queries.options();
  at::Tensor query_sums = at::zeros_like(backward.augmented_queries);
  at::Tensor center_sums = at::zeros_like(backward.augmented_centers);
  at::Tensor weights_double;  // the tile's W in double, for float32
  for_each_row_chunk(prepared, tiling, [&](int64_t row, int64_t rows, at::Tensor& buffer) {
    at::Tensor shift = at::full({rows}, -std::numeric_limits<double>::infinity(), options);
    at::Tensor sum = at::zeros({rows}, options);
    mixture_log_kernel_sums<scalar_t>(prepared, tiling, buffer, row, rows,
                                      shift.mutable_data_ptr<double>(),
                                      sum.mutable_data_ptr<double>(), forward_pass);
    const at::Tensor log_kernel_sum = shift + sum.log();
    for_each_column_tile<scalar_t>(
        prepared, tiling, buffer, row, rows,
        [&](const MixtureTile<scalar_t>& tile, const at::Tensor& weights, int64_t col) {
          weights_pass(tile, log_kernel_sum.const_data_ptr<double>(),
                       backward.row_weight.const_data_ptr<scalar_t>() + row);
          at::Tensor weights_in_double = weights;
          if (weights.scalar_type() != at::kDouble) {
            if (!weights_double.defined()) weights_double = at::empty({buffer.numel()}, options);
            weights_in_double = weights_double.narrow(0, 0, weights.numel()).view(weights.sizes());
            weights_in_double.copy_(weights);
          }
          query_sums.narrow(0, row, rows)
              .addmm_(weights_in_double, backward.augmented_centers.narrow(0, col, tile.cols));
          center_sums.narrow(0, col, tile.cols)
              .addmm_(weights_in_double.t(), backward.augmented_queries.narrow(0, row, rows));
        });
  });
  const auto gradient = [&](const at::Tensor& sums, const at::Tensor& augmented) {
    return (sums.narrow(1, 0, dim) - sums.narrow(1, dim, 1) * augmented.narrow(1, 0, dim))
        .to(prepared.queries.scalar_type());
  };
  return {gradient(query_sums, backward.augmented_queries),
          gradient(center_sums, backward.augmented_centers)};
}

}  // namespace genvar

#endif
