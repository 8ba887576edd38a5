// The diffusion KL ops: schemas, the argument checks and schedule tables every
// backend shares (diffusion.h; the tables are built on the host in double: T
// is small), and the CPU kernels, registered here; the CUDA ones are
// ../cuda/diffusion_kernel.cu.
#include "diffusion.h"
#include "checks.h"
#include "../cpu/bernoulli_rows.h"
#include "../cpu/fast_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <string>
#include <tuple>
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

// ---------------------------------------------------------------------------
// What the CPU kernels of the two ops share: the three kinds of row pass,
// optional pointers, and the in-place scaling that finishes the training
// path's backward.

namespace genvar::cpu {

// kValue: the KL per row. kValueAndGrad: the KL and, per element, its
// derivative in the network output (the training path's forward). kGrad: the
// derivative scaled by grad[row] (the backward op), no KL.
enum class RowMode { kValue, kValueAndGrad, kGrad };

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& tensor) {
  return tensor.defined() ? tensor.const_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t>
scalar_t* mutable_data_or_null(const at::Tensor& tensor) {
  return tensor.defined() ? tensor.mutable_data_ptr<scalar_t>() : nullptr;
}

// buffer[t, b, :] *= grad[t, b] in place: the training path's derivative
// buffer becomes the gradient without a second [T', B, D] tensor. The caller
// checks the arguments with check_diffusion_and_grad_backward_args.
inline void scale_buffer_in_place(const at::Tensor& grad, at::Tensor& buffer, const char* name) {
  TORCH_CHECK(buffer.is_contiguous(), name, " must be contiguous (it is scaled in place)");
  const at::Tensor grad_c = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES(buffer.scalar_type(), "diffusion_kl_and_grad_backward_cpu", [&] {
    scale_rows<scalar_t>(grad_c.const_data_ptr<scalar_t>(), buffer.mutable_data_ptr<scalar_t>(),
                         buffer.size(0) * buffer.size(1), buffer.size(2));
  });
}

namespace {

// ---------------------------------------------------------------------------
// CPU kernels of diffusion_binomial_kl: OpenMP over (slice, example) rows,
// SIMD inside a row over D.
//
// Each row reads its step's q and entropy for the four binary (x_t, x_0)
// cells once (layout in diffusion.h), so an element costs one
// softplus, whose exp also gives the sigmoid, and selects. The same pass flags
// non-binary x0 or xt, which is an error. float gets target clones and the
// polynomial exp/log1p of fast_math.h; double keeps libm.

// ---------------------------------------------------------------------------
// Binomial rows. cell = 2 x_t + x_0; x0 and xt must be binary, and a row
// reports how many of its elements are not (NaN included) in `nonbinary`.

template <typename scalar_t>
struct BinomialStep {
  scalar_t q[4];
  scalar_t entropy[4];
};

template <typename scalar_t>
BinomialStep<scalar_t> binomial_step(const double* table, int64_t step) {
  const double* row = table + (step - 1) * kBinomialColumns;
  BinomialStep<scalar_t> entry;
  for (int cell = 0; cell < 4; ++cell) {
    entry.q[cell] = static_cast<scalar_t>(row[kBinomialQ + cell]);
    entry.entropy[cell] = static_cast<scalar_t>(row[kBinomialEntropy + cell]);
  }
  return entry;
}

// The cell of binary (x_t, x_0) among four scalars c<x_t><x_0>, as selects
// the compiler if-converts into blends. (Indexing an array by 2 x_t + x_0
// instead turns into a gather, or leaves the loop scalar.)
template <typename scalar_t>
GENVAR_INLINE scalar_t select_cell(scalar_t c00, scalar_t c01, scalar_t c10, scalar_t c11,
                                   bool noisy_one, bool clean_one) {
  const scalar_t if_clean_zero = noisy_one ? c10 : c00;
  const scalar_t if_clean_one = noisy_one ? c11 : c01;
  return clean_one ? if_clean_one : if_clean_zero;
}

template <typename scalar_t>
GENVAR_INLINE scalar_t not_binary(scalar_t value) {
  return static_cast<scalar_t>((value != scalar_t(0)) & (value != scalar_t(1)));
}

// Returns sum_d KL_d = softplus(l_d) - q_d l_d - h_d unless kGrad; kValueAndGrad
// and kGrad also write out[d] = grad (sigmoid(l_d) - q_d) (grad 1 for
// kValueAndGrad). `nonbinary` counts the x0 and xt entries neither 0 nor 1.
template <RowMode kMode, typename scalar_t>
GENVAR_INLINE scalar_t binomial_row_impl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* logits, const BinomialStep<scalar_t>& step,
                                         scalar_t grad, scalar_t* out, int64_t data_dim,
                                         scalar_t& nonbinary) {
  const scalar_t q00 = step.q[0], q01 = step.q[1], q10 = step.q[2], q11 = step.q[3];
  const scalar_t h00 = step.entropy[0], h01 = step.entropy[1], h10 = step.entropy[2],
                 h11 = step.entropy[3];
  scalar_t total = 0, bad = 0;
#pragma omp simd reduction(+ : total, bad)
  for (int64_t d = 0; d < data_dim; ++d) {
    const scalar_t noisy = xt[d], clean = x0[d], logit = logits[d];
    const bool noisy_one = noisy != scalar_t(0), clean_one = clean != scalar_t(0);
    bad += not_binary(noisy) + not_binary(clean);
    const scalar_t q = select_cell(q00, q01, q10, q11, noisy_one, clean_one);
    if constexpr (kMode == RowMode::kValue) {
      total += Math<scalar_t>::softplus(logit) - q * logit -
               select_cell(h00, h01, h10, h11, noisy_one, clean_one);
    } else if constexpr (kMode == RowMode::kValueAndGrad) {
      scalar_t softplus, sigmoid;
      Math<scalar_t>::softplus_sigmoid(logit, softplus, sigmoid);
      total += softplus - q * logit - select_cell(h00, h01, h10, h11, noisy_one, clean_one);
      out[d] = sigmoid - q;
    } else {
      out[d] = grad * (Math<scalar_t>::sigmoid(logit) - q);
    }
  }
  nonbinary = bad;
  return total;
}

// The row functions, float with target clones (the clones must be whole
// functions, not template instances) and double without (libm, no SIMD).
#define GENVAR_BINOMIAL_ROW(name, mode, attributes)                                            \
  attributes float name(const float* x0, const float* xt, const float* logits,                \
                        const BinomialStep<float>& step, float grad, float* out,              \
                        int64_t data_dim, float& nonbinary) {                                 \
    return binomial_row_impl<mode>(x0, xt, logits, step, grad, out, data_dim, nonbinary);     \
  }                                                                                            \
  double name(const double* x0, const double* xt, const double* logits,                       \
              const BinomialStep<double>& step, double grad, double* out, int64_t data_dim,   \
              double& nonbinary) {                                                            \
    return binomial_row_impl<mode>(x0, xt, logits, step, grad, out, data_dim, nonbinary);     \
  }

GENVAR_BINOMIAL_ROW(binomial_row, RowMode::kValue, GENVAR_TARGET_CLONES)
GENVAR_BINOMIAL_ROW(binomial_row_and_grad, RowMode::kValueAndGrad, GENVAR_TARGET_CLONES)
GENVAR_BINOMIAL_ROW(binomial_grad_row, RowMode::kGrad, GENVAR_TARGET_CLONES)
#undef GENVAR_BINOMIAL_ROW

// Names the first non-binary entry of x0, else of xt, once a pass has flagged
// one (an error path, so plain ATen ops).
[[noreturn]] void raise_non_binary(const at::Tensor& x0, const at::Tensor& xt) {
  for (const auto& [tensor, name] : {std::pair{&x0, "x0"}, std::pair{&xt, "xt"}}) {
    const at::Tensor values = tensor->contiguous().flatten();
    const at::Tensor bad = at::logical_and(values.ne(0), values.ne(1)).nonzero();
    if (bad.size(0) == 0) continue;
    int64_t flat = bad[0][0].item<int64_t>();
    const double value = values[flat].item<double>();
    std::string where;
    for (int64_t dim = tensor->dim() - 1; dim >= 0; --dim) {
      where = std::to_string(flat % tensor->size(dim)) + (where.empty() ? "" : ", ") + where;
      flat /= tensor->size(dim);
    }
    TORCH_CHECK(false, name, " must hold binary values (0 or 1) for diffusion_binomial_kl on ",
                "the CPU, got ", name, "[", where, "] = ", value);
  }
  TORCH_INTERNAL_ASSERT(false, "a non-binary value was flagged in x0 or xt but not found");
}

// One pass of `kMode` over every (slice, example) row; true if a row flagged a
// non-binary value. kl [T', B] and elements [T', B, D] are null where unused.
template <RowMode kMode, typename scalar_t>
bool binomial_pass(const scalar_t* x0, const scalar_t* xt, const scalar_t* logits,
                   const int64_t* steps, const double* table, const scalar_t* grad,
                   scalar_t* kl, scalar_t* elements, const DiffusionSizes& sizes) {
  const int64_t data_dim = sizes.data_dim;
  std::atomic<bool> nonbinary{false};
  at::parallel_for(0, sizes.num_slices * sizes.batch, grain_rows(data_dim),
                   [&](int64_t begin, int64_t end) {
    bool chunk_nonbinary = false;
    for (int64_t row = begin; row < end; ++row) {
      const BinomialStep<scalar_t> step = binomial_step<scalar_t>(table, steps[row]);
      const int64_t offset = row * data_dim;
      const scalar_t* x0_row = x0 + (row % sizes.batch) * data_dim;
      scalar_t* out = elements == nullptr ? nullptr : elements + offset;
      const scalar_t scale = grad == nullptr ? scalar_t(1) : grad[row];
      scalar_t bad;
      if constexpr (kMode == RowMode::kValue) {
        kl[row] = binomial_row(x0_row, xt + offset, logits + offset, step, scale, out, data_dim,
                               bad);
      } else if constexpr (kMode == RowMode::kValueAndGrad) {
        kl[row] = binomial_row_and_grad(x0_row, xt + offset, logits + offset, step, scale, out,
                                        data_dim, bad);
      } else {
        binomial_grad_row(x0_row, xt + offset, logits + offset, step, scale, out, data_dim, bad);
      }
      chunk_nonbinary |= bad != 0;
    }
    if (chunk_nonbinary) nonbinary = true;
  });
  return nonbinary;
}

PreparedDiffusion prepare_binomial(const at::Tensor& x0, const at::Tensor& xt,
                                   const at::Tensor& logits, const at::Tensor& steps,
                                   const at::Tensor& betas) {
  const DiffusionSizes sizes = check_diffusion_kl_args(x0, xt, logits, "logits", steps, betas);
  return prepare_diffusion(x0, xt, logits, steps, betas, sizes, binomial_schedule_table);
}

template <RowMode kMode>
void run_binomial(const PreparedDiffusion& in, const at::Tensor& grad, const at::Tensor& kl,
                  const at::Tensor& elements) {
  bool nonbinary = false;
  AT_DISPATCH_FLOATING_TYPES(in.output.scalar_type(), "diffusion_binomial_kl_cpu", [&] {
    nonbinary = binomial_pass<kMode, scalar_t>(
        in.x0.const_data_ptr<scalar_t>(), in.xt.const_data_ptr<scalar_t>(),
        in.output.const_data_ptr<scalar_t>(), in.steps.const_data_ptr<int64_t>(),
        in.table.const_data_ptr<double>(), data_or_null<scalar_t>(grad),
        mutable_data_or_null<scalar_t>(kl), mutable_data_or_null<scalar_t>(elements), in.sizes);
  });
  if (nonbinary) raise_non_binary(in.x0, in.xt);
}

at::Tensor diffusion_binomial_kl_cpu(const at::Tensor& x0, const at::Tensor& xt,
                                     const at::Tensor& logits, const at::Tensor& steps,
                                     const at::Tensor& betas) {
  const PreparedDiffusion in = prepare_binomial(x0, xt, logits, steps, betas);
  at::Tensor kl = at::empty({in.sizes.num_slices, in.sizes.batch}, logits.options());
  run_binomial<RowMode::kValue>(in, at::Tensor(), kl, at::Tensor());
  return kl;
}

std::tuple<at::Tensor, at::Tensor> diffusion_binomial_kl_and_grad_cpu(
    const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& logits,
    const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedDiffusion in = prepare_binomial(x0, xt, logits, steps, betas);
  at::Tensor kl = at::empty({in.sizes.num_slices, in.sizes.batch}, logits.options());
  at::Tensor dlogits = at::empty(logits.sizes(), logits.options());
  run_binomial<RowMode::kValueAndGrad>(in, at::Tensor(), kl, dlogits);
  return {kl, dlogits};
}

at::Tensor diffusion_binomial_kl_backward_cpu(const at::Tensor& grad, const at::Tensor& x0,
                                              const at::Tensor& xt, const at::Tensor& logits,
                                              const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedDiffusion in = prepare_binomial(x0, xt, logits, steps, betas);
  check_diffusion_grad(grad, logits, "logits", in.sizes);
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  run_binomial<RowMode::kGrad>(in, grad.contiguous(), at::Tensor(), grad_logits);
  return grad_logits;
}

void diffusion_binomial_kl_and_grad_backward_cpu(const at::Tensor& grad, at::Tensor& dlogits) {
  check_diffusion_and_grad_backward_args(grad, dlogits, "dlogits");
  scale_buffer_in_place(grad, dlogits, "dlogits");
}

// ---------------------------------------------------------------------------
// CPU kernels of diffusion_gaussian_kl: OpenMP over (slice, example) rows,
// SIMD inside a row over D.
//
// Each row reads its step's c0, c1, vq and constant once (layout in
// diffusion.h); an element then costs one exp, exp(-log_var),
// shared by the KL and both derivatives:
//   KL_d = 0.5 (log_var + offset + (vq + (mq - mean)^2) e^-log_var),
//   offset = -log vq - 1 (t > 1) or log(2 pi) (t = 1, vq = 0, mq = x_0).
// The constant is added per element, not D times at the end of the row: near
// the posterior each term is small, and a row sum of D large terms would
// cancel away its digits. float gets target clones and the polynomial exp of
// fast_math.h; double keeps libm.

template <typename scalar_t>
struct GaussianStep {
  scalar_t c0, c1, var_q, offset;
};

template <typename scalar_t>
GaussianStep<scalar_t> gaussian_step(const double* table, int64_t step) {
  const double* row = table + (step - 1) * kGaussianColumns;
  return {static_cast<scalar_t>(row[kGaussianC0]), static_cast<scalar_t>(row[kGaussianC1]),
          static_cast<scalar_t>(row[kGaussianVarQ]), static_cast<scalar_t>(row[kGaussianOffset])};
}

// Returns sum_d KL_d unless kGrad; kValueAndGrad and kGrad also write
// d KL_d / d mean_d = (mean - mq) e^-log_var and d KL_d / d log_var_d =
// 0.5 (1 - (vq + (mq - mean)^2) e^-log_var), times grad (1 for kValueAndGrad).
template <RowMode kMode, typename scalar_t>
GENVAR_INLINE scalar_t gaussian_row_impl(const scalar_t* x0, const scalar_t* xt,
                                         const scalar_t* mean, const scalar_t* log_var,
                                         const GaussianStep<scalar_t>& step, scalar_t grad,
                                         scalar_t* grad_mean, scalar_t* grad_log_var,
                                         int64_t data_dim) {
  const scalar_t half_grad = scalar_t(0.5) * grad;
  scalar_t total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t d = 0; d < data_dim; ++d) {
    const scalar_t diff = step.c0 * x0[d] + step.c1 * xt[d] - mean[d];  // mq - mean
    const scalar_t precision = Math<scalar_t>::exp_any(-log_var[d]);
    const scalar_t spread_ratio = (step.var_q + diff * diff) * precision;
    if constexpr (kMode != RowMode::kGrad) total += (log_var[d] + step.offset) + spread_ratio;
    if constexpr (kMode != RowMode::kValue) {
      grad_mean[d] = -grad * diff * precision;
      grad_log_var[d] = half_grad - half_grad * spread_ratio;
    }
  }
  return scalar_t(0.5) * total;
}

