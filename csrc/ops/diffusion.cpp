// Schemas of the diffusion KL ops, their argument checks, and the schedule
// tables every backend reads (built on the host in double: T is small).
#include "diffusion.h"
#include "checks.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <mutex>
#include <utility>
#include <vector>

namespace genvar {
namespace {

// betas as double on the host, each checked to lie in (0, 1] (NaN fails).
std::vector<double> read_betas(const at::Tensor& betas) {
  const at::Tensor host = betas.to(at::kCPU, at::kDouble).contiguous();
  const double* values = host.const_data_ptr<double>();
  const int64_t num_steps = host.numel();
  for (int64_t i = 0; i < num_steps; ++i) {
    TORCH_CHECK(values[i] > 0 && values[i] <= 1, "betas must lie in (0, 1], got betas[", i,
                "] = ", values[i]);
  }
  return std::vector<double>(values, values + num_steps);
}

// log abar_s for s = 0..T: a sum of log1p(-beta), so 1 - abar = -expm1(log abar)
// keeps its digits where abar is close to 1 (beta = 1 gives -inf, abar = 0).
std::vector<double> log_abar_of(const std::vector<double>& beta) {
  std::vector<double> log_abar(beta.size() + 1, 0.0);
  for (size_t s = 1; s <= beta.size(); ++s) {
    log_abar[s] = log_abar[s - 1] + std::log1p(-beta[s - 1]);
  }
  return log_abar;
}

at::Tensor new_table(int64_t num_steps, int64_t columns) {
  return at::empty({num_steps, columns}, at::TensorOptions().dtype(at::kDouble));
}

}  // namespace

DiffusionSizes check_diffusion_kl_args(const at::Tensor& x0, const at::Tensor& xt,
                                       const at::Tensor& output, const char* output_name,
                                       const at::Tensor& steps, const at::Tensor& betas) {
  check_floating(output, output_name);
  check_rank(output, output_name, 3, "[T', B, D]");
  check_rank(x0, "x0", 2, "[B, D]");
  check_rank(xt, "xt", 3, "[T', B, D]");
  check_rank(steps, "steps", 2, "[T', B]");
  check_rank(betas, "betas", 1, "[T]");
  const DiffusionSizes sizes{output.size(0), output.size(1), output.size(2), betas.size(0)};
  check_shape(x0, "x0", {sizes.batch, sizes.data_dim}, "[B, D] (B, D from the output)");
  check_shape(xt, "xt", output.sizes(), "[T', B, D] (from the output)");
  check_shape(steps, "steps", {sizes.num_slices, sizes.batch}, "[T', B] (from the output)");
  check_same_dtype_and_device(output, output_name, x0, "x0");
  check_same_dtype_and_device(output, output_name, xt, "xt");
  TORCH_CHECK(steps.scalar_type() == at::kLong, "steps must be int64, got ", steps.scalar_type());
  TORCH_CHECK(steps.device() == output.device(), "steps is on ", steps.device(), " but ",
              output_name, " is on ", output.device(), ": all inputs must be on one device");
  TORCH_CHECK(sizes.num_steps > 0, "betas must be non-empty (T > 0 steps), got shape ",
              betas.sizes());
  TORCH_CHECK(betas.is_floating_point(), "betas must be floating point, got ",
              betas.scalar_type());
  TORCH_CHECK(betas.device() == output.device(), "betas is on ", betas.device(), " but ",
              output_name, " is on ", output.device(), ": all inputs must be on one device");
  return sizes;
}

DiffusionSizes check_diffusion_gaussian_kl_args(const at::Tensor& x0, const at::Tensor& xt,
                                                const at::Tensor& mean, const at::Tensor& log_var,
                                                const at::Tensor& steps,
                                                const at::Tensor& betas) {
  const DiffusionSizes sizes = check_diffusion_kl_args(x0, xt, mean, "mean", steps, betas);
  check_shape(log_var, "log_var", mean.sizes(), "[T', B, D] (from mean)");
  check_same_dtype_and_device(mean, "mean", log_var, "log_var");
  return sizes;
}

void check_diffusion_grad(const at::Tensor& grad, const at::Tensor& output,
                          const char* output_name, const DiffusionSizes& sizes) {
  check_shape(grad, "grad", {sizes.num_slices, sizes.batch}, "[T', B]");
  check_same_dtype_and_device(output, output_name, grad, "grad");
}

void check_steps_in_range(const at::Tensor& steps, int64_t num_steps) {
  if (steps.numel() == 0) return;
  const auto [low, high] = at::aminmax(steps);
  // On CUDA this copy to the host waits for the stream: the op's synchronising check.
  const at::Tensor bounds = at::stack({low, high}).cpu();
  const int64_t* bound = bounds.const_data_ptr<int64_t>();
  if (bound[0] >= 1 && bound[1] <= num_steps) return;
  // The error path only: find the first bad entry to name it.
  const at::Tensor bad = at::logical_or(steps < 1, steps > num_steps).nonzero()[0].cpu();
  const int64_t slice = bad[0].item<int64_t>(), example = bad[1].item<int64_t>();
  TORCH_CHECK(false, "steps must hold 1-based steps in [1, T] = [1, ", num_steps, "], got steps[",
              slice, ", ", example, "] = ", steps[slice][example].item<int64_t>());
}

// The tables of the last few schedules per kind, keyed by the betas' values and the
// device: a training run calls an op with one schedule at every step, and building
// its table costs T rows of double transcendentals (70 us at T = 1000 here). The
// kernels only read a table. Held on the heap and never freed: no CUDA tensor is
// released after the CUDA runtime has shut down at exit.
namespace {
class ScheduleCache {
 public:
  at::Tensor get(const std::vector<double>& beta, at::Device device,
                 at::Tensor (*build)(const std::vector<double>&)) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [key, table] : entries_) {
      if (table.device() == device && key == beta) return table;
    }
    at::Tensor table = build(beta).to(device);
    if (entries_.size() == kMaxEntries) entries_.erase(entries_.begin());
    entries_.emplace_back(beta, table);
    return table;
  }

