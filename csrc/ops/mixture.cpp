// The mixture log-density ops: schemas, their argument checks and the set-up
// every backend shares (in ATen ops, so it runs on any device), and the CPU
// kernels, registered here; the CUDA ones are ../cuda/mixture_kernel.cu.
#include "mixture.h"
#include "checks.h"
#include "../cpu/fast_math.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace genvar {
namespace {

// The inputs minus `shift`, then a column of ones: [P, Z + 1].
at::Tensor centred_with_ones(const at::Tensor& points, const at::Tensor& shift) {
  const int64_t dim = points.size(1);
  at::Tensor augmented = at::empty({points.size(0), dim + 1}, points.options());
  at::Tensor centred = augmented.narrow(1, 0, dim);
  at::sub_out(centred, points, shift);
  augmented.select(1, dim).fill_(1);
  return augmented;
}

// |p|^2 per row, accumulated in double without a double copy of the points.
at::Tensor norm_sq(const at::Tensor& points) {
  return at::linalg_vector_norm(points, 2, {1}, false, at::kDouble).square();
}

}  // namespace

MixtureSizes check_mixture_log_density_args(const at::Tensor& z, const at::Tensor& centers,
                                            double scale) {
  check_floating(z, "z");
  check_rank(z, "z", 2, "[M, Z]");
  check_rank(centers, "centers", 2, "[N, Z]");
  check_same_dtype_and_device(z, "z", centers, "centers");
  TORCH_CHECK(centers.size(0) > 0, "centers must have N > 0 components, got shape ",
              centers.sizes());
  TORCH_CHECK(centers.size(1) == z.size(1), "centers must have shape [N, Z] with Z = ",
              z.size(1), " (from z [M, Z]), got ", centers.sizes());
  TORCH_CHECK(std::isfinite(scale) && scale > 0, "scale must be finite and > 0, got ", scale);
  return {z.size(0), centers.size(0), z.size(1)};
}

MixtureSizes check_mixture_log_density_backward_args(const at::Tensor& grad_log_density,
                                                     const at::Tensor& z,
                                                     const at::Tensor& centers, double scale) {
  const MixtureSizes sizes = check_mixture_log_density_args(z, centers, scale);
  check_shape(grad_log_density, "grad_log_density", {sizes.num_queries}, "[M] (from z)");
  check_same_dtype_and_device(z, "z", grad_log_density, "grad_log_density");
  return sizes;
}

double gemm_unit_roundoff(at::ScalarType dtype, at::Float32Backend backend) {
  if (dtype == at::kDouble) return std::numeric_limits<double>::epsilon();
  switch (at::globalContext().float32Precision(backend, at::Float32Op::MATMUL)) {
    case at::Float32Precision::BF16:
      return 0x1p-8;
    case at::Float32Precision::TF32:
      return 0x1p-11;
    default:
      return std::numeric_limits<float>::epsilon();
  }
}

