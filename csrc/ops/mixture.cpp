// Schemas of the mixture log-density ops, their argument checks, and the
// set-up every backend shares (in ATen ops, so it runs on any device).
#include "mixture.h"
#include "checks.h"

#include <ATen/Context.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

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
