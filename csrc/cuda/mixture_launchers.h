// Launchers of the mixture log-density CUDA passes.
//
// Like iwae_launchers.h, this header and mixture_kernels.cu see no torch
// header; mixture_cuda.cpp runs the GEMMs (cuBLAS, through ATen) and hands
// each tile over as a MixtureTile of device pointers (see ../ops/mixture_tile.h).
// Each launcher enqueues on `stream`, never synchronises, launches nothing for
// an empty tile and returns the launch error. Only float and double exist.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../ops/mixture_tile.h"

namespace genvar::cuda {

// Folds the tile into each row's running logsumexp of -|z - c_n|^2 / (2 s^2),
// held as running_shift[rows] and running_sum[rows] = sum exp(exponent -
// shift) (both double; see mixture_log_density_tiled), the entries within the
// row's band taken from exact differences. Leaves rows whose
// half_query_norm is not finite alone.
template <typename scalar_t>
cudaError_t launch_mixture_forward_tile(const MixtureTile<scalar_t>& tile, double* running_shift,
                                        double* running_sum, cudaStream_t stream);

// Overwrites tile.gram with W[m, n] = row_weight[m] * responsibility[m, n],
// responsibility = exp(t[m, n] - log_normaliser_m), log_normaliser_m =
// half_query_norm[m] + log_kernel_sum[m]; NaN rows where either is not finite.
template <typename scalar_t>
cudaError_t launch_mixture_weights_tile(const MixtureTile<scalar_t>& tile,
                                        const double* log_kernel_sum,
                                        const scalar_t* row_weight, cudaStream_t stream);

}  // namespace genvar::cuda