MixturePrepared prepare_mixture(const at::Tensor& z, const at::Tensor& centers, double scale,
                                double gemm_roundoff, double refine_ulps) {
  MixturePrepared prepared;
  const int64_t num_components = centers.size(0), dim = z.size(1);
  prepared.sizes = {z.size(0), num_components, dim};
  prepared.scale = scale;
  prepared.queries = z.contiguous();
  prepared.centers = centers.contiguous();
  // Centring leaves the differences as they are but shrinks |z'|^2 and |c'|^2,
  // whose rounding the expanded square cancels against.
  prepared.shift = prepared.centers.mean(0);
  prepared.centred_queries = prepared.queries - prepared.shift;
  prepared.centred_centers = prepared.centers - prepared.shift;
  const double scale_sq = scale * scale;
  prepared.query_norm_sq = norm_sq(prepared.centred_queries);
  const at::Tensor center_norm_sq = norm_sq(prepared.centred_centers);
  prepared.half_query_norm = prepared.query_norm_sq * (0.5 / scale_sq);
  prepared.center_bias = (center_norm_sq * (-0.5 / scale_sq)).to(z.scalar_type());

  // A realistic bound on the error of t per row: the GEMM's products and sums
  // (about sqrt(Z) roundings of |z'| |c'|), the norms and the scaling, all below
  // (sqrt(Z) + 2) u (|z'| + R)^2 / s^2 with R the largest |c'|. Entries of t
  // further than T below the row's max weigh at most e^-T each, so with
  // T = log(N bound / eps) the unrefined ones move the result by under eps nats.
  const double eps = z.scalar_type() == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                    : std::numeric_limits<float>::epsilon();
  const at::Tensor radius = center_norm_sq.max().sqrt();
  const at::Tensor error_bound = (prepared.query_norm_sq.sqrt() + radius).square() *
                                 ((std::sqrt(static_cast<double>(dim)) + 2) * gemm_roundoff /
                                  scale_sq);
  const at::Tensor band =
      (error_bound * (static_cast<double>(num_components) / eps)).log() + 2 * error_bound;
  prepared.band = at::where(error_bound > refine_ulps * eps, band, -1.0);
  prepared.log_norm = std::log(static_cast<double>(num_components)) +
                      0.5 * static_cast<double>(dim) * std::log(2 * M_PI * scale_sq);
  return prepared;
}

at::Tensor finish_log_density(const MixturePrepared& prepared, const at::Tensor& running_shift,
                              const at::Tensor& running_sum) {
  const at::Tensor log_density = running_shift + running_sum.log() - prepared.log_norm;
  // The passes skip rows with a non-finite coordinate: an infinite one is
  // infinitely far from every center, a NaN stays NaN.
  const at::Tensor norm_sq = prepared.query_norm_sq;
  const at::Tensor finite_or_nan =
      at::where(norm_sq.isnan(), std::numeric_limits<double>::quiet_NaN(), log_density);
  return at::where(norm_sq.isinf(), -std::numeric_limits<double>::infinity(), finite_or_nan)
      .to(prepared.queries.scalar_type());
}

MixtureBackwardPrepared prepare_mixture_backward(const MixturePrepared& prepared,
                                                 const at::Tensor& grad_log_density) {
  const double inv_scale_sq = 1.0 / (prepared.scale * prepared.scale);
  const at::Tensor shift = prepared.shift.to(at::kDouble);
  return {(grad_log_density * inv_scale_sq).contiguous(),
          centred_with_ones(prepared.queries.to(at::kDouble), shift),
          centred_with_ones(prepared.centers.to(at::kDouble), shift)};
}

TORCH_LIBRARY_FRAGMENT(genvar, m) {
  m.def("mixture_log_density(Tensor z, Tensor centers, float scale) -> Tensor");
  m.def(
      "mixture_log_density_backward(Tensor grad_log_density, Tensor z, Tensor centers, "
      "float scale) -> (Tensor, Tensor)");
}

}  // namespace genvar

// ---------------------------------------------------------------------------
// CPU implementation of the mixture log-density: after each tile's GEMM, one
// vectorised sweep per row of the tile while it is in cache.

