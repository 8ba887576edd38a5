// CPU kernels of diffusion_binomial_kl: OpenMP over (slice, example) rows,
// SIMD inside a row over D.
//
// Each row reads its step's q and entropy for the four binary (x_t, x_0)
// cells once (layout in ../ops/diffusion_table.h), so an element costs one
// softplus, whose exp also gives the sigmoid, and selects. The same pass flags
// non-binary x0 or xt, which is an error. float gets target clones and the
// polynomial exp/log1p of fast_math.h; double keeps libm.
#include "diffusion_common.h"
#include "fast_math.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <string>
#include <tuple>
#include <utility>

namespace genvar::cpu {
namespace {

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

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CPU, m) {
  m.impl("diffusion_binomial_kl", &diffusion_binomial_kl_cpu);
  m.impl("diffusion_binomial_kl_backward", &diffusion_binomial_kl_backward_cpu);
  m.impl("diffusion_binomial_kl_and_grad", &diffusion_binomial_kl_and_grad_cpu);
  m.impl("diffusion_binomial_kl_and_grad_backward_", &diffusion_binomial_kl_and_grad_backward_cpu);
}

}  // namespace genvar::cpu
