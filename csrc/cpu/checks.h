// Argument checks of the CPU kernels; messages name the op and the argument like the Python ones.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace v4_ascend::cpu {

// The Python spelling of a dtype (int32, not Int), so C++ and Python errors read alike.
inline const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kByte: return "uint8";
    default: return c10::toString(dtype);
  }
}

inline void check_rank(const char* op, const char* arg, const at::Tensor& x, int64_t rank) {
  TORCH_CHECK_VALUE(x.dim() == rank, op, ": '", arg, "' must be ", rank, "-D, got shape ", x.sizes());
}

inline void check_dtype(const char* op, const char* arg, const at::Tensor& x, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(x.scalar_type() == dtype, op, ": '", arg, "' must be ", dtype_name(dtype), ", got ",
                    dtype_name(x.scalar_type()));
}

inline bool is_float(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf;
}

// A float32 / bfloat16 / float16 / float64 tensor.
inline void check_float(const char* op, const char* arg, const at::Tensor& x) {
  TORCH_CHECK_VALUE(is_float(x.scalar_type()), op, ": '", arg, "' must be float32 or bfloat16 or float16 or float64, got ",
                    dtype_name(x.scalar_type()));
}

// A tensor of exactly this shape.
inline void check_shape(const char* op, const char* arg, const at::Tensor& x, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(x.sizes() == shape, op, ": '", arg, "' must be of shape ", shape, ", got ", x.sizes());
}

// An int32 [rows, *] index tensor.
inline void check_index(const char* op, const char* arg, const at::Tensor& idx, int64_t rows) {
  check_rank(op, arg, idx, 2);
  check_dtype(op, arg, idx, at::kInt);
  TORCH_CHECK_VALUE(idx.size(0) == rows, op, ": '", arg, "' must have ", rows, " rows, got ", idx.size(0));
}

// An optional int32 [rows] tensor of per-row lengths in [0, width].
inline void check_lengths(const char* op, const char* arg, const std::optional<at::Tensor>& length, int64_t rows,
                          int64_t width) {
  if (!length) return;
  check_rank(op, arg, *length, 1);
  check_dtype(op, arg, *length, at::kInt);
  TORCH_CHECK_VALUE(length->size(0) == rows, op, ": '", arg, "' must have ", rows, " entries");
  if (length->numel() == 0) return;
  const auto lo = length->min().item<int32_t>(), hi = length->max().item<int32_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi <= width, op, ": '", arg, "' values must be in [0, ", width, "]");
}

}  // namespace v4_ascend::cpu
