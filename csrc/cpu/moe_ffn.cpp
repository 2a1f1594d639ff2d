// ATen adapter of the fused MoE FFN: argument checks, the router GEMM, dtype dispatch, and one ATen mm
// (MKL/oneDNN) per selected expert and projection on row slices of the dispatched layout. Routing,
// dispatch, SwiGLU, dequantisation and FP8 activation fake-quantisation are the torch-free cores of
// csrc/kernels/moe_*.h. Quantised weights are dequantised one selected expert at a time into a
// reusable per-thread buffer, so a decode step touches only the experts its tokens chose.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/checks.h"
#include "cpu/core_types.h"
#include "cpu/moe_route.h"
#include "cpu/registry.h"
#include "kernels/moe_gemm.h"
#include "kernels/moe_quant.h"
#include "kernels/moe_routing.h"
#include "kernels/small_m_gemm.h"
#include "kernels/moe_swiglu.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& moe_ffn_entry = describe_kernel(
    "moe_ffn",
    "C++ fused route + counting-sort dispatch + clamped SwiGLU; per selected expert (in parallel): ATen mm_out "
    "on row slices, or for <= 8 rows the small-M GEMM (float weights) / direct dot products (FP8/FP4 dequantised "
    "row by row on the way)");

constexpr const char* kOp = "moe_ffn";
constexpr int64_t kBlock = 128;  // FP8 activation blocks (1x128) and FP8 weight blocks (128x128)

using OptTensor = std::optional<at::Tensor>;

std::string shape_text(at::IntArrayRef sizes, const std::vector<int64_t>& want = {}) {
  std::ostringstream s;
  s << "(";
  const size_t n = want.empty() ? sizes.size() : want.size();
  for (size_t i = 0; i < n; ++i) {
    if (i) s << ", ";
    if (want.empty()) {
      s << sizes[i];
    } else if (want[i] < 0) {
      s << "*";
    } else {
      s << want[i];
    }
  }
  s << (n == 1 ? ",)" : ")");
  return s.str();
}

[[noreturn]] void fail(const char* op, const std::string& arg, const std::string& expected, const std::string& got) {
  TORCH_CHECK_VALUE(false, op, ": '", arg, "' must be ", expected, ", got ", got);
  __builtin_unreachable();
}

bool is_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

