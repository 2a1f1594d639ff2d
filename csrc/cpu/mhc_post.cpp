// ATen adapter of the mHC post-mix: argument checks like the reference, dtype dispatch, threads over tokens.
// Non-contiguous inputs are made contiguous (a copy); post and comb are converted to the accumulation type.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/mhc_post.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry =
    describe_kernel("mhc_post", "C++ fused post * f + comb^T x per token in one pass (vectorised channel tiles)");

template <typename T, typename A = typename v4k::Acc<T>::type>
void run(const at::Tensor& f, const at::Tensor& x, const at::Tensor& post, const at::Tensor& comb, at::Tensor& out) {
  const int64_t T_ = x.size(0), n = x.size(1), D = x.size(2);
  const T* fp = reinterpret_cast<const T*>(f.data_ptr());
  const T* xp = reinterpret_cast<const T*>(x.data_ptr());
  const A* pp = post.data_ptr<A>();
  const A* cp = comb.data_ptr<A>();
  T* op = reinterpret_cast<T*>(out.data_ptr());
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, n * D));
  at::parallel_for(0, T_, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      v4k::mhc_post_token(fp + t * D, xp + t * n * D, pp + t * n, cp + t * n * n, n, D, op + t * n * D);
  });
}

at::Tensor mhc_post(const at::Tensor& f, const at::Tensor& x, const at::Tensor& post, const at::Tensor& comb) {
  const char* op = "mhc_post";
  check_rank(op, "x", x, 3);
  check_float(op, "x", x);
  const int64_t T_ = x.size(0), n = x.size(1), D = x.size(2);
  check_shape(op, "f", f, {T_, D});
  TORCH_CHECK_VALUE(f.scalar_type() == x.scalar_type(), op, ": 'f' must be ", dtype_name(x.scalar_type()),
                    " like 'x', got ", dtype_name(f.scalar_type()));
  check_float(op, "post", post);
  check_shape(op, "post", post, {T_, n});
  check_float(op, "comb", comb);
  check_shape(op, "comb", comb, {T_, n, n});
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto fc = f.contiguous(), xc = x.contiguous();
  const auto pc = post.to(acc).contiguous(), cc = comb.to(acc).contiguous();
  auto out = at::empty({T_, n, D}, x.options());
  switch (x.scalar_type()) {
    case at::kDouble: run<double>(fc, xc, pc, cc, out); break;
    case at::kFloat: run<float>(fc, xc, pc, cc, out); break;
    case at::kBFloat16: run<v4k::bf16>(fc, xc, pc, cc, out); break;
    default: run<_Float16>(fc, xc, pc, cc, out); break;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("mhc_post", &mhc_post); }

}  // namespace v4_ascend::cpu