namespace genvar::cpu {
namespace {

// The forward runs one parallel region: each thread takes blocks of 256 rows
// and, per tile of 1024 centers, runs a single-threaded GEMM (MKL runs
// sequentially inside a parallel region) into its own 1 MB buffer, which the
// pass then reads from that core's cache. With the GEMMs outside and the
// passes inside separate regions instead, M = 5000, N = 50000 took 0.39 s on
// one thread, but 3.6 s rather than 0.46 s on two threads of a CPU shared
// with another busy process: every tile's barriers wait for a descheduled thread.
constexpr MixtureTiling kForwardTiling{256, 1024};
// The backward keeps the GEMMs outside the parallel regions: its center
// gradients sum over rows, which per-thread GEMMs would need per-thread copies
// of. 2048 x 1024 floats (8 MB) stay in the last-level cache between the GEMM
// and the pass; tall, narrow tiles also suit MKL's GEMM best at Z = 50.
constexpr MixtureTiling kBackwardTiling{2048, 1024};
constexpr int64_t kGrainRows = 16;
// Float terms are summed in blocks this long, the blocks in double.
constexpr int64_t kSumBlock = 128;
// The search for entries to refine tests blocks this long at SIMD speed;
// few blocks hold one.
constexpr int64_t kScanBlock = 64;

// t = gram / s^2 + bias in place; returns the largest t (NaN entries ignored).
GENVAR_TARGET_CLONES float logits_and_max(float* row, const float* bias, float inv_scale_sq,
                                          int64_t cols) {
  float largest = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : largest)
  for (int64_t n = 0; n < cols; ++n) {
    const float logit = row[n] * inv_scale_sq + bias[n];
    row[n] = logit;
    largest = logit > largest ? logit : largest;
  }
  return largest;
}
double logits_and_max(double* row, const double* bias, double inv_scale_sq, int64_t cols) {
  double largest = -std::numeric_limits<double>::infinity();
  for (int64_t n = 0; n < cols; ++n) {
    const double logit = row[n] * inv_scale_sq + bias[n];
    row[n] = logit;
    largest = logit > largest ? logit : largest;
  }
  return largest;
}

// sum_n exp(row[n] - shift), for row <= shift.
GENVAR_TARGET_CLONES double sum_exp(const float* row, float shift, int64_t cols) {
  double total = 0;
  for (int64_t begin = 0; begin < cols; begin += kSumBlock) {
    const int64_t end = std::min(cols, begin + kSumBlock);
    float block = 0;
#pragma omp simd reduction(+ : block)
    for (int64_t n = begin; n < end; ++n) block += exp_nonpositive(row[n] - shift);
    total += block;
  }
  return total;
}
double sum_exp(const double* row, double shift, int64_t cols) {
  double total = 0;
  for (int64_t n = 0; n < cols; ++n) total += std::exp(row[n] - shift);
  return total;
}

// row[n] = weight * exp(min(row[n] - shift, 0)): a responsibility is at most 1,
// and the clamp keeps the rounding of t from pushing one above it.
GENVAR_TARGET_CLONES void weights_row(float* row, float shift, float weight, int64_t cols) {
#pragma omp simd
  for (int64_t n = 0; n < cols; ++n) {
    const float exponent = row[n] - shift;
    row[n] = weight * exp_nonpositive(exponent < 0.0f ? exponent : 0.0f);
  }
}
void weights_row(double* row, double shift, double weight, int64_t cols) {
  for (int64_t n = 0; n < cols; ++n) row[n] = weight * std::exp(std::min(row[n] - shift, 0.0));
}

// |z - c|^2 / (2 s^2) from differences, squares and sums in double: exact
// differences for float32 inputs.
template <typename scalar_t>
double exact_exponent(const MixtureTile<scalar_t>& tile, int64_t row, int64_t col) {
  const scalar_t* query = tile.queries + row * tile.dim;
  const scalar_t* center = tile.centers + col * tile.dim;
  double total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t k = 0; k < tile.dim; ++k) {
    const double difference = static_cast<double>(query[k]) - static_cast<double>(center[k]);
    total += difference * difference;
  }
  return total * tile.inv_two_scale_sq;
}

template <typename scalar_t>
scalar_t refine_threshold(const MixtureTile<scalar_t>& tile, int64_t row, double shift) {
  const double band = tile.band[row];
  return band < 0 ? std::numeric_limits<scalar_t>::infinity()
                  : static_cast<scalar_t>(shift - band);
}

GENVAR_TARGET_CLONES bool any_at_or_above(const float* values, float threshold, int64_t count) {
  int found = 0;
#pragma omp simd reduction(| : found)
  for (int64_t i = 0; i < count; ++i) found |= values[i] >= threshold;
  return found != 0;
}
bool any_at_or_above(const double* values, double threshold, int64_t count) {
  return std::any_of(values, values + count, [&](double value) { return value >= threshold; });
}