// `want` entries < 0 match any size.
void check_shape(const char* op, const std::string& arg, const at::Tensor& t, const std::vector<int64_t>& want) {
  bool ok = t.dim() == static_cast<int64_t>(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || t.size(i) == want[i];
  if (!ok) fail(op, arg, "of shape " + shape_text(t.sizes(), want), shape_text(t.sizes()));
}

void check_float(const char* op, const std::string& arg, const at::Tensor& t) {
  if (!is_float(t.scalar_type())) {
    fail(op, arg, "float32 or bfloat16 or float16 or float64", dtype_name(t.scalar_type()));
  }
}

void check_dtype_in(const char* op, const std::string& arg, const at::Tensor& t,
                    std::initializer_list<at::ScalarType> dtypes) {
  std::string names;
  for (auto d : dtypes) {
    if (t.scalar_type() == d) return;
    names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  fail(op, arg, names, dtype_name(t.scalar_type()));
}

enum class Format { kFloat, kFp8, kFp4 };

// One projection (w1, w3 or w2) of a set of experts in any weight format, as [E, N, K] (packed FP4:
// [E, N, K/2] bytes) with its scales.
struct Projection {
  Format format = Format::kFloat;
  at::Tensor w, scale;  // contiguous; scale undefined for float weights
  int64_t N = 0, K = 0, block = 0;  // block: FP8 weight block or FP4 scale block

  bool quantised() const { return format != Format::kFloat; }

  // fp32 scales of expert e (UE8M0 bytes converted into `tmp`).
  const float* expert_scale(int64_t e, std::vector<float>& tmp) const {
    const int64_t per = scale.numel() / scale.size(0);
    if (scale.scalar_type() == at::kFloat) return scale.data_ptr<float>() + e * per;
    const auto* bytes = static_cast<const uint8_t*>(scale.data_ptr()) + e * per;
    tmp.resize(per);
    for (int64_t i = 0; i < per; ++i) tmp[i] = v4k::moe::ue8m0_scale(bytes[i]);
    return tmp.data();
  }

  // Row n of expert e's dequantised matrix, given its fp32 scales s.
  template <typename A>
  void dequant_row(int64_t e, const float* s, int64_t n, A* out) const {
    const auto* q = static_cast<const uint8_t*>(w.data_ptr());
    if (format == Format::kFp8) {
      v4k::moe::fp8_weight_row(q + e * N * K, s, K, block, n, out);
    } else {
      v4k::moe::fp4_weight_row(q + e * N * (K / 2), s, K, block, n, out);
    }
  }

  // The [N, K] matrix of expert e as a GEMM operand of dtype `gemm`: a view of w when it already is
  // one, else dequantised (or converted) into a reusable per-thread buffer, valid until the next call.
  at::Tensor operand(int64_t e, at::ScalarType gemm) const {
    if (format == Format::kFloat && w.scalar_type() == gemm) return w.select(0, e);
    static thread_local at::Tensor buffer;
    if (!buffer.defined() || buffer.scalar_type() != gemm || buffer.numel() < N * K) {
      buffer = at::empty({N * K}, w.options().dtype(gemm));
    }
    at::Tensor out = buffer.narrow(0, 0, N * K).view({N, K});
    if (format == Format::kFloat) return out.copy_(w.select(0, e));
    std::vector<float> tmp;
    const float* s = expert_scale(e, tmp);
    AT_DISPATCH_FLOATING_TYPES(gemm, "moe_ffn_dequant", [&] {
      scalar_t* dst = out.data_ptr<scalar_t>();
      at::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t n = r0; n < r1; ++n) dequant_row(e, s, n, dst + n * K);
      });
    });
    return out;
  }

  // out [R, N] = a [R, K] @ W_e.T in dtype `gemm`. Few rows (decode) skip ATen mm: a float expert goes
  // through the small-M GEMM shared with grouped_gemm (each weight row streamed once), a quantised one is
  // dequantised row by row on the way, reading its codes once. Otherwise one ATen mm.
  void gemm(int64_t e, const at::Tensor& a, at::Tensor& out, at::ScalarType gemm) const {
    constexpr int64_t kFewRows = 8;
    const bool direct_float = format == Format::kFloat && w.scalar_type() == gemm;
    if (a.size(0) > kFewRows || !(quantised() || direct_float)) {
      at::mm_out(out, a, operand(e, gemm).t());
    } else if (direct_float) {
      with_core_type(gemm, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        const T* we = static_cast<const T*>(w.data_ptr()) + e * N * K;
        v4k::gemm::small_m_gemm<T>({static_cast<const T*>(a.data_ptr()), K, a.size(0), we, N, K,
                                    static_cast<T*>(out.data_ptr()), N});
      });
    } else {
      std::vector<float> tmp;
      const float* s = expert_scale(e, tmp);
      AT_DISPATCH_FLOATING_TYPES(gemm, "moe_ffn_few_rows", [&] {
        const scalar_t* pa = a.data_ptr<scalar_t>();
        scalar_t* py = out.data_ptr<scalar_t>();
        const int64_t R = a.size(0);
        at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
          std::vector<scalar_t> wrow(K);
          v4k::moe::dequant_gemm_rows(
              pa, R, K, n0, n1, [&](int64_t n, scalar_t* row) { dequant_row(e, s, n, row); }, wrow.data(), py, N);
        });
      });
    }
  }
};

