"""Reference kernels of the MoE family: grouped GEMMs, routing, dispatch/combine, SwiGLU, fused MoE FFN."""

from __future__ import annotations

import torch

from v4_ascend import _validation as v
from v4_ascend.reference import quant
from v4_ascend.reference.attention import accumulation_dtype


def check_grouped_gemm(x, w, offsets):
    op = "grouped_gemm"
    v.tensor(op, "x", x, rank=2, dtypes=v.FLOAT_DTYPES)
    M, K = x.shape
    v.tensor(op, "w", w, rank=3, shape=(None, None, K), device=x.device)
    v.same_dtype(op, "w", w, x, "x")
    v.tensor(op, "offsets", offsets, dtypes=(torch.int32,), shape=(w.shape[0],), device=x.device)
    return M, w.shape[1]


def check_grouped_gemm_masked(x, w, counts):
    op = "grouped_gemm_masked"
    v.tensor(op, "x", x, rank=3, dtypes=v.FLOAT_DTYPES)
    G, _, K = x.shape
    v.tensor(op, "w", w, rank=3, shape=(G, None, K), device=x.device)
    v.same_dtype(op, "w", w, x, "x")
    v.tensor(op, "counts", counts, dtypes=(torch.int32,), shape=(G,), device=x.device)
    return x.shape[1], w.shape[1]


def group_bounds(offsets: torch.Tensor, rows: int) -> list[tuple[int, int]]:
    """Validated ``(start, end)`` row range of each group from cumulative ``offsets``."""
    ends = offsets.tolist()
    starts = [0, *ends[:-1]]
    for g, (a, b) in enumerate(zip(starts, ends)):
        if b < a or b > rows:
            raise ValueError(
                f"grouped_gemm: 'offsets' must be non-decreasing cumulative row ends <= {rows}, "
                f"got offsets[{g}] = {b} after {a}"
            )
    return list(zip(starts, ends))


def grouped_gemm(x, w, offsets):
    M, N = check_grouped_gemm(x, w, offsets)
    acc = accumulation_dtype(x.dtype)
    y = x.new_zeros(M, N)
    for g, (a, b) in enumerate(group_bounds(offsets, M)):
        if b > a:
            y[a:b] = (x[a:b].to(acc) @ w[g].to(acc).T).to(x.dtype)
    return y


def grouped_gemm_masked(x, w, counts):
    Mmax, N = check_grouped_gemm_masked(x, w, counts)
    v.index_range("grouped_gemm_masked", "counts", counts, Mmax + 1, allow_invalid=False)
    acc = accumulation_dtype(x.dtype)
    y = torch.einsum("gmk,gnk->gmn", x.to(acc), w.to(acc))
    keep = torch.arange(Mmax, device=x.device)[None, :] < counts[:, None]
    # where(), not a product: padding rows holding inf/NaN must still give exact zeros.
    return y.where(keep[..., None], 0).to(x.dtype)


# ---- routing --------------------------------------------------------------------------------------

ROUTE_DTYPES = (torch.float32, torch.float64)
TOKEN_ID_DTYPES = (torch.int32, torch.int64)


def check_moe_route(logits, topk, route_scale, bias, token_ids, tid2eid):
    """Checks shared with the fake kernel; returns ``(T, k)``."""
    op = "moe_route"
    v.tensor(op, "logits", logits, rank=2, dtypes=ROUTE_DTYPES)
    T, E = logits.shape
    if not isinstance(topk, int) or not 1 <= topk <= E:
        v.fail(op, "topk", f"an int in [1, {E}] (the number of experts)", topk)
    if not isinstance(route_scale, float):
        v.fail(op, "route_scale", "a float", type(route_scale).__name__)
    if bias is not None:
        v.tensor(op, "bias", bias, dtypes=ROUTE_DTYPES, shape=(E,), device=logits.device)
    if (token_ids is None) != (tid2eid is None):
        v.fail(op, "tid2eid", "given together with 'token_ids' (hash routing)", "only one of them")
    if tid2eid is not None:
        v.tensor(op, "token_ids", token_ids, dtypes=TOKEN_ID_DTYPES, shape=(T,), device=logits.device)
        v.tensor(op, "tid2eid", tid2eid, dtypes=TOKEN_ID_DTYPES, shape=(None, topk), device=logits.device)
    return T, topk


