"""Checkpoint writer -> loader round trip, quantised formats, and header validation errors naming the key."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from v4_ascend.model.checkpoint import (
    INDEX_FILE,
    CheckpointError,
    encode_parameters,
    load_checkpoint,
    random_parameters,
    read_config,
    write_checkpoint,
)
from v4_ascend.model.config import TINY
from v4_ascend.model.weights import checkpoint_spec

FP8_KEY = "layers.2.attn.wq_b.weight"  # [H*d, R_q] = [320, 32]: 3 row tiles of 128, the last partial
FP4_KEY = "layers.3.ffn.experts.5.w2.weight"  # [D, I] = [64, 32]


def _copy(tiny_checkpoint, tmp_path):
    return shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")


def _shard_of(directory, key):
    return directory / json.loads((directory / INDEX_FILE).read_text())["weight_map"][key]


def _rewrite(directory, key, change, keep_index=False):
    """Replace (or with ``change`` returning None, drop, also from the index unless ``keep_index``) one tensor."""
    path = _shard_of(directory, key)
    tensors = load_file(path)
    new = change(tensors.pop(key))
    if new is not None:
        tensors[key] = new
    elif not keep_index:
        index = json.loads((directory / INDEX_FILE).read_text())
        del index["weight_map"][key]
        (directory / INDEX_FILE).write_text(json.dumps(index))
    save_file(tensors, path, metadata={"format": "pt"})


def test_layout_official_names_and_dtypes(tiny_checkpoint):
    files = sorted(p.name for p in tiny_checkpoint.iterdir())
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert files == sorted(["config.json", INDEX_FILE, *shards])
    index = json.loads((tiny_checkpoint / INDEX_FILE).read_text())
    assert set(index["weight_map"].values()) == set(shards)
    with safe_open(str(_shard_of(tiny_checkpoint, FP8_KEY)), "pt") as f:
        assert f.get_slice(FP8_KEY).get_dtype() == "F8_E4M3"
        scale = f.get_slice(FP8_KEY.replace(".weight", ".scale"))
        assert (scale.get_dtype(), scale.get_shape()) == ("F8_E8M0", [3, 1])
    with safe_open(str(_shard_of(tiny_checkpoint, FP4_KEY)), "pt") as f:
        assert (f.get_slice(FP4_KEY).get_dtype(), f.get_slice(FP4_KEY).get_shape()) == ("I8", [64, 16])
        scale = f.get_slice(FP4_KEY.replace(".weight", ".scale"))
        assert (scale.get_dtype(), scale.get_shape()) == ("F8_E8M0", [64, 1])
    assert read_config(tiny_checkpoint) == TINY
    assert json.loads((tiny_checkpoint / "config.json").read_text())["hidden_size"] == TINY.dim


def test_writer_is_deterministic(tiny_checkpoint, tmp_path):
    again = write_checkpoint(tmp_path / "again", TINY, seed=0, shards=2)
    for path in tiny_checkpoint.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_round_trip_stored_tensors_identical(tiny_checkpoint):
    expected = encode_parameters(TINY, random_parameters(TINY, seed=0))
    _, loaded = load_checkpoint(tiny_checkpoint, dequantize=False)
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype and loaded[key].shape == tensor.shape, key
        assert torch.equal(loaded[key].view(torch.uint8), tensor.view(torch.uint8)) if tensor.element_size() == 1 \
            else torch.equal(loaded[key], tensor), key


def _e2m1(nibbles):
    magnitude = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=torch.float64)[nibbles & 7]
    return torch.where(nibbles & 8 > 0, -magnitude, magnitude)


def test_dequantised_weights_equal_the_encoded_values(tiny_checkpoint):
    """Independent decode of the stored bits (e4m3 via torch casts, e2m1 by table, 2**(e-127) scales)."""
    _, raw = load_checkpoint(tiny_checkpoint, dequantize=False)
    _, loaded = load_checkpoint(tiny_checkpoint, dtype=torch.float64)
    originals = random_parameters(TINY, seed=0)

    def exponent(key):
        return 2.0 ** (raw[key].view(torch.uint8).to(torch.float64) - 127)

    fp8_scale = exponent(FP8_KEY.replace(".weight", ".scale")).repeat_interleave(128, 0).repeat_interleave(128, 1)
    fp8_scale = fp8_scale[:320, :32]
    fp8 = raw[FP8_KEY].to(torch.float64) * fp8_scale
    torch.testing.assert_close(loaded[FP8_KEY], fp8, atol=0, rtol=0)
    bytes_ = raw[FP4_KEY].view(torch.uint8).to(torch.int64)
    codes = torch.stack((bytes_ & 15, bytes_ >> 4), dim=-1).flatten(-2)
    fp4_scale = exponent(FP4_KEY.replace(".weight", ".scale")).repeat_interleave(32, 1)
    fp4 = _e2m1(codes) * fp4_scale
    torch.testing.assert_close(loaded[FP4_KEY], fp4, atol=0, rtol=0)
    # and the codes round the written values: e4m3 to 2**-4 relative (subnormals 2**-10 of the scale),
    # e2m1 to half its largest grid step (2 units of the scale)
    fp8_error = (loaded[FP8_KEY] - originals[FP8_KEY].double()).abs()
    assert (fp8_error <= 2**-4 * originals[FP8_KEY].double().abs() + 2**-10 * fp8_scale).all()
    assert ((loaded[FP4_KEY] - originals[FP4_KEY].double()).abs() <= fp4_scale).all()


def test_unquantised_tensors_keep_values_and_dtypes(tiny_checkpoint):
    _, loaded = load_checkpoint(tiny_checkpoint, dtype=torch.float32)
    originals = random_parameters(TINY, seed=0)
    for name, spec in checkpoint_spec(TINY).items():
        if spec.quant is None:
            expected = originals[name].to(spec.dtype)
            got = loaded[name]
            assert got.dtype == (torch.float32 if spec.dtype == torch.bfloat16 else spec.dtype), name
            assert torch.equal(got.to(spec.dtype), expected), name
    assert loaded["layers.1.engram.embed.weight"].dtype == torch.float8_e4m3fn  # Engram table stays FP8


@pytest.mark.parametrize("case, key, change, message", [
    ("missing", "layers.4.attn.compressor.ape", lambda t: None, "missing key 'layers.4.attn.compressor.ape'"),
    ("shape", "layers.0.attn.wkv.weight", lambda t: t[:-1], "'layers.0.attn.wkv.weight' in .*shape \\[79, 64\\]"),
    ("dtype", "layers.2.hc_ffn_fn", lambda t: t.to(torch.bfloat16),
     "'layers.2.hc_ffn_fn' in .*dtype BF16, expected F32"),
    ("fp4 as fp32", FP4_KEY, lambda t: t.to(torch.float32), f"'{FP4_KEY}' in .*dtype F32, expected I8"),
])
def test_header_errors_name_the_key(tiny_checkpoint, tmp_path, case, key, change, message):
    directory = _copy(tiny_checkpoint, tmp_path)
    _rewrite(directory, key, change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(directory)


def test_unexpected_key_named(tiny_checkpoint, tmp_path):
    directory = _copy(tiny_checkpoint, tmp_path)
    path = _shard_of(directory, "embed.weight")
    tensors = load_file(path) | {"layers.0.attn.bogus.weight": torch.zeros(2)}
    save_file(tensors, path, metadata={"format": "pt"})
    index = json.loads((directory / INDEX_FILE).read_text())
    index["weight_map"]["layers.0.attn.bogus.weight"] = path.name
    (directory / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="unexpected key 'layers.0.attn.bogus.weight'"):
        load_checkpoint(directory)


def test_index_and_shard_disagree(tiny_checkpoint, tmp_path):
    directory = _copy(tiny_checkpoint, tmp_path)
    _rewrite(directory, "norm.weight", lambda t: None, keep_index=True)
    with pytest.raises(CheckpointError, match="'norm.weight'.*does not contain it"):
        load_checkpoint(directory)


def test_corrupted_header_names_the_file(tiny_checkpoint, tmp_path):
    directory = _copy(tiny_checkpoint, tmp_path)
    path = _shard_of(directory, "head.weight")
    data = bytearray(path.read_bytes())
    data[8:16] = b"{garbage"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path.name}: unreadable safetensors header"):
        load_checkpoint(directory)


def test_truncated_header_length_names_the_file(tiny_checkpoint, tmp_path):
    directory = _copy(tiny_checkpoint, tmp_path)
    path = _shard_of(directory, "head.weight")
    path.write_bytes(path.read_bytes()[:4])
    with pytest.raises(CheckpointError, match=path.name):
        load_checkpoint(directory)


def test_single_file_checkpoint(tmp_path):
    directory = write_checkpoint(tmp_path / "one", TINY, seed=1, shards=1)
    (directory / INDEX_FILE).unlink()
    (directory / "model-00001-of-00001.safetensors").rename(directory / "model.safetensors")
    config, tensors = load_checkpoint(directory, dtype=torch.float32)
    assert config == TINY and tensors["embed.weight"].shape == (TINY.vocab_size, TINY.dim)


class _CountingHandle:
    """A safe_open handle that records every tensor read."""

    def __init__(self, handle, reads):
        self.handle, self.reads = handle, reads

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def get_tensor(self, key):
        self.reads.append(key)
        return self.handle.get_tensor(key)


def test_validation_happens_before_any_tensor_is_read(tiny_checkpoint, tmp_path, monkeypatch):
    from v4_ascend.model import checkpoint

    reads, original = [], checkpoint._open
    monkeypatch.setattr(checkpoint, "_open", lambda path: _CountingHandle(original(path), reads))
    load_checkpoint(tiny_checkpoint, dtype=torch.float32)
    assert len(reads) == len(load_checkpoint(tiny_checkpoint, dequantize=False)[1])  # the probe counts reads
    reads.clear()
    directory = _copy(tiny_checkpoint, tmp_path)
    _rewrite(directory, "layers.4.attn.compressor.ape", lambda t: t.to(torch.float64))
    with pytest.raises(CheckpointError, match="layers.4.attn.compressor.ape"):
        load_checkpoint(directory)
    assert reads == []