// Checks one [*lead, N, K] projection in any format (as reference.moe._check_expert_weight).
Projection check_projection(const std::string& name, const at::Tensor& w, const OptTensor& scale,
                            std::vector<int64_t> shape) {
  Projection p;
  const auto dtype = w.scalar_type();
  if (dtype == at::kFloat8_e4m3fn) {
    p.format = Format::kFp8;
  } else if (dtype == at::kByte || dtype == at::kFloat4_e2m1fn_x2) {
    p.format = Format::kFp4;
  } else if (!is_float(dtype)) {
    fail(kOp, name, "a float, float8_e4m3fn or packed-FP4 (uint8 / float4_e2m1fn_x2) tensor", dtype_name(dtype));
  }
  if (p.quantised() != scale.has_value()) {
    fail(kOp, name + "_scale", "given exactly when the weight is quantised", scale ? "a scale" : "None");
  }
  const size_t lead = shape.size() - 2;
  p.N = shape[lead];
  p.K = shape[lead + 1];
  if (p.format == Format::kFp4 && p.K % 2) {
    fail(kOp, name, "an even input dim for packed FP4", "K=" + std::to_string(p.K));
  }
  std::vector<int64_t> stored = shape;
  if (p.format == Format::kFp4) stored[lead + 1] = p.K / 2;
  check_shape(kOp, name, w, stored);
  if (p.format == Format::kFp8) {
    std::vector<int64_t> blocks(shape.begin(), shape.begin() + lead);
    blocks.push_back((p.N + kBlock - 1) / kBlock);
    blocks.push_back((p.K + kBlock - 1) / kBlock);
    check_dtype_in(kOp, name + "_scale", *scale, {at::kFloat, at::kByte, at::kFloat8_e8m0fnu});
    check_shape(kOp, name + "_scale", *scale, blocks);
    p.block = kBlock;
  } else if (p.format == Format::kFp4) {
    std::vector<int64_t> rows(shape.begin(), shape.begin() + lead);
    rows.push_back(p.N);
    rows.push_back(-1);
    check_dtype_in(kOp, name + "_scale", *scale, {at::kFloat, at::kByte, at::kFloat8_e8m0fnu});
    check_shape(kOp, name + "_scale", *scale, rows);
    const int64_t blocks = scale->size(-1);
    if (blocks == 0 || p.K % blocks || (p.K / blocks) % 2) {
      fail(kOp, name + "_scale", "[..., N, K/block] with an even block dividing K=" + std::to_string(p.K),
           shape_text(scale->sizes()));
    }
    p.block = p.K / blocks;
  }
  if (p.quantised() && p.K % kBlock) {
    fail(kOp, name, "an input dim that is a multiple of 128 (FP8 activation blocks)", "K=" + std::to_string(p.K));
  }
  // Shared-expert weights are viewed as one expert.
  p.w = (lead ? w : w.unsqueeze(0)).contiguous();
  if (scale) p.scale = (lead ? *scale : scale->unsqueeze(0)).contiguous();
  return p;
}

// The activations a projection's GEMM reads, as [rows, K] of the GEMM dtype: FP8 fake-quantised
// (computed in x's dtype, as the reference's Linear) when the weight is quantised.
template <typename T>
at::Tensor gemm_input(const at::Tensor& a, bool quantise, at::ScalarType gemm) {
  at::Tensor in = a;
  if (quantise) {
    in = at::empty_like(a);
    const T* src = reinterpret_cast<const T*>(a.data_ptr());
    T* dst = reinterpret_cast<T*>(in.data_ptr());
    const int64_t K = a.size(1);
    at::parallel_for(0, a.size(0), 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) v4k::moe::fp8_fake_quant_row(src + r * K, dst + r * K, K, kBlock);
    });
  }
  return in.to(gemm);
}

// The three projections of a set of experts (routed, or the shared expert as one group) over rows
// grouped by expert: starts[e]..starts[e+1] are expert e's rows of `rows` ([M, D], x's dtype).
struct ExpertSet {
  const Projection* w1;
  const Projection* w3;
  const Projection* w2;
  double limit;
};

// y [M, D] (GEMM dtype G) of every row: y = w2_e (SwiGLU(w1_e a, w3_e a) * weight[r]) for the rows of
// each expert e, each stage rounded to x's dtype T as the reference's grouped_linear / moe_swiglu.
template <typename T, typename A, typename G>
at::Tensor run_experts(const ExpertSet& set, const at::Tensor& rows, const std::vector<int64_t>& starts,
                       const A* weight, at::ScalarType gemm) {
  const int64_t M = rows.size(0), I = set.w1->N, D = set.w2->N;
  const at::Tensor a1 = gemm_input<T>(rows, set.w1->quantised(), gemm);
  const at::Tensor a3 = set.w3->quantised() == set.w1->quantised() ? a1
                                                                    : gemm_input<T>(rows, set.w3->quantised(), gemm);
  at::Tensor g = at::empty({M, I}, rows.options().dtype(gemm)), u = at::empty_like(g);
  at::Tensor h = at::empty({M, I}, rows.options());
  at::Tensor a2 = gemm == rows.scalar_type() ? h : at::empty_like(g);
  at::Tensor y = at::empty({M, D}, g.options());
  const bool quantise_h = set.w2->quantised();
  std::vector<int64_t> active;  // experts with rows
  for (size_t e = 0; e + 1 < starts.size(); ++e) {
    if (starts[e + 1] > starts[e]) active.push_back(static_cast<int64_t>(e));
  }
  auto expert = [&](int64_t e) {
    const int64_t s = starts[e], n = starts[e + 1] - s;
    at::Tensor gs = g.narrow(0, s, n), us = u.narrow(0, s, n);
    set.w1->gemm(e, a1.narrow(0, s, n), gs, gemm);
    set.w3->gemm(e, a3.narrow(0, s, n), us, gemm);
    T* hs = reinterpret_cast<T*>(h.data_ptr()) + s * I;
    v4k::moe::swiglu_rows<T, A>(reinterpret_cast<const G*>(gs.data_ptr()), reinterpret_cast<const G*>(us.data_ptr()),
                                n, I, static_cast<A>(set.limit), weight ? weight + s : nullptr, hs);
    if (quantise_h) {
      for (int64_t r = 0; r < n; ++r) v4k::moe::fp8_fake_quant_row(hs + r * I, hs + r * I, I, kBlock);
    }
    if (!a2.is_same(h)) a2.narrow(0, s, n).copy_(h.narrow(0, s, n));
    at::Tensor ys = y.narrow(0, s, n);
    set.w2->gemm(e, a2.narrow(0, s, n), ys, gemm);
  };
  // Experts write disjoint rows, so they run in parallel (each GEMM then on one thread); a single expert
  // keeps the threads for its own GEMMs and dequantisation.
  const int64_t count = static_cast<int64_t>(active.size());
  if (count > 1 && at::get_num_threads() > 1) {
    at::parallel_for(0, count, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) expert(active[i]);
    });
  } else {
    for (const int64_t e : active) expert(e);
  }
  return y;
}