// The row functions, float with target clones (the clones must be whole
// functions, not template instances) and double without (libm, no SIMD).
#define GENVAR_GAUSSIAN_ROW(name, mode)                                                      \
  GENVAR_TARGET_CLONES float name(const float* x0, const float* xt, const float* mean,      \
                                  const float* log_var, const GaussianStep<float>& step,    \
                                  float grad, float* grad_mean, float* grad_log_var,        \
                                  int64_t data_dim) {                                       \
    return gaussian_row_impl<mode>(x0, xt, mean, log_var, step, grad, grad_mean,            \
                                   grad_log_var, data_dim);                                 \
  }                                                                                          \
  double name(const double* x0, const double* xt, const double* mean, const double* log_var, \
              const GaussianStep<double>& step, double grad, double* grad_mean,             \
              double* grad_log_var, int64_t data_dim) {                                     \
    return gaussian_row_impl<mode>(x0, xt, mean, log_var, step, grad, grad_mean,            \
                                   grad_log_var, data_dim);                                 \
  }

GENVAR_GAUSSIAN_ROW(gaussian_row, RowMode::kValue)
GENVAR_GAUSSIAN_ROW(gaussian_row_and_grad, RowMode::kValueAndGrad)
GENVAR_GAUSSIAN_ROW(gaussian_grad_row, RowMode::kGrad)
#undef GENVAR_GAUSSIAN_ROW

