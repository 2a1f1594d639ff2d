// ATen adapters of the quantisation family's CPU kernels (fp8/fp4 quantisation and fake-quantisation, Hadamard
// rotation): argument checks like the reference, dtype dispatch, threads over rows. Non-contiguous inputs are
// made contiguous (a copy); outputs are contiguous like the reference's.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/quant.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& fp8_entry = describe_kernel(
    "fp8_fake_quant", "C++ per-row FP8 e4m3 round trip with UE8M0 block scales in fp32 (bit-exact with the reference)");
KernelEntry& fp4_entry = describe_kernel(
    "fp4_fake_quant", "C++ per-row FP4 e2m1 round trip with UE8M0 block scales in fp32 (bit-exact with the reference)");
KernelEntry& fp8_quant_entry = describe_kernel(
    "fp8_quant", "C++ per-row FP8 e4m3 codes and UE8M0 block scales in fp32 (bit-exact with the reference)");
KernelEntry& fp4_quant_entry = describe_kernel(
    "fp4_quant", "C++ per-row packed FP4 e2m1 codes and UE8M0 block scales in fp32 (bit-exact with the reference)");
KernelEntry& hadamard_entry = describe_kernel(
    "hadamard_rotate", "C++ per-row Walsh-Hadamard butterflies in fp32 (fp64 for fp64), the reference's add order");

// Values per parallel chunk: decode-sized inputs run on the calling thread.
constexpr int64_t kGrainValues = 1 << 16;

// A shape as Python prints a tuple, so that messages read like the reference's.
std::string py_shape(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << (sizes.size() == 1 ? ",)" : ")");
  return s.str();
}

// check_act_quant of the reference: float x [..., K] with K a multiple of a positive (even) block.
void check_act_quant(const char* op, const at::Tensor& x, int64_t block, bool even) {
  check_float(op, "x", x);
  TORCH_CHECK_VALUE(block >= 1 && !(even && block % 2), op, ": 'block' must be ",
                    even ? "a positive even int" : "a positive int", ", got ", block);
  TORCH_CHECK_VALUE(x.dim() > 0 && x.size(-1) % block == 0, op, ": 'x' must be [..., K] with K a multiple of block=",
                    block, ", got shape ", py_shape(x.sizes()));
}

// Applies row(in, out, K) of storage type T to every row of x's last dim, threads over rows.
template <typename T, typename Row>
void each_row(const at::Tensor& x, at::Tensor& out, Row row) {
  const int64_t K = x.size(-1), rows = x.numel() / K;
  const T* in = reinterpret_cast<const T*>(x.data_ptr());
  T* dst = reinterpret_cast<T*>(out.data_ptr());
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrainValues / K), [&](int64_t begin, int64_t end) {
    row(in + begin * K, dst + begin * K, end - begin);
  });
}

template <typename T>
void fake_quant_rows(const at::Tensor& x, at::Tensor& out, int64_t block, bool fp4) {
  const int64_t K = x.size(-1);
  each_row<T>(x, out, [&](const T* in, T* dst, int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) {
      if (fp4) {
        v4k::quant::fp4_fake_quant_row(in + r * K, dst + r * K, K, block);
      } else {
        v4k::quant::fp8_fake_quant_row(in + r * K, dst + r * K, K, block);
      }
    }
  });
}

at::Tensor fake_quant(const char* op, KernelEntry& entry, const at::Tensor& x, int64_t block, bool fp4) {
  check_act_quant(op, x, block, fp4);
  entry.calls.fetch_add(1, std::memory_order_relaxed);
  const auto xc = x.contiguous();
  auto out = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return out;
  switch (x.scalar_type()) {
    case at::kDouble: fake_quant_rows<double>(xc, out, block, fp4); break;
    case at::kFloat: fake_quant_rows<float>(xc, out, block, fp4); break;
    case at::kBFloat16: fake_quant_rows<v4k::bf16>(xc, out, block, fp4); break;
    default: fake_quant_rows<_Float16>(xc, out, block, fp4); break;
  }
  return out;
}

at::Tensor fp8_fake_quant(const at::Tensor& x, int64_t block) {
  return fake_quant("fp8_fake_quant", fp8_entry, x, block, false);
}

at::Tensor fp4_fake_quant(const at::Tensor& x, int64_t block) {
  return fake_quant("fp4_fake_quant", fp4_entry, x, block, true);
}

