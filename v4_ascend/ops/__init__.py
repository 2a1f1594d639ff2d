"""The public operators of v4_ascend, one typed function per dispatcher op.

``v4_ascend.ops.<name>(...)`` and ``torch.ops.v4_ascend.<name>(...)`` are the same op; the former has
a docstring and Python type hints. The contract is ``shared/spec/ops.md``; each family module declares
its ops with :func:`v4_ascend.library.define`.
"""

from v4_ascend.ops.attention import indexer_topk, kv_compress, kv_compress_pool, sparse_attn
from v4_ascend.ops.engram import engram_gate, engram_hash, engram_hash_lookup, engram_lookup
from v4_ascend.ops.engram_layout import EngramLayerLayout, engram_layout
from v4_ascend.ops.engram_tokens import build_compressed_token_map, normalise_token_text
from v4_ascend.ops.mhc import mhc_head, mhc_post, mhc_pre, mhc_sinkhorn
from v4_ascend.ops.moe import (
    grouped_gemm,
    grouped_gemm_masked,
    moe_combine,
    moe_dispatch,
    moe_ffn,
    moe_route,
    moe_swiglu,
)
from v4_ascend.ops.quant import (
    fp4_dequant,
    fp4_fake_quant,
    fp4_quant,
    fp8_dequant,
    fp8_fake_quant,
    fp8_quant,
    fp8_weight_dequant,
    fp8_weight_fake_quant,
    fp8_weight_quant,
    hadamard_rotate,
    scale_to_ue8m0,
    ue8m0_to_scale,
)

__all__ = [
    # attention
    "indexer_topk",
    "kv_compress",
    "kv_compress_pool",
    "sparse_attn",
    # engram
    "EngramLayerLayout",
    "build_compressed_token_map",
    "engram_gate",
    "engram_hash",
    "engram_hash_lookup",
    "engram_layout",
    "engram_lookup",
    "normalise_token_text",
    # mhc
    "mhc_head",
    "mhc_post",
    "mhc_pre",
    "mhc_sinkhorn",
    # moe
    "grouped_gemm",
    "grouped_gemm_masked",
    "moe_combine",
    "moe_dispatch",
    "moe_ffn",
    "moe_route",
    "moe_swiglu",
    # quantisation
    "fp4_dequant",
    "fp4_fake_quant",
    "fp4_quant",
    "fp8_dequant",
    "fp8_fake_quant",
    "fp8_quant",
    "fp8_weight_dequant",
    "fp8_weight_fake_quant",
    "fp8_weight_quant",
    "hadamard_rotate",
    "scale_to_ue8m0",
    "ue8m0_to_scale",
]