// One pass of `kMode` over every (slice, example) row. kl [T', B], grad
// [T', B] and the element outputs [T', B, D] are null where unused.
template <RowMode kMode, typename scalar_t>
void gaussian_pass(const scalar_t* x0, const scalar_t* xt, const scalar_t* mean,
                   const scalar_t* log_var, const int64_t* steps, const double* table,
                   const scalar_t* grad, scalar_t* kl, scalar_t* grad_mean,
                   scalar_t* grad_log_var, const DiffusionSizes& sizes) {
  const int64_t data_dim = sizes.data_dim;
  at::parallel_for(0, sizes.num_slices * sizes.batch, grain_rows(data_dim),
                   [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const GaussianStep<scalar_t> step = gaussian_step<scalar_t>(table, steps[row]);
      const int64_t offset = row * data_dim;
      const scalar_t* x0_row = x0 + (row % sizes.batch) * data_dim;
      const scalar_t scale = grad == nullptr ? scalar_t(1) : grad[row];
      scalar_t* mean_out = grad_mean == nullptr ? nullptr : grad_mean + offset;
      scalar_t* log_var_out = grad_log_var == nullptr ? nullptr : grad_log_var + offset;
      if constexpr (kMode == RowMode::kValue) {
        kl[row] = gaussian_row(x0_row, xt + offset, mean + offset, log_var + offset, step, scale,
                               mean_out, log_var_out, data_dim);
      } else if constexpr (kMode == RowMode::kValueAndGrad) {
        kl[row] = gaussian_row_and_grad(x0_row, xt + offset, mean + offset, log_var + offset,
                                        step, scale, mean_out, log_var_out, data_dim);
      } else {
        gaussian_grad_row(x0_row, xt + offset, mean + offset, log_var + offset, step, scale,
                          mean_out, log_var_out, data_dim);
      }
    }
  });
}

