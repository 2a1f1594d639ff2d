// ATen adapter of the mHC pre-mix: argument checks like the reference, dtype dispatch, threads over groups
// of tokens. x is made contiguous (a copy when it is not); fn, scale and base are converted to the
// accumulation type, fn zero-padded to a multiple of 16 columns when needed (small copies).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/mhc_pre.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "mhc_pre", "C++ fused RMS + fn projection (4 mixes x 4 tokens tiles) + sigmoids + Sinkhorn + stream sum");

template <typename T, typename A = typename v4k::Acc<T>::type>
void run(const at::Tensor& x, const at::Tensor& fn, const at::Tensor& scale, const at::Tensor& base,
         const v4k::MhcPreShape& shape, at::Tensor& u, at::Tensor& post, at::Tensor& comb) {
  const int64_t T_ = x.size(0);
  const T* xp = reinterpret_cast<const T*>(x.data_ptr());
  T* up = reinterpret_cast<T*>(u.data_ptr());
  const int64_t groups = (T_ + v4k::kMhcTokens - 1) / v4k::kMhcTokens;
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    v4k::MhcPreWorkspace<A> ws(shape);
    for (int64_t g = begin; g < end; ++g)
      v4k::mhc_pre_group<T, A>(xp, fn.data_ptr<A>(), scale.data_ptr<A>(), base.data_ptr<A>(), shape,
                               g * v4k::kMhcTokens, std::min(T_, (g + 1) * v4k::kMhcTokens), up,
                               post.data_ptr<A>(), comb.data_ptr<A>(), ws);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mhc_pre(const at::Tensor& x, const at::Tensor& fn,
                                                       const at::Tensor& scale, const at::Tensor& base, int64_t iters,
                                                       double norm_eps, double hc_eps) {
  const char* op = "mhc_pre";
  check_rank(op, "x", x, 3);
  check_float(op, "x", x);
  const int64_t T_ = x.size(0), n = x.size(1), D = x.size(2), M = (2 + n) * n;
  TORCH_CHECK_VALUE(n >= 1 && D >= 1, op, ": 'x' must be [T, n, D] with n >= 1 and D >= 1, got shape ", x.sizes());
  check_float(op, "fn", fn);
  check_shape(op, "fn", fn, {M, n * D});
  check_float(op, "scale", scale);
  check_shape(op, "scale", scale, {3});
  check_float(op, "base", base);
  check_shape(op, "base", base, {M});
  TORCH_CHECK_VALUE(iters >= 1, op, ": 'iters' must be >= 1, got ", iters);
  TORCH_CHECK_VALUE(norm_eps > 0, op, ": 'norm_eps' must be > 0, got ", norm_eps);
  TORCH_CHECK_VALUE(hc_eps > 0, op, ": 'hc_eps' must be > 0, got ", hc_eps);
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t K = (n * D + v4k::kMhcLanes - 1) / v4k::kMhcLanes * v4k::kMhcLanes;
  auto fnc = fn.to(acc).contiguous();
  if (K != n * D) fnc = at::constant_pad_nd(fnc, {0, K - n * D});
  const auto xc = x.contiguous(), sc = scale.to(acc).contiguous(), bc = base.to(acc).contiguous();
  auto u = at::empty({T_, D}, x.options());
  auto post = at::empty({T_, n}, x.options().dtype(acc));
  auto comb = at::empty({T_, n, n}, x.options().dtype(acc));
  const v4k::MhcPreShape shape{n, D, K, iters, norm_eps, hc_eps};
  switch (x.scalar_type()) {
    case at::kDouble: run<double>(xc, fnc, sc, bc, shape, u, post, comb); break;
    case at::kFloat: run<float>(xc, fnc, sc, bc, shape, u, post, comb); break;
    case at::kBFloat16: run<v4k::bf16>(xc, fnc, sc, bc, shape, u, post, comb); break;
    default: run<_Float16>(xc, fnc, sc, bc, shape, u, post, comb); break;
  }
  return {u, post, comb};
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("mhc_pre", &mhc_pre); }

}  // namespace v4_ascend::cpu
