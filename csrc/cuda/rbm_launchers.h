// Launcher of the RBM sampling kernel.
//
// This header and rbm_kernels.cu see no torch header, so the kernel builds
// with nvcc alone; rbm_cuda.cpp checks the arguments, runs the products with
// cuBLAS (at::mm) and passes raw pointers in.
//
// All pointers are device pointers to contiguous row-major arrays. The
// launcher enqueues on `stream`, never synchronises, launches nothing when
// rows x columns = 0 and returns the launch error. Only the float and double
// instantiations exist.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace genvar::cuda {

// One layer of a Gibbs sweep: out[r, j] = 1 if u(r, j) < sigmoid(beta (pre[r, j]
// + add[j]) + shift[j]) else 0, for pre and out [rows, columns], add and shift
// [columns] (either may be null: 0), and u the Philox uniforms of (seed, step)
// in the layout of ../philox.h.
template <typename scalar_t>
cudaError_t launch_rbm_sample(const scalar_t* pre, const scalar_t* add, const scalar_t* shift,
                              scalar_t beta, int64_t rows, int64_t columns, uint64_t seed,
                              uint64_t step, scalar_t* out, cudaStream_t stream);

}  // namespace genvar::cuda