// Prepared inputs plus log_var, which the shared preparation does not know.
struct PreparedGaussian {
  PreparedDiffusion common;
  at::Tensor log_var;
};

PreparedGaussian prepare_gaussian(const at::Tensor& x0, const at::Tensor& xt,
                                  const at::Tensor& mean, const at::Tensor& log_var,
                                  const at::Tensor& steps, const at::Tensor& betas) {
  const DiffusionSizes sizes = check_diffusion_gaussian_kl_args(x0, xt, mean, log_var, steps,
                                                                betas);
  return {prepare_diffusion(x0, xt, mean, steps, betas, sizes, gaussian_schedule_table),
          log_var.contiguous()};
}

template <RowMode kMode>
void run_gaussian(const PreparedGaussian& in, const at::Tensor& grad, const at::Tensor& kl,
                  const at::Tensor& grad_mean, const at::Tensor& grad_log_var) {
  const PreparedDiffusion& common = in.common;
  AT_DISPATCH_FLOATING_TYPES(common.output.scalar_type(), "diffusion_gaussian_kl_cpu", [&] {
    gaussian_pass<kMode, scalar_t>(
        common.x0.const_data_ptr<scalar_t>(), common.xt.const_data_ptr<scalar_t>(),
        common.output.const_data_ptr<scalar_t>(), in.log_var.const_data_ptr<scalar_t>(),
        common.steps.const_data_ptr<int64_t>(), common.table.const_data_ptr<double>(),
        data_or_null<scalar_t>(grad), mutable_data_or_null<scalar_t>(kl),
        mutable_data_or_null<scalar_t>(grad_mean), mutable_data_or_null<scalar_t>(grad_log_var),
        common.sizes);
  });
}