// GEMMs run in x's dtype when every projection is a float weight of that dtype (no copies), else in the
// accumulation dtype on dequantised / converted weights (as the reference).
at::ScalarType gemm_dtype(const ExpertSet& set, at::ScalarType x, at::ScalarType acc) {
  for (const Projection* p : {set.w1, set.w3, set.w2}) {
    if (p->quantised() || p->w.scalar_type() != x) return acc;
  }
  return x;
}

template <typename T, typename A, typename F>
void with_gemm_type(at::ScalarType gemm, at::ScalarType x, F&& f) {
  if (gemm == x) {
    f(static_cast<T*>(nullptr));
  } else {
    f(static_cast<A*>(nullptr));
  }
}

struct Routing {
  int64_t T, E, k;
  double route_scale;
  const OptTensor& bias;
  const OptTensor& token_ids;
  const OptTensor& tid2eid;
};

// (weights [T, k] in A, idx [T, k] int32) of V4's router on logits = x @ gate.T (in A): the moe_route
// kernel's, argument checks included.
template <typename A>
std::tuple<at::Tensor, at::Tensor> route(const at::Tensor& x, const at::Tensor& gate, const Routing& r) {
  const auto acc = c10::CppTypeToScalarType<A>::value;
  return route_experts(at::mm(x.to(acc), gate.to(acc).t()), r.k, r.route_scale, r.bias, r.token_ids, r.tid2eid);
}

template <typename T, typename A>
at::Tensor moe_ffn_typed(const at::Tensor& x, const at::Tensor& gate, const ExpertSet& routed,
                         const std::optional<ExpertSet>& shared, const Routing& r) {
  const int64_t tokens = r.T, D = x.size(1), M = r.T * r.k;
  const auto acc = c10::CppTypeToScalarType<A>::value;
  at::Tensor weights_t, idx_t;
  std::tie(weights_t, idx_t) = route<A>(x, gate, r);
  const A* weights = weights_t.data_ptr<A>();
  const int32_t* idx = idx_t.data_ptr<int32_t>();

  std::vector<int64_t> starts(r.E + 1);
  std::vector<int32_t> slot(M);
  v4k::moe::dispatch_by_expert(idx, M, r.E, starts.data(), slot.data());
  std::vector<A> row_weight(M);
  at::Tensor token = at::empty({M}, x.options().dtype(at::kLong));
  int64_t* tok = token.data_ptr<int64_t>();
  for (int64_t i = 0; i < M; ++i) {
    row_weight[i] = weights[slot[i]];
    tok[i] = slot[i] / r.k;
  }

  std::vector<A> sum(tokens * D, A(0));
  const at::Tensor rows = x.index_select(0, token);
  const auto routed_gemm = gemm_dtype(routed, x.scalar_type(), acc);
  with_gemm_type<T, A>(routed_gemm, x.scalar_type(), [&](auto* tag) {
    using G = std::remove_pointer_t<decltype(tag)>;
    const at::Tensor y = run_experts<T, A, G>(routed, rows, starts, row_weight.data(), routed_gemm);
    const G* py = reinterpret_cast<const G*>(y.data_ptr());
    for (int64_t i = 0; i < M; ++i) v4k::moe::accumulate_row<T, A>(py + i * D, D, sum.data() + tok[i] * D);
  });
  if (shared) {
    const auto shared_gemm = gemm_dtype(*shared, x.scalar_type(), acc);
    with_gemm_type<T, A>(shared_gemm, x.scalar_type(), [&](auto* tag) {
      using G = std::remove_pointer_t<decltype(tag)>;
      const at::Tensor y = run_experts<T, A, G>(*shared, x, {0, tokens}, static_cast<const A*>(nullptr), shared_gemm);
      const G* py = reinterpret_cast<const G*>(y.data_ptr());
      for (int64_t t = 0; t < tokens; ++t) v4k::moe::accumulate_row<T, A>(py + t * D, D, sum.data() + t * D);
    });
  }
  at::Tensor out = at::empty_like(x);
  T* po = reinterpret_cast<T*>(out.data_ptr());
  for (int64_t i = 0; i < tokens * D; ++i) po[i] = v4k::moe::store<T>(sum[i]);
  return out;
}

