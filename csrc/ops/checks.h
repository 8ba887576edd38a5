// Argument checks shared by every op's schema file: each names the argument and
// says what was expected and what came.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace genvar {

inline void check_floating(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.scalar_type() == at::kFloat || tensor.scalar_type() == at::kDouble,
              name, " must be float32 or float64, got ", tensor.scalar_type());
}

inline void check_rank(const at::Tensor& tensor, const char* name, int64_t rank, const char* layout) {
  TORCH_CHECK(tensor.dim() == rank, name, " must have rank ", rank, " ", layout,
              ", got shape ", tensor.sizes());
}

inline void check_shape(const at::Tensor& tensor, const char* name, at::IntArrayRef expected,
                 const char* layout) {
  TORCH_CHECK(tensor.sizes() == expected, name, " must have shape ", layout, " = ", expected,
              ", got ", tensor.sizes());
}

inline void check_same_dtype_and_device(const at::Tensor& reference, const char* reference_name,
                                 const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.scalar_type() == reference.scalar_type(), name, " has dtype ",
              tensor.scalar_type(), " but ", reference_name, " has dtype ",
              reference.scalar_type(), ": all inputs must share one dtype");
  TORCH_CHECK(tensor.device() == reference.device(), name, " is on ", tensor.device(), " but ",
              reference_name, " is on ", reference.device(),
              ": all inputs must be on one device");
}

}  // namespace genvar
