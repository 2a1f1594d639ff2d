// ATen float dtypes -> the storage types of the torch-free kernels (csrc/kernels/dtypes.h).
#pragma once
#include <ATen/ATen.h>

#include "kernels/dtypes.h"

namespace v4_ascend::cpu {

// Calls f with a null pointer of the torch-free storage type of a float dtype (float32, float64,
// bfloat16; float16 otherwise: the caller has checked that the dtype is one of these four).
template <typename F>
void with_core_type(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat: return f(static_cast<float*>(nullptr));
    case at::kDouble: return f(static_cast<double*>(nullptr));
    case at::kBFloat16: return f(static_cast<v4k::bf16*>(nullptr));
    default: return f(static_cast<_Float16*>(nullptr));
  }
}

}  // namespace v4_ascend::cpu