at::Tensor moe_ffn(const at::Tensor& x_in, const at::Tensor& gate, const at::Tensor& w1, const at::Tensor& w3,
                   const at::Tensor& w2, int64_t topk, double route_scale, const OptTensor& bias,
                   const OptTensor& token_ids, const OptTensor& tid2eid, const OptTensor& w1_scale,
                   const OptTensor& w3_scale, const OptTensor& w2_scale, const OptTensor& shared_w1,
                   const OptTensor& shared_w3, const OptTensor& shared_w2, const OptTensor& shared_w1_scale,
                   const OptTensor& shared_w3_scale, const OptTensor& shared_w2_scale, double swiglu_limit,
                   double shared_swiglu_limit) {
  check_rank(kOp, "x", x_in, 2);
  check_float(kOp, "x", x_in);
  const int64_t T = x_in.size(0), D = x_in.size(1);
  check_rank(kOp, "gate", gate, 2);
  check_float(kOp, "gate", gate);
  check_shape(kOp, "gate", gate, {-1, D});
  const int64_t E = gate.size(0);
  check_rank(kOp, "w1", w1, 3);
  check_shape(kOp, "w1", w1, {E, -1, -1});
  const int64_t inter = w1.size(1);
  const Projection p1 = check_projection("w1", w1, w1_scale, {E, inter, D});
  const Projection p3 = check_projection("w3", w3, w3_scale, {E, inter, D});
  const Projection p2 = check_projection("w2", w2, w2_scale, {E, D, inter});
  Projection s1, s3, s2;
  const bool has_shared = shared_w1 || shared_w3 || shared_w2;
  if (has_shared) {
    if (!(shared_w1 && shared_w3 && shared_w2)) {
      fail(kOp, "shared_w2", "given with 'shared_w1' and 'shared_w3' (all three or none)", "a partial set");
    }
    check_rank(kOp, "shared_w1", *shared_w1, 2);
    const int64_t si = shared_w1->size(0);
    s1 = check_projection("shared_w1", *shared_w1, shared_w1_scale, {si, D});
    s3 = check_projection("shared_w3", *shared_w3, shared_w3_scale, {si, D});
    s2 = check_projection("shared_w2", *shared_w2, shared_w2_scale, {D, si});
  }
  moe_ffn_entry.calls.fetch_add(1, std::memory_order_relaxed);

  const at::Tensor x = x_in.contiguous();
  const ExpertSet routed{&p1, &p3, &p2, swiglu_limit};
  std::optional<ExpertSet> shared;
  if (has_shared) shared = ExpertSet{&s1, &s3, &s2, shared_swiglu_limit};
  const Routing r{T, E, topk, route_scale, bias, token_ids, tid2eid};
  switch (x.scalar_type()) {
    case at::kFloat: return moe_ffn_typed<float, float>(x, gate, routed, shared, r);
    case at::kDouble: return moe_ffn_typed<double, double>(x, gate, routed, shared, r);
    case at::kBFloat16: return moe_ffn_typed<v4k::bf16, float>(x, gate, routed, shared, r);
    default: return moe_ffn_typed<_Float16, float>(x, gate, routed, shared, r);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("moe_ffn", &moe_ffn); }

}  // namespace v4_ascend::cpu