def router_scores(logits: torch.Tensor) -> torch.Tensor:
    """V4's ``sqrt(softplus(logits))``, softplus linear above 20 (as TileKernels and ``F.softplus``).

    Evaluated in fp64 and rounded once to the logits' dtype: PyTorch's fp32 CPU softplus can give equal
    logits different last bits in its vector and scalar lanes, which broke the tie rule (equal scores go
    to the lower expert index).
    """
    wide = torch.nn.functional.softplus(logits.to(torch.float64), beta=1.0, threshold=20.0).sqrt()
    return wide.to(logits.dtype)


def moe_route(logits, topk, route_scale, bias=None, token_ids=None, tid2eid=None):
    T, k = check_moe_route(logits, topk, route_scale, bias, token_ids, tid2eid)
    E = logits.shape[1]
    scores = router_scores(logits)
    if tid2eid is not None:
        v.index_range("moe_route", "token_ids", token_ids, tid2eid.shape[0], allow_invalid=False)
        # Only the looked-up rows must hold valid experts (the table has a row per vocabulary entry).
        idx = tid2eid.index_select(0, token_ids.long()).long()
        v.index_range("moe_route", "tid2eid", idx, E, allow_invalid=False)
    else:
        select = scores if bias is None else scores + bias
        # A stable descending sort puts equal scores in increasing expert order: ties -> lower index.
        idx = torch.sort(select.detach(), dim=-1, descending=True, stable=True).indices[:, :k]
    picked = scores.gather(1, idx)
    weights = picked / picked.sum(dim=-1, keepdim=True) * route_scale
    return weights, idx.to(torch.int32)


# ---- dispatch / combine ---------------------------------------------------------------------------

def check_moe_dispatch(x, idx, num_experts):
    op = "moe_dispatch"
    v.tensor(op, "x", x, rank=2, dtypes=v.FLOAT_DTYPES)
    v.tensor(op, "idx", idx, rank=2, dtypes=(torch.int32,), shape=(x.shape[0], None), device=x.device)
    if not isinstance(num_experts, int) or num_experts < 1:
        v.fail(op, "num_experts", "a positive int", num_experts)
    return idx.numel(), x.shape[1]


