"""Test double of ``torch_npu`` (contract tests only): documented semantics + call recording.

Each vendor op is written from torch-npu 2.13.0's own API documentation (``_op_plugin_docs.py`` and
the meta registrations in the wheel), independently of v4_ascend's references. Arguments outside the
documented contract fail an assertion naming the rule, so a contract test fails when our mapping
drifts (dtype, int64 group list, layout, group-list type, split mode, shapes).
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import torch

__version__ = "2.13.0"

calls: Counter = Counter()
last_kwargs: dict = {}

# c10_npu::SocVersion of the simulated chip (Ascend910B2 = 221); tests may change it.
SOC_VERSION = 221
DEVICE_NAME = "Ascend910B2"

npu = SimpleNamespace(get_soc_version=lambda: SOC_VERSION, get_device_name=lambda device=None: DEVICE_NAME)


def _is_transposed_last_two(t: torch.Tensor) -> bool:
    """The doc's "transposed" tensor: the last two dims swapped relative to a contiguous layout."""
    return t.transpose(-1, -2).is_contiguous()


def npu_grouped_matmul(
    x, weight, *, bias=None, scale=None, offset=None, antiquant_scale=None, antiquant_offset=None,
    per_token_scale=None, group_list=None, activation_input=None, activation_quant_scale=None,
    activation_quant_offset=None, split_item=0, group_type=None, group_list_type=0, act_type=0, output_dtype=None,
    tuning_config=None,
):
    """Documented non-quantised "single x, single weight, single y" mode (group_type 0, M-axis groups).

    ``x[0]`` is ``[M, K]`` (never transposed), ``weight[0]`` is ``[G, K, N]`` (may be a transposed view),
    ``group_list`` an int64 tensor of length G <= 1024: cumulative ends whose last value equals M
    (``group_list_type=0``) or per-group sizes summing to M (``group_list_type=1``).
    ``y[rows of g] = x[rows of g] @ weight[0][g]``, accumulated in fp32, returned as ``[y]``.
    """
    calls["npu_grouped_matmul"] += 1
    last_kwargs["npu_grouped_matmul"] = dict(
        group_list=group_list, split_item=split_item, group_type=group_type, group_list_type=group_list_type,
        weight_transposed=_is_transposed_last_two(weight[0]),
    )
    assert isinstance(x, list) and isinstance(weight, list), "x and weight are tensor lists"
    assert len(x) == 1 and len(weight) == 1, "single x / single weight mode"
    assert all(a is None for a in (bias, scale, offset, antiquant_scale, antiquant_offset, per_token_scale,
                                   activation_input, activation_quant_scale, activation_quant_offset)), \
        "non-quantised mode takes no bias/scale/offset arguments"
    assert act_type == 0 and output_dtype is None
    assert group_type == 0, "M-axis grouping is group_type=0"
    assert split_item in (2, 3), "a single output tensor needs split_item 2 or 3"
    a, b = x[0], weight[0]
    assert a.dim() == 2 and b.dim() == 3, "x is 2-D and the single weight is 3-D [G, K, N]"
    assert a.dtype in (torch.float16, torch.bfloat16, torch.float32) and b.dtype == a.dtype
    assert a.is_contiguous(), "x does not support transposition"
    assert b.is_contiguous() or _is_transposed_last_two(b), "weight is contiguous or transposed in its last 2 dims"
    M, K = a.shape
    G, Kw, N = b.shape
    assert Kw == K, f"weight K {Kw} != x K {K}"
    assert K < 65536, "inner-axis limit"
    assert isinstance(group_list, torch.Tensor) and group_list.dtype == torch.int64, "group_list must be int64"
    assert group_list.device == a.device, "group_list lives on the device"
    assert group_list.shape == (G,) and G <= 1024, "one group_list entry per weight group, at most 1024"
    values = group_list.cpu()
    if group_list_type == 0:
        assert bool((values >= 0).all()) and bool((values[1:] >= values[:-1]).all()), "non-decreasing cumsum"
        assert int(values[-1]) == M, "the last cumulative value must equal x's rows"
        sizes = torch.diff(values, prepend=values.new_zeros(1))
    else:
        assert group_list_type == 1, "group_list_type is 0 (cumsum) or 1 (counts)"
        assert bool((values >= 0).all()) and int(values.sum()) == M, "counts are non-negative and sum to M"
        sizes = values
    out = torch.empty(M, N, dtype=a.dtype, device=a.device)
    row = 0
    for g, n in enumerate(sizes.tolist()):
        out[row:row + n] = (a[row:row + n].float() @ b[g].float()).to(a.dtype)
        row += n
    return [out]
