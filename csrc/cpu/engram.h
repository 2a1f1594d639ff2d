// Argument checks and dtype dispatch shared by the Engram adapters (engram_hash, engram_lookup and the
// fused engram_hash_lookup), so the fused op rejects exactly what its two parts reject.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "cpu/checks.h"
#include "kernels/engram_hash.h"
#include "kernels/engram_lookup.h"

namespace v4_ascend::cpu::engram {

// Hash inputs, checked and made contiguous (they are small int64 tensors).
struct HashInputs {
  at::Tensor ids, multipliers, moduli, offsets, history;  // history undefined = start of the sequence
  v4k::EngramHashShape shape;
  int64_t batch;

  int64_t columns() const { return (shape.orders - 1) * shape.heads; }
  const int64_t* history_of(int64_t b) const {
    return history.defined() ? history.data_ptr<int64_t>() + b * (shape.orders - 1) : nullptr;
  }
};

inline void check_int64(const char* op, const char* arg, const at::Tensor& x, int64_t rank) {
  check_rank(op, arg, x, rank);
  check_dtype(op, arg, x, at::kLong);
}

inline void check_min(const char* op, const char* arg, const at::Tensor& x, int64_t low, const char* what) {
  const int64_t least = v4k::min_value(x.data_ptr<int64_t>(), x.numel(), low);
  TORCH_CHECK_VALUE(least >= low, op, ": '", arg, "' must be ", what, ", got a value ", least);
}

// Shapes and dtypes of the hash inputs (no data read): what engram_hash's fake kernel checks.
inline void check_hash_shapes(const char* op, const at::Tensor& ids, const at::Tensor& multipliers,
                              const at::Tensor& moduli, const at::Tensor& offsets, int64_t pad_id,
                              const std::optional<at::Tensor>& history) {
  check_int64(op, "ids", ids, 2);
  check_int64(op, "multipliers", multipliers, 1);
  const int64_t N = multipliers.size(0);
  TORCH_CHECK_VALUE(N >= 2, op, ": 'multipliers' must be of length max_ngram >= 2 (one per look-back), got length ",
                    N);
  check_int64(op, "moduli", moduli, 2);
  TORCH_CHECK_VALUE(moduli.size(0) == N - 1, op, ": 'moduli' must be of shape (", N - 1, ", *), got ", moduli.sizes());
  check_int64(op, "offsets", offsets, 2);
  check_shape(op, "offsets", offsets, moduli.sizes());
  TORCH_CHECK_VALUE(pad_id >= 0, op, ": 'pad_id' must be a compressed token id >= 0, got ", pad_id);
  if (history) {
    check_dtype(op, "history", *history, at::kLong);
    check_shape(op, "history", *history, {ids.size(0), N - 1});
  }
}

// The data checks (ids, history >= 0, moduli >= 1) on contiguous copies.
inline HashInputs hash_inputs(const char* op, const at::Tensor& ids, const at::Tensor& multipliers,
                              const at::Tensor& moduli, const at::Tensor& offsets,
                              const std::optional<at::Tensor>& history) {
  HashInputs in{ids.contiguous(), multipliers.contiguous(), moduli.contiguous(), offsets.contiguous(),
                history ? history->contiguous() : at::Tensor(),
                v4k::EngramHashShape{ids.size(1), multipliers.size(0), moduli.size(1)}, ids.size(0)};
  check_min(op, "ids", in.ids, 0, "compressed token ids >= 0");
  check_min(op, "moduli", in.moduli, 1, "positive bucket sizes");
  if (in.history.defined()) check_min(op, "history", in.history, 0, "compressed token ids >= 0");
  return in;
}

// Checks a table, its fp8 block scales and the output dtype; returns the output dtype.
inline at::ScalarType check_table(const char* op, const at::Tensor& table, const std::optional<at::Tensor>& scale,
                                  std::optional<at::ScalarType> out_dtype) {
  check_rank(op, "table", table, 2);
  const bool fp8 = table.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK_VALUE(fp8 || is_float(table.scalar_type()), op,
                    ": 'table' must be float32 or bfloat16 or float16 or float64 or float8_e4m3fn, got ",
                    dtype_name(table.scalar_type()));
  const int64_t R = table.size(0), E = table.size(1);
  if (fp8) {
    TORCH_CHECK_VALUE(E % v4k::kFp8Block == 0, op, ": 'table' must be [R, E] with E a multiple of ", v4k::kFp8Block,
                      " for an fp8 table, got ", table.sizes());
    TORCH_CHECK_VALUE(scale.has_value(), op,
                      ": 'scale' must be a [R, E/32] UE8M0 (uint8 / float8_e8m0fnu) or fp32 tensor for an fp8 "
                      "table, got None");
    const auto st = scale->scalar_type();
    TORCH_CHECK_VALUE(st == at::kByte || st == at::kFloat8_e8m0fnu || st == at::kFloat, op,
                      ": 'scale' must be uint8 or float8_e8m0fnu or float32, got ", dtype_name(st));
    check_shape(op, "scale", *scale, {R, E / v4k::kFp8Block});
  } else {
    TORCH_CHECK_VALUE(!scale.has_value(), op, ": 'scale' must be None for a ", dtype_name(table.scalar_type()),
                      " table (scales are for fp8 tables), got a tensor");
  }
  TORCH_CHECK_VALUE(!out_dtype || is_float(*out_dtype), op,
                    ": 'out_dtype' must be None or a float dtype (bf16, fp16, fp32, fp64), got ",
                    dtype_name(*out_dtype));
  return out_dtype.value_or(fp8 ? at::kBFloat16 : table.scalar_type());
}

// Calls fn with a value of the C++ element type of a float dtype.
template <typename Fn>
void with_float_type(at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kDouble: fn(double{}); break;
    case at::kFloat: fn(float{}); break;
    case at::kBFloat16: fn(v4k::bf16{}); break;
    default: fn(_Float16{}); break;
  }
}

// Calls fn(source, out) with the row source of a (contiguous) table, converted or dequantised to the
// element type of `out` (at::Tensor of out_type). Each thread copies `source` (FP8 sources hold scratch).
template <typename Fn>
void with_row_source(const at::Tensor& table, const at::Tensor& scale, const at::Tensor& out, Fn&& fn) {
  const int64_t E = table.size(1);
  if (table.scalar_type() == at::kFloat8_e4m3fn) {
    v4k::Fp8Scales scales;
    if (scale.scalar_type() == at::kFloat)
      scales.fp32 = scale.data_ptr<float>();
    else
      scales.ue8m0 = static_cast<const uint8_t*>(scale.data_ptr());
    with_float_type(out.scalar_type(), [&](auto out_tag) {
      using Out = decltype(out_tag);
      fn(v4k::Fp8TableRows<Out>(static_cast<const uint8_t*>(table.data_ptr()), scales, E),
         static_cast<Out*>(out.data_ptr()));
    });
    return;
  }
  with_float_type(table.scalar_type(), [&](auto in_tag) {
    using In = decltype(in_tag);
    with_float_type(out.scalar_type(), [&](auto out_tag) {
      using Out = decltype(out_tag);
      fn(v4k::FloatTableRows<In, Out>{static_cast<const In*>(table.data_ptr()), E}, static_cast<Out*>(out.data_ptr()));
    });
  });
}

}  // namespace v4_ascend::cpu::engram