// Calls refine(col) for every col with row[col] >= threshold.
template <typename scalar_t, typename Refine>
void for_each_at_or_above(const scalar_t* row, scalar_t threshold, int64_t cols,
                          Refine&& refine) {
  for (int64_t begin = 0; begin < cols; begin += kScanBlock) {
    const int64_t end = std::min(cols, begin + kScanBlock);
    if (!any_at_or_above(row + begin, threshold, end - begin)) continue;
    for (int64_t col = begin; col < end; ++col) {
      if (row[col] >= threshold) refine(col);
    }
  }
}

// A running logsumexp: sum of exp(exponent - shift), shift the largest
// exponent so far. A NaN exponent makes the sum NaN.
struct LogSumExp {
  double shift = -std::numeric_limits<double>::infinity();
  double sum = 0;

  void add(double exponent) { merge(exponent, 1.0); }
  void merge(double other_shift, double other_sum) {
    if (other_sum == 0) return;
    if (sum == 0) {
      shift = other_shift;
      sum = other_sum;
      return;
    }
    const double larger = other_shift > shift ? other_shift : shift;
    sum = sum * std::exp(shift - larger) + other_sum * std::exp(other_shift - larger);
    shift = larger;
  }
};

// Folds one row of the tile into the row's running logsumexp of
// -|z - c_n|^2 / (2 s^2). Three parts, each with its own shift: what came
// before, the tile's exact terms and its remaining terms from t.
template <typename scalar_t>
void forward_row(const MixtureTile<scalar_t>& tile, int64_t row, LogSumExp& running) {
  const double half_query_norm = tile.half_query_norm[row];
  if (!std::isfinite(half_query_norm)) return;
  scalar_t* logits = tile.gram + row * tile.cols;
  const scalar_t tile_max =
      logits_and_max(logits, tile.center_bias, tile.inv_scale_sq, tile.cols);
  const double largest = std::max(static_cast<double>(tile_max),
                                  running.shift + half_query_norm);
  const scalar_t threshold = refine_threshold(tile, row, largest);
  LogSumExp exact;
  if (tile_max >= threshold) {
    for_each_at_or_above(logits, threshold, tile.cols, [&](int64_t col) {
      exact.add(-exact_exponent(tile, row, col));
      logits[col] = -std::numeric_limits<scalar_t>::infinity();  // out of the sweep
    });
  }
  running.merge(static_cast<double>(tile_max) - half_query_norm,
                sum_exp(logits, tile_max, tile.cols));
  running.merge(exact.shift, exact.sum);
}

template <typename scalar_t>
void forward_rows(const MixtureTile<scalar_t>& tile, double* running_shift, double* running_sum,
                  int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    LogSumExp running{running_shift[row], running_sum[row]};
    forward_row(tile, row, running);
    running_shift[row] = running.shift;
    running_sum[row] = running.sum;
  }
}

// The forward (see kForwardTiling).
template <typename scalar_t>
at::Tensor log_density_in_row_blocks(const MixturePrepared& prepared) {
  const int64_t num_queries = prepared.sizes.num_queries;
  const auto options = prepared.queries.options().dtype(at::kDouble);
  at::Tensor shift = at::full({num_queries}, -std::numeric_limits<double>::infinity(), options);
  at::Tensor sum = at::zeros({num_queries}, options);
  double* shift_data = shift.mutable_data_ptr<double>();
  double* sum_data = sum.mutable_data_ptr<double>();
  const int64_t block = kForwardTiling.rows;
  at::parallel_for(0, (num_queries + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
    at::Tensor buffer = at::empty({block * kForwardTiling.cols}, prepared.queries.options());
    for (int64_t row = begin * block; row < std::min(end * block, num_queries); row += block) {
      const int64_t rows = std::min(block, num_queries - row);
      mixture_log_kernel_sums<scalar_t>(
          prepared, kForwardTiling, buffer, row, rows, shift_data + row, sum_data + row,
          [](const MixtureTile<scalar_t>& tile, double* tile_shift, double* tile_sum) {
            forward_rows(tile, tile_shift, tile_sum, 0, tile.rows);
          });
    }
  });
  return finish_log_density(prepared, shift, sum);
}

