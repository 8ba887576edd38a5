// genvar::rbm_gibbs on CUDA: the kernel of the sweeps' fused pass (bias,
// beta, sigmoid, Philox Bernoulli draw), its launcher, and the op's CUDA
// implementation.
//
// The kernel and launcher include no torch header, so they compile with
// plain nvcc. One thread per block of 4 columns of a row, which is one
// Philox call (the layout of ../philox.h, so every backend draws the same
// numbers); a grid-stride loop covers the rest. The sigmoid uses the
// accurate exp, as the references do; nvcc may fuse beta * pre + shift into
// one FMA, which moves p by an ulp against the reference's two roundings (a
// flipped draw needs a 24-bit u within that ulp of p). The launcher takes
// device pointers to contiguous row-major arrays, enqueues on `stream`,
// never synchronises, launches nothing when rows x columns = 0 and returns
// the launch error. Only the float and double instantiations exist.
//
// The implementation, per half-sweep: the product by cuBLAS (at::mm_out on
// the current stream) into a pre-activation buffer allocated once per call,
// then the fused kernel, on the same Philox stream as the CPU. The argument
// checks are the CPU's (../ops/rbm.cpp); v is not checked for binary values
// here (that would be another pass and a synchronisation): a non-binary v
// enters the first product as it is.
#include "device_utils.cuh"
#include "../philox.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace genvar::cuda {
namespace {

constexpr int kThreads = 256;

// 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below, as the CPU computes it.
template <typename scalar_t>
__device__ __forceinline__ scalar_t sigmoid_of(scalar_t logit) {
  const scalar_t e = exp_of(-(logit < scalar_t(0) ? -logit : logit));
  return (logit >= scalar_t(0) ? scalar_t(1) : e) / (scalar_t(1) + e);
}

template <typename scalar_t>
__global__ void rbm_sample_kernel(const scalar_t* __restrict__ pre,
                                  const scalar_t* __restrict__ add,
                                  const scalar_t* __restrict__ shift, scalar_t beta, int64_t rows,
                                  int64_t columns, PhiloxLayerStream stream,
                                  scalar_t* __restrict__ out) {
  const int64_t blocks_per_row = (columns + 3) / 4;
  const int64_t total = rows * blocks_per_row;
  for (int64_t index = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; index < total;
       index += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = index / blocks_per_row, block = index % blocks_per_row;
    uint32_t words[4];
    philox_block_words(stream, static_cast<uint32_t>(block), static_cast<uint32_t>(row),
                       words[0], words[1], words[2], words[3]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t column = 4 * block + k;
      if (column >= columns) break;
      const int64_t at = row * columns + column;
      const scalar_t bias = add == nullptr ? scalar_t(0) : add[column];
      const scalar_t offset = shift == nullptr ? scalar_t(0) : shift[column];
      const scalar_t p = sigmoid_of(beta * (pre[at] + bias) + offset);
      out[at] = philox_uniform<scalar_t>(words[k]) < p ? scalar_t(1) : scalar_t(0);
    }
  }
}

}  // namespace

// One layer of a Gibbs sweep: out[r, j] = 1 if u(r, j) < sigmoid(beta (pre[r, j]
// + add[j]) + shift[j]) else 0, for pre and out [rows, columns], add and shift
// [columns] (either may be null: 0), and u the Philox uniforms of (seed, step)
// in the layout of ../philox.h.
template <typename scalar_t>
cudaError_t launch_rbm_sample(const scalar_t* pre, const scalar_t* add, const scalar_t* shift,
                              scalar_t beta, int64_t rows, int64_t columns, uint64_t seed,
                              uint64_t step, scalar_t* out, cudaStream_t stream) {
  const int64_t total = rows * ((columns + 3) / 4);
  if (total == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks);
  rbm_sample_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      pre, add, shift, beta, rows, columns, philox_layer_stream(seed, step), out);
  return cudaGetLastError();
}

template cudaError_t launch_rbm_sample<float>(const float*, const float*, const float*, float,
                                              int64_t, int64_t, uint64_t, uint64_t, float*,
                                              cudaStream_t);
template cudaError_t launch_rbm_sample<double>(const double*, const double*, const double*,
                                               double, int64_t, int64_t, uint64_t, uint64_t,
                                               double*, cudaStream_t);

}  // namespace genvar::cuda

// ---------------------------------------------------------------------------
// The ops' CUDA implementations and their registration: tensor handling in
// ATen, raw pointers into the launchers above. Only a CUDA build of the
// extension (GENVAR_WITH_CUDA: setup.py, CMake) compiles this part; nvcc
// alone, as in tests/test_cuda_compile.py, compiles the kernels without torch.
#ifdef GENVAR_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "../ops/rbm.h"
#include "stream.h"

namespace genvar {
namespace {

template <typename scalar_t>
void sample_layer(const at::Tensor& pre, const at::Tensor& add, const at::Tensor& shift,
                  double beta, int64_t seed, uint64_t step, at::Tensor& out) {
  C10_CUDA_CHECK(cuda::launch_rbm_sample<scalar_t>(
      pre.const_data_ptr<scalar_t>(), add.defined() ? add.const_data_ptr<scalar_t>() : nullptr,
      shift.defined() ? shift.const_data_ptr<scalar_t>() : nullptr,
      static_cast<scalar_t>(beta), out.size(0), out.size(1), static_cast<uint64_t>(seed), step,
      out.mutable_data_ptr<scalar_t>(), current_stream()));
}

std::tuple<at::Tensor, at::Tensor> rbm_gibbs_cuda(
    const at::Tensor& v, const at::Tensor& weight, const at::Tensor& visible_bias,
    const at::Tensor& hidden_bias, double beta, int64_t sweeps, int64_t seed, int64_t offset,
    const std::optional<at::Tensor>& base_visible_bias) {
  const RbmSizes sizes = check_rbm_gibbs_args(v, weight, visible_bias, hidden_bias, beta, sweeps,
                                              seed, offset, base_visible_bias);
  const c10::cuda::CUDAGuard device_guard(v.device());
  const at::Tensor weight_c = weight.detach().contiguous();
  const at::Tensor weight_t = weight_c.t();  // cuBLAS takes the transpose as it is
  const at::Tensor hidden_add = hidden_bias.detach().contiguous();
  const at::Tensor shift = rbm_visible_shift(visible_bias.detach(), beta, base_visible_bias);
  at::Tensor visible = v.detach().contiguous().clone();
  at::Tensor hidden = at::empty({sizes.chains, sizes.hidden}, v.options());
  at::Tensor pre_hidden = at::empty({sizes.chains, sizes.hidden}, v.options());
  at::Tensor pre_visible = at::empty({sizes.chains, sizes.visible}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "rbm_gibbs_cuda", [&] {
    for (int64_t sweep = 0; sweep < sweeps; ++sweep) {
      const uint64_t step = static_cast<uint64_t>(offset + 2 * sweep);
      at::mm_out(pre_hidden, visible, weight_c);
      sample_layer<scalar_t>(pre_hidden, hidden_add, at::Tensor(), beta, seed, step, hidden);
      at::mm_out(pre_visible, hidden, weight_t);
      sample_layer<scalar_t>(pre_visible, at::Tensor(), shift, beta, seed, step + 1, visible);
    }
  });
  return {visible, hidden};
}

}  // namespace

TORCH_LIBRARY_IMPL(genvar, CUDA, m) { m.impl("rbm_gibbs", &rbm_gibbs_cuda); }

}  // namespace genvar

#endif  // GENVAR_WITH_CUDA
