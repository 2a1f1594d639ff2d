"""The public operators of v4_ascend, one typed function per dispatcher op.

``v4_ascend.ops.<name>(...)`` and ``torch.ops.v4_ascend.<name>(...)`` are the same op; the former has
a docstring and Python type hints. The contract is ``shared/spec/ops.md``; each family module declares
its ops with :func:`v4_ascend.library.define`.
"""

from v4_ascend.ops.attention import sparse_attn
from v4_ascend.ops.engram import engram_gate, engram_hash, engram_lookup
from v4_ascend.ops.engram_layout import EngramLayerLayout, engram_layout
from v4_ascend.ops.engram_tokens import build_compressed_token_map, normalise_token_text
from v4_ascend.ops.mhc import mhc_head, mhc_post, mhc_pre, mhc_sinkhorn
from v4_ascend.ops.moe import grouped_gemm, grouped_gemm_masked

__all__ = [
    "EngramLayerLayout",
    "build_compressed_token_map",
    "engram_gate",
    "engram_hash",
    "engram_layout",
    "engram_lookup",
    "grouped_gemm",
    "grouped_gemm_masked",
    "mhc_head",
    "mhc_post",
    "mhc_pre",
    "mhc_sinkhorn",
    "normalise_token_text",
    "sparse_attn",
]