// Quantises every row of x into codes (codes_per_row bytes each) and block scales.
template <typename T>
void quant_rows(const at::Tensor& x, at::Tensor& codes, at::Tensor& scale, int64_t block, bool fp4) {
  const int64_t K = x.size(-1), rows = x.numel() / K, bytes = fp4 ? K / 2 : K, blocks = K / block;
  const T* in = reinterpret_cast<const T*>(x.data_ptr());
  uint8_t* q = reinterpret_cast<uint8_t*>(codes.data_ptr());
  float* s = scale.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrainValues / K), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (fp4) {
        v4k::quant::fp4_quant_row(in + r * K, q + r * bytes, s + r * blocks, K, block);
      } else {
        v4k::quant::fp8_quant_row(in + r * K, q + r * bytes, s + r * blocks, K, block);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> quant(const char* op, KernelEntry& entry, const at::Tensor& x, int64_t block,
                                         bool fp4) {
  check_act_quant(op, x, block, fp4);
  entry.calls.fetch_add(1, std::memory_order_relaxed);
  const auto xc = x.contiguous();
  std::vector<int64_t> code_shape = x.sizes().vec(), scale_shape = x.sizes().vec();
  code_shape.back() = fp4 ? x.size(-1) / 2 : x.size(-1);
  scale_shape.back() = x.size(-1) / block;
  auto codes = at::empty(code_shape, x.options().dtype(fp4 ? at::kByte : at::kFloat8_e4m3fn));
  auto scale = at::empty(scale_shape, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {codes, scale};
  switch (x.scalar_type()) {
    case at::kDouble: quant_rows<double>(xc, codes, scale, block, fp4); break;
    case at::kFloat: quant_rows<float>(xc, codes, scale, block, fp4); break;
    case at::kBFloat16: quant_rows<v4k::bf16>(xc, codes, scale, block, fp4); break;
    default: quant_rows<_Float16>(xc, codes, scale, block, fp4); break;
  }
  return {codes, scale};
}

std::tuple<at::Tensor, at::Tensor> fp8_quant(const at::Tensor& x, int64_t block) {
  return quant("fp8_quant", fp8_quant_entry, x, block, false);
}

std::tuple<at::Tensor, at::Tensor> fp4_quant(const at::Tensor& x, int64_t block) {
  return quant("fp4_quant", fp4_quant_entry, x, block, true);
}

template <typename T, typename A = typename v4k::Acc<T>::type>
void hadamard_rows(const at::Tensor& x, at::Tensor& out) {
  const int64_t n = x.size(-1);
  // The reference multiplies its fp32 (fp64) tensor by the Python float 1/sqrt(n), cast to that dtype.
  const A norm = static_cast<A>(1.0 / std::sqrt(static_cast<double>(n)));
  each_row<T>(x, out, [&](const T* in, T* dst, int64_t rows) {
    std::vector<A> work(n);
    for (int64_t r = 0; r < rows; ++r) v4k::quant::hadamard_row(in + r * n, dst + r * n, n, norm, work.data());
  });
}

at::Tensor hadamard_rotate(const at::Tensor& x) {
  const char* op = "hadamard_rotate";
  check_float(op, "x", x);
  const int64_t n = x.dim() ? x.size(-1) : 0;
  TORCH_CHECK_VALUE(n >= 1 && (n & (n - 1)) == 0, op, ": 'x' must be [..., n] with n a power of two, got shape ",
                    py_shape(x.sizes()));
  hadamard_entry.calls.fetch_add(1, std::memory_order_relaxed);
  const auto xc = x.contiguous();
  auto out = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return out;
  switch (x.scalar_type()) {
    case at::kDouble: hadamard_rows<double>(xc, out); break;
    case at::kFloat: hadamard_rows<float>(xc, out); break;
    case at::kBFloat16: hadamard_rows<v4k::bf16>(xc, out); break;
    default: hadamard_rows<_Float16>(xc, out); break;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) {
  m.impl("fp8_fake_quant", &fp8_fake_quant);
  m.impl("fp4_fake_quant", &fp4_fake_quant);
  m.impl("fp8_quant", &fp8_quant);
  m.impl("fp4_quant", &fp4_quant);
  m.impl("hadamard_rotate", &hadamard_rotate);
}

}  // namespace v4_ascend::cpu