template <typename scalar_t>
void forward_pass(const MixtureTile<scalar_t>& tile, double* running_shift,
                  double* running_sum) {
  at::parallel_for(0, tile.rows, kGrainRows, [&](int64_t begin, int64_t end) {
    forward_rows(tile, running_shift, running_sum, begin, end);
  });
}

// The row of W = weight * responsibilities, in place of its logits.
template <typename scalar_t>
void weights_row_refined(const MixtureTile<scalar_t>& tile, int64_t row, double log_kernel_sum,
                         scalar_t weight, std::vector<std::pair<int64_t, scalar_t>>& exact) {
  scalar_t* logits = tile.gram + row * tile.cols;
  const double half_query_norm = tile.half_query_norm[row];
  if (!std::isfinite(half_query_norm) || !std::isfinite(log_kernel_sum)) {
    std::fill(logits, logits + tile.cols, std::numeric_limits<scalar_t>::quiet_NaN());
    return;
  }
  const scalar_t tile_max =
      logits_and_max(logits, tile.center_bias, tile.inv_scale_sq, tile.cols);
  const double log_normaliser = half_query_norm + log_kernel_sum;  // logsumexp of t
  const scalar_t threshold = refine_threshold(tile, row, log_normaliser);
  exact.clear();
  if (tile_max >= threshold && weight != 0) {
    for_each_at_or_above(logits, threshold, tile.cols, [&](int64_t col) {
      const double responsibility = std::exp(-exact_exponent(tile, row, col) - log_kernel_sum);
      exact.emplace_back(col, static_cast<scalar_t>(weight * responsibility));
    });
  }
  weights_row(logits, static_cast<scalar_t>(log_normaliser), weight, tile.cols);
  for (const auto& [col, value] : exact) logits[col] = value;
}

template <typename scalar_t>
void weights_pass(const MixtureTile<scalar_t>& tile, const double* log_kernel_sum,
                  const scalar_t* row_weight) {
  at::parallel_for(0, tile.rows, kGrainRows, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<int64_t, scalar_t>> exact;
    for (int64_t row = begin; row < end; ++row) {
      weights_row_refined(tile, row, log_kernel_sum[row], row_weight[row], exact);
    }
  });
}

// at::mm on the CPU goes through oneDNN when torch allows it reduced precision.
MixturePrepared prepare(const at::Tensor& z, const at::Tensor& centers, double scale,
                        double refine_ulps) {
  return prepare_mixture(z, centers, scale,
                         gemm_unit_roundoff(z.scalar_type(), at::Float32Backend::MKLDNN),
                         refine_ulps);
}

at::Tensor mixture_log_density_cpu(const at::Tensor& z, const at::Tensor& centers,
                                   double scale) {
  check_mixture_log_density_args(z, centers, scale);
  if (z.size(0) == 0) return at::empty({0}, z.options());
  const MixturePrepared prepared = prepare(z, centers, scale, kForwardRefineUlps);
  at::Tensor log_density;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "mixture_log_density_cpu", [&] {
    log_density = log_density_in_row_blocks<scalar_t>(prepared);
  });
  return log_density;
}

std::tuple<at::Tensor, at::Tensor> mixture_log_density_backward_cpu(
    const at::Tensor& grad_log_density, const at::Tensor& z, const at::Tensor& centers,
    double scale) {
  check_mixture_log_density_backward_args(grad_log_density, z, centers, scale);
  if (z.size(0) == 0) return {at::zeros_like(z), at::zeros_like(centers)};
  const MixturePrepared prepared = prepare(z, centers, scale, kBackwardRefineUlps);
  const MixtureBackwardPrepared backward = prepare_mixture_backward(prepared, grad_log_density);
  std::tuple<at::Tensor, at::Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "mixture_log_density_backward_cpu", [&] {
    grads = mixture_log_density_backward_tiled<scalar_t>(
        prepared, backward, kBackwardTiling, &forward_pass<scalar_t>, &weights_pass<scalar_t>);
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("mixture_log_density", &mixture_log_density_cpu);
  m.impl("mixture_log_density_backward", &mixture_log_density_backward_cpu);
}

}  // namespace genvar::cpu
