"""Model config: HF config.json round trip, the TINY preset's structure, checkpoint key counts of the presets."""

from __future__ import annotations

import pytest

from v4_ascend.model.config import FLASH, PRO, TINY, ModelConfig
from v4_ascend.model.weights import checkpoint_spec, is_hash_layer, stored_spec


@pytest.mark.parametrize("config", [FLASH, PRO, TINY], ids=["flash", "pro", "tiny"])
def test_hf_config_round_trip(config):
    hf = config.to_hf_config()
    assert hf["hidden_size"] == config.dim and hf["rope_scaling"]["factor"] == config.rope_factor
    assert ModelConfig.from_hf_config(hf) == config


def test_tiny_keeps_every_structural_feature():
    backbone = TINY.compress_ratios[: TINY.n_layers]
    assert 0 in backbone and 4 in backbone and any(r > 4 for r in backbone)
    assert 0 < TINY.n_hash_layers < TINY.n_layers
    assert TINY.hc_mult == 4 and TINY.n_shared_experts == 1 and TINY.n_mtp_layers == 1
    assert TINY.engram_layer_ids and TINY.window_size < 16


def test_flash_checkpoint_module_counts():
    """§1: the Flash weight map has 41 compressor and 21 indexer modules in the backbone, 3 hash layers."""
    names = [n for n in checkpoint_spec(FLASH) if n.startswith("layers.")]
    assert sum(n.endswith("attn.compressor.ape") for n in names) == 41
    assert sum(n.endswith("attn.indexer.wq_b.weight") for n in names) == 21
    assert sum(n.endswith("ffn.gate.tid2eid") for n in names) == 3
    assert [layer for layer in range(FLASH.n_layers) if is_hash_layer(FLASH, layer)] == [0, 1, 2]
    stored = stored_spec(FLASH)
    assert stored["layers.3.ffn.experts.0.w1.weight"].shape == (2048, 2048)  # FP4 packed [I, D/2]
    assert stored["layers.3.ffn.experts.0.w1.scale"].shape == (2048, 128)
    assert stored["layers.3.attn.wq_b.scale"].shape == (256, 8)
    assert not any(n.startswith("mtp.0.ffn.gate.tid2eid") for n in stored)  # MTP routing is learned


@pytest.mark.parametrize("change, arg", [({"expert_dtype": "int4"}, "expert_dtype"),
                                         ({"engram_layer_ids": (9,)}, "engram_layer_ids")])
def test_bad_config_names_the_field(change, arg):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        TINY.replace(**change)