at::Tensor diffusion_gaussian_kl_cpu(const at::Tensor& x0, const at::Tensor& xt,
                                     const at::Tensor& mean, const at::Tensor& log_var,
                                     const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  at::Tensor kl = at::empty({in.common.sizes.num_slices, in.common.sizes.batch}, mean.options());
  run_gaussian<RowMode::kValue>(in, at::Tensor(), kl, at::Tensor(), at::Tensor());
  return kl;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diffusion_gaussian_kl_and_grad_cpu(
    const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& mean,
    const at::Tensor& log_var, const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  at::Tensor kl = at::empty({in.common.sizes.num_slices, in.common.sizes.batch}, mean.options());
  at::Tensor dmean = at::empty(mean.sizes(), mean.options());
  at::Tensor dlog_var = at::empty(mean.sizes(), mean.options());
  run_gaussian<RowMode::kValueAndGrad>(in, at::Tensor(), kl, dmean, dlog_var);
  return {kl, dmean, dlog_var};
}

std::tuple<at::Tensor, at::Tensor> diffusion_gaussian_kl_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& mean,
    const at::Tensor& log_var, const at::Tensor& steps, const at::Tensor& betas) {
  const PreparedGaussian in = prepare_gaussian(x0, xt, mean, log_var, steps, betas);
  check_diffusion_grad(grad, mean, "mean", in.common.sizes);
  at::Tensor grad_mean = at::empty(mean.sizes(), mean.options());
  at::Tensor grad_log_var = at::empty(mean.sizes(), mean.options());
  run_gaussian<RowMode::kGrad>(in, grad.contiguous(), at::Tensor(), grad_mean, grad_log_var);
  return {grad_mean, grad_log_var};
}