 private:
  static constexpr size_t kMaxEntries = 8;
  std::mutex mutex_;
  std::vector<std::pair<std::vector<double>, at::Tensor>> entries_;
};
}  // namespace

static at::Tensor build_binomial_table(const std::vector<double>& beta) {
  const std::vector<double> log_abar = log_abar_of(beta);
  const int64_t num_steps = static_cast<int64_t>(beta.size());
  at::Tensor table = new_table(num_steps, kBinomialColumns);
  double* row = table.mutable_data_ptr<double>();
  for (int64_t t = 1; t <= num_steps; ++t, row += kBinomialColumns) {
    if (t == 1) {  // kappa_0 = +inf: the posterior is x_0 itself, with no entropy
      for (int cell = 0; cell < 4; ++cell) {  // cell = 2 x_t + x_0
        row[kBinomialQ + cell] = cell & 1;
        row[kBinomialEntropy + cell] = 0;
      }
      continue;
    }
    const double rho = std::log((2 - beta[t - 1]) / beta[t - 1]);
    const double kappa =
        std::log((1 + std::exp(log_abar[t - 1])) / -std::expm1(log_abar[t - 1]));
    for (int cell = 0; cell < 4; ++cell) {
      const double lq = (2 * (cell >> 1) - 1) * rho + (2 * (cell & 1) - 1) * kappa;
      const double e = std::exp(-std::fabs(lq));
      row[kBinomialQ + cell] = lq >= 0 ? 1 / (1 + e) : e / (1 + e);
      // softplus(lq) - q lq without its cancellation: log1p(e) + |lq| e / (1 + e).
      row[kBinomialEntropy + cell] = std::log1p(e) + std::fabs(lq) * e / (1 + e);
    }
  }
  return table;
}