def moe_dispatch(x, idx, num_experts):
    M, _ = check_moe_dispatch(x, idx, num_experts)
    v.index_range("moe_dispatch", "idx", idx, num_experts, allow_invalid=True)
    flat = idx.flatten().long()
    valid = flat >= 0
    # Sort key: the expert, with invalid slots after every expert; stability keeps (token, slot) order.
    order = torch.sort(flat.where(valid, num_experts), stable=True).indices
    kept = valid[order]
    slots = order.where(kept, -1).to(torch.int32)
    rows = x.index_select(0, order // idx.shape[1]) if M else x.new_empty(0, x.shape[1])
    counts = torch.bincount(flat[valid], minlength=num_experts)
    offsets = counts.cumsum(0).to(torch.int32)
    return rows.where(kept[:, None], 0), offsets, slots


def check_moe_combine(y, slots, weights):
    op = "moe_combine"
    v.tensor(op, "y", y, rank=2, dtypes=v.FLOAT_DTYPES)
    v.tensor(op, "slots", slots, dtypes=(torch.int32,), shape=(y.shape[0],), device=y.device)
    v.tensor(op, "weights", weights, rank=2, dtypes=v.FLOAT_DTYPES, device=y.device)
    return weights.shape[0], y.shape[1]


def combine_accumulate(y, slots, weights):
    """``out[t] = sum_j weights[t, j] * y[row of slot (t, j)]`` in the accumulation dtype."""
    T, N = check_moe_combine(y, slots, weights)
    k = weights.shape[1]
    v.index_range("moe_combine", "slots", slots, T * k, allow_invalid=True)
    acc = accumulation_dtype(y.dtype)
    keep = (slots >= 0).nonzero().squeeze(1)
    slot = slots.index_select(0, keep).long()
    contrib = y.index_select(0, keep).to(acc) * weights.to(acc).flatten()[slot][:, None]
    return torch.zeros(T, N, dtype=acc, device=y.device).index_add(0, slot // max(k, 1), contrib)


def moe_combine(y, slots, weights):
    return combine_accumulate(y, slots, weights).to(y.dtype)


# ---- clamped SwiGLU -------------------------------------------------------------------------------

def check_moe_swiglu(gate, up, limit, weight):
    op = "moe_swiglu"
    v.tensor(op, "gate", gate, dtypes=v.FLOAT_DTYPES)
    v.tensor(op, "up", up, shape=tuple(gate.shape), device=gate.device)
    v.same_dtype(op, "up", up, gate, "gate")
    if not isinstance(limit, float):
        v.fail(op, "limit", "a float", type(limit).__name__)
    if weight is not None:
        v.tensor(op, "weight", weight, dtypes=v.FLOAT_DTYPES, shape=tuple(gate.shape[:-1]), device=gate.device)


def moe_swiglu(gate, up, limit=10.0, weight=None):
    check_moe_swiglu(gate, up, limit, weight)
    acc = accumulation_dtype(gate.dtype)
    g, u = gate.to(acc), up.to(acc)
    if limit > 0:
        u = u.clamp(-limit, limit)
        g = g.clamp(max=limit)
    h = torch.nn.functional.silu(g) * u
    if weight is not None:
        h = h * weight.to(acc)[..., None]
    return h.to(gate.dtype)


# ---- fused MoE FFN --------------------------------------------------------------------------------

# V4's Linear fake-quantises its input to FP8 with 1x128 UE8M0 blocks before an FP8/FP4 GEMM (§2.4).
ACT_BLOCK = 128
WEIGHT_BLOCK = 128


def weight_format(op: str, name: str, w: torch.Tensor, scale: torch.Tensor | None) -> str:
    """``"float"``, ``"fp8"`` (e4m3 + 128x128 block scales) or ``"fp4"`` (packed e2m1 + 1x32 scales)."""
    if w.dtype == torch.float8_e4m3fn:
        fmt = "fp8"
    elif w.dtype in quant.FP4_DTYPES:
        fmt = "fp4"
    elif w.dtype in v.FLOAT_DTYPES:
        fmt = "float"
    else:
        v.fail(op, name, "a float, float8_e4m3fn or packed-FP4 (uint8 / float4_e2m1fn_x2) tensor", w.dtype)
    if (fmt == "float") != (scale is None):
        given = "None" if scale is None else "a scale"
        v.fail(op, f"{name}_scale", "given exactly when the weight is quantised", given)
    return fmt


def _check_expert_weight(op, name, w, scale, shape, device):
    """Check one ``[*lead, N, K]`` weight in any format; returns its format."""
    fmt = weight_format(op, name, w, scale)
    *lead, N, K = shape
    stored = (*lead, N, K // 2) if fmt == "fp4" else tuple(shape)
    if fmt == "fp4" and K % 2:
        v.fail(op, name, "an even input dim for packed FP4", f"K={K}")
    v.tensor(op, name, w, shape=stored, device=device)
    if fmt == "fp8":
        blocks = (*lead, -(-N // WEIGHT_BLOCK), -(-K // WEIGHT_BLOCK))
        v.tensor(op, f"{name}_scale", scale, dtypes=quant.SCALE_DTYPES, shape=blocks, device=device)
    elif fmt == "fp4":
        v.tensor(op, f"{name}_scale", scale, dtypes=quant.SCALE_DTYPES, shape=(*lead, N, None), device=device)
        if scale.shape[-1] == 0 or K % scale.shape[-1] or (K // scale.shape[-1]) % 2:
            v.fail(op, f"{name}_scale", f"[..., N, K/block] with an even block dividing K={K}", tuple(scale.shape))
    if fmt != "float" and K % ACT_BLOCK:
        v.fail(op, name, f"an input dim that is a multiple of {ACT_BLOCK} (FP8 activation blocks)", f"K={K}")
    return fmt


def dense_weight(w: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """A weight in any accepted format as a dense ``dtype`` tensor (dequantised exactly)."""
    if w.dtype == torch.float8_e4m3fn:
        return quant.fp8_weight_dequant(w, scale, WEIGHT_BLOCK, dtype)
    if w.dtype in quant.FP4_DTYPES:
        return quant.fp4_dequant(w, scale, dtype)
    return w.to(dtype)


def grouped_linear(x, w, scale, offsets):
    """``grouped_gemm`` on any weight format, output in ``x``'s dtype; quantised weights see FP8 inputs."""
    acc = accumulation_dtype(x.dtype)
    if scale is not None:
        x = quant.fp8_fake_quant(x, ACT_BLOCK)
    return grouped_gemm(x.to(acc), dense_weight(w, scale, acc), offsets).to(x.dtype)


def check_moe_ffn(x, gate, w1, w3, w2, topk, route_scale, bias, token_ids, tid2eid, w1_scale, w3_scale, w2_scale,
                  shared_w1, shared_w3, shared_w2, shared_w1_scale, shared_w3_scale, shared_w2_scale,
                  swiglu_limit, shared_swiglu_limit):
    op = "moe_ffn"
    v.tensor(op, "x", x, rank=2, dtypes=v.FLOAT_DTYPES)
    T, D = x.shape
    v.tensor(op, "gate", gate, rank=2, dtypes=v.FLOAT_DTYPES, shape=(None, D), device=x.device)
    E = gate.shape[0]
    v.tensor(op, "w1", w1, rank=3, shape=(E, None, None), device=x.device)
    inter = w1.shape[1]
    for name, w, scale, shape in (("w1", w1, w1_scale, (E, inter, D)), ("w3", w3, w3_scale, (E, inter, D)),
                                  ("w2", w2, w2_scale, (E, D, inter))):
        _check_expert_weight(op, name, w, scale, shape, x.device)
    shared = (shared_w1, shared_w3, shared_w2)
    if any(s is not None for s in shared):
        if any(s is None for s in shared):
            v.fail(op, "shared_w2", "given with 'shared_w1' and 'shared_w3' (all three or none)", "a partial set")
        v.tensor(op, "shared_w1", shared_w1, rank=2, shape=(None, None), device=x.device)
        shared_inter = shared_w1.shape[0]
        for name, w, scale, shape in (("shared_w1", shared_w1, shared_w1_scale, (shared_inter, D)),
                                      ("shared_w3", shared_w3, shared_w3_scale, (shared_inter, D)),
                                      ("shared_w2", shared_w2, shared_w2_scale, (D, shared_inter))):
            _check_expert_weight(op, name, w, scale, shape, x.device)
    for name, limit in (("swiglu_limit", swiglu_limit), ("shared_swiglu_limit", shared_swiglu_limit)):
        if not isinstance(limit, float):
            v.fail(op, name, "a float", type(limit).__name__)
    check_moe_route(x.new_empty(T, E, dtype=accumulation_dtype(x.dtype)), topk, route_scale, bias, token_ids,
                    tid2eid)


def moe_ffn(x, gate, w1, w3, w2, topk, route_scale, bias=None, token_ids=None, tid2eid=None, w1_scale=None,
            w3_scale=None, w2_scale=None, shared_w1=None, shared_w3=None, shared_w2=None, shared_w1_scale=None,
            shared_w3_scale=None, shared_w2_scale=None, swiglu_limit=10.0, shared_swiglu_limit=0.0):
    check_moe_ffn(x, gate, w1, w3, w2, topk, route_scale, bias, token_ids, tid2eid, w1_scale, w3_scale, w2_scale,
                  shared_w1, shared_w3, shared_w2, shared_w1_scale, shared_w3_scale, shared_w2_scale,
                  swiglu_limit, shared_swiglu_limit)
    acc = accumulation_dtype(x.dtype)
    logits = x.to(acc) @ gate.to(acc).T
    weights, idx = moe_route(logits, topk, route_scale, bias, token_ids, tid2eid)
    rows, offsets, slots = moe_dispatch(x, idx, gate.shape[0])
    row_weight = weights.flatten()[slots.long().clamp(min=0)].where(slots >= 0, 0)
    h = moe_swiglu(grouped_linear(rows, w1, w1_scale, offsets), grouped_linear(rows, w3, w3_scale, offsets),
                   swiglu_limit, row_weight)
    out = combine_accumulate(grouped_linear(h, w2, w2_scale, offsets), slots, torch.ones_like(weights))
    if shared_w1 is not None:
        everyone = torch.tensor([x.shape[0]], dtype=torch.int32, device=x.device)

        def shared(inp, w, scale):
            return grouped_linear(inp, w[None], None if scale is None else scale[None], everyone)

        hs = moe_swiglu(shared(x, shared_w1, shared_w1_scale), shared(x, shared_w3, shared_w3_scale),
                        shared_swiglu_limit)
        out = out + shared(hs, shared_w2, shared_w2_scale).to(acc)
    return out.to(x.dtype)