void diffusion_gaussian_kl_and_grad_backward_cpu(const at::Tensor& grad, at::Tensor& dmean,
                                                 at::Tensor& dlog_var) {
  check_diffusion_and_grad_backward_args(grad, dmean, "dmean");
  check_diffusion_and_grad_backward_args(grad, dlog_var, "dlog_var");
  check_shape(dlog_var, "dlog_var", dmean.sizes(), "[T', B, D] (from dmean)");
  scale_buffer_in_place(grad, dmean, "dmean");
  scale_buffer_in_place(grad, dlog_var, "dlog_var");
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("diffusion_binomial_kl", &diffusion_binomial_kl_cpu);
  m.impl("diffusion_binomial_kl_backward", &diffusion_binomial_kl_backward_cpu);
  m.impl("diffusion_binomial_kl_and_grad", &diffusion_binomial_kl_and_grad_cpu);
  m.impl("diffusion_binomial_kl_and_grad_backward_", &diffusion_binomial_kl_and_grad_backward_cpu);
  m.impl("diffusion_gaussian_kl", &diffusion_gaussian_kl_cpu);
  m.impl("diffusion_gaussian_kl_backward", &diffusion_gaussian_kl_backward_cpu);
  m.impl("diffusion_gaussian_kl_and_grad", &diffusion_gaussian_kl_and_grad_cpu);
  m.impl("diffusion_gaussian_kl_and_grad_backward_", &diffusion_gaussian_kl_and_grad_backward_cpu);
}

}  // namespace genvar::cpu