static at::Tensor build_gaussian_table(const std::vector<double>& beta) {
  const std::vector<double> log_abar = log_abar_of(beta);
  const int64_t num_steps = static_cast<int64_t>(beta.size());
  at::Tensor table = new_table(num_steps, kGaussianColumns);
  double* row = table.mutable_data_ptr<double>();
  for (int64_t t = 1; t <= num_steps; ++t, row += kGaussianColumns) {
    if (t == 1) {
      row[kGaussianC0] = 1, row[kGaussianC1] = 0, row[kGaussianVarQ] = 0;
      row[kGaussianOffset] = std::log(2 * M_PI);
      continue;
    }
    const double beta_t = beta[t - 1];
    const double one_minus_abar_prev = -std::expm1(log_abar[t - 1]);
    const double one_minus_abar = -std::expm1(log_abar[t]);
    const double var_q = beta_t * one_minus_abar_prev / one_minus_abar;
    row[kGaussianC0] = std::exp(0.5 * log_abar[t - 1]) * beta_t / one_minus_abar;
    row[kGaussianC1] = std::sqrt(1 - beta_t) * one_minus_abar_prev / one_minus_abar;
    row[kGaussianVarQ] = var_q;
    row[kGaussianOffset] = -std::log(var_q) - 1;
  }
  return table;
}

at::Tensor binomial_schedule_table(const at::Tensor& betas, at::Device device) {
  static auto* cache = new ScheduleCache();
  return cache->get(read_betas(betas), device, build_binomial_table);
}

at::Tensor gaussian_schedule_table(const at::Tensor& betas, at::Device device) {
  static auto* cache = new ScheduleCache();
  return cache->get(read_betas(betas), device, build_gaussian_table);
}

PreparedDiffusion prepare_diffusion(const at::Tensor& x0, const at::Tensor& xt,
                                    const at::Tensor& output, const at::Tensor& steps,
                                    const at::Tensor& betas, const DiffusionSizes& sizes,
                                    at::Tensor (*build_table)(const at::Tensor&, at::Device)) {
  check_steps_in_range(steps, sizes.num_steps);
  return {x0.contiguous(), xt.contiguous(), output.contiguous(), steps.contiguous(),
          build_table(betas, output.device()), sizes};
}

void check_diffusion_and_grad_backward_args(const at::Tensor& grad, const at::Tensor& buffer,
                                            const char* name) {
  check_floating(buffer, name);
  check_rank(buffer, name, 3, "[T', B, D]");
  check_shape(grad, "grad", {buffer.size(0), buffer.size(1)}, "[T', B]");
  check_same_dtype_and_device(buffer, name, grad, "grad");
}

TORCH_LIBRARY_FRAGMENT(genvar, m) {
  m.def(
      "diffusion_binomial_kl(Tensor x0, Tensor xt, Tensor logits, Tensor steps, Tensor betas) "
      "-> Tensor");
  m.def(
      "diffusion_binomial_kl_backward(Tensor grad, Tensor x0, Tensor xt, Tensor logits, "
      "Tensor steps, Tensor betas) -> Tensor");
  // Training path on CPU: the KL and d KL[t, b] / d logits[t, b, :] in one pass.
  m.def(
      "diffusion_binomial_kl_and_grad(Tensor x0, Tensor xt, Tensor logits, Tensor steps, "
      "Tensor betas) -> (Tensor, Tensor)");
  // Its backward: scales dlogits in place by grad[t, b] into the logits gradient.
  m.def("diffusion_binomial_kl_and_grad_backward_(Tensor grad, Tensor(a!) dlogits) -> ()");
  m.def(
      "diffusion_gaussian_kl(Tensor x0, Tensor xt, Tensor mean, Tensor log_var, Tensor steps, "
      "Tensor betas) -> Tensor");
  m.def(
      "diffusion_gaussian_kl_backward(Tensor grad, Tensor x0, Tensor xt, Tensor mean, "
      "Tensor log_var, Tensor steps, Tensor betas) -> (Tensor, Tensor)");
  m.def(
      "diffusion_gaussian_kl_and_grad(Tensor x0, Tensor xt, Tensor mean, Tensor log_var, "
      "Tensor steps, Tensor betas) -> (Tensor, Tensor, Tensor)");
  m.def(
      "diffusion_gaussian_kl_and_grad_backward_(Tensor grad, Tensor(a!) dmean, "
      "Tensor(b!) dlog_var) -> ()");
}

}  // namespace genvar
