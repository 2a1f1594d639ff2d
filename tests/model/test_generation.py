"""Sampling rules and determinism, streaming, backend parity of the whole model, and the ``run`` CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from v4_ascend import backends
from v4_ascend.cli import main
from v4_ascend.model.config import TINY
from v4_ascend.model.generate import generate, sample
from v4_ascend.model.transformer import Transformer


@pytest.fixture(scope="module")
def model32(tiny_checkpoint):
    return Transformer.from_checkpoint(tiny_checkpoint, dtype=torch.float32)


def test_greedy_is_argmax_lowest_id_on_ties():
    logits = torch.tensor([[0.0, 3.0, 3.0, -1.0], [5.0, 1.0, 2.0, 5.0]])
    assert sample(logits).tolist() == [1, 0]


def test_top_p_keeps_the_smallest_nucleus(seed):
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps exactly the first two tokens
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(2000, 1)
    gen = torch.Generator().manual_seed(seed)
    drawn = sample(logits, temperature=1.0, top_p=0.75, generator=gen)
    counts = torch.bincount(drawn, minlength=4)
    assert counts[2:].sum() == 0
    assert abs(counts[0] / 2000 - 0.5 / 0.8) < 0.05  # renormalised over the nucleus
    # a tiny top_p still keeps the most likely token
    assert sample(logits[:5], temperature=1.0, top_p=1e-6, generator=gen).tolist() == [0] * 5


def test_bad_sampling_arguments_named():
    with pytest.raises(ValueError, match="'temperature'"):
        sample(torch.zeros(1, 4), temperature=-1.0)


def test_sampling_is_deterministic_per_seed(model32, seed):
    prompts = [torch.arange(5), torch.arange(9) + 7]

    def run(s):
        steps = generate(model32, prompts, 6, temperature=1.5, top_p=0.95, seed=s)
        return torch.stack([step.tokens for step in steps], dim=1)

    first = run(seed % 1000)
    assert torch.equal(first, run(seed % 1000))
    assert any(not torch.equal(first, run(seed % 1000 + k)) for k in range(1, 4))


def test_generate_streams_one_step_at_a_time(model32):
    stream = generate(model32, [torch.arange(4)], 3)
    first = next(stream)
    assert first.tokens.shape == (1,) and first.logits.shape == (1, TINY.vocab_size)
    assert len(list(stream)) == 2


REPO_ROOT = Path(__file__).resolve().parents[2]  # the subprocess imports this checkout's v4_ascend
_PARITY_SCRIPT = """
import json, sys, torch
from v4_ascend import backends
from v4_ascend.model.transformer import Transformer
from v4_ascend.model.generate import prefill
model = Transformer.from_checkpoint(sys.argv[1], dtype=torch.float64)
gen = torch.Generator().manual_seed(int(sys.argv[2]))
prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=gen) for n in (5, 14, 9, 21)]
cache = model.new_cache(4, 32)
logits = prefill(model, cache, prompts, chunk=6)
decode = model.forward(logits.argmax(-1), [1] * 4, cache)
print(json.dumps({"backends": list(backends.loaded()), "logits": torch.cat((logits, decode)).tolist()}))
"""


def _logits_with_backend(tiny_checkpoint, backend: str, seed: int):
    env = dict(os.environ, V4_ASCEND_BACKEND=backend, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _PARITY_SCRIPT, str(tiny_checkpoint), str(seed)], env=env,
                         capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["backends"], torch.tensor(result["logits"])


@pytest.mark.skipif("cpu" not in backends.loaded(), reason="the C++ CPU kernels are not built")
def test_reference_and_cpu_kernel_backends_give_the_same_logits(tiny_checkpoint, seed):
    ref_backends, reference = _logits_with_backend(tiny_checkpoint, "reference", seed)
    cpu_backends, kernels = _logits_with_backend(tiny_checkpoint, "auto", seed)
    assert ref_backends == [] and "cpu" in cpu_backends
    assert torch.isfinite(reference).all()
    # fp64: the kernels differ from the reference by summation order only; an FP8/FP4 fake-quant rounding in
    # fp32 may still move by one step, hence 1e-5 rather than fp64 precision
    torch.testing.assert_close(kernels, reference, atol=1e-5, rtol=1e-5)


def test_cli_run_tiny_smoke(capsys):
    assert main(["run", "--tiny", "--max-new", "4", "--batch", "2", "--prompt-len", "6", "--verify",
                 "--profile-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "prefill:" in out and "decode:" in out and "tokens/s" in out
    assert "v4_ascend::sparse_attn" in out and "v4_ascend::moe_ffn" in out
    verify = float(re.search(r"verify: max \|cached - recomputed logits\| = (\S+)", out).group(1))
    assert verify < 1e-3


def test_cli_run_prompt_ids_and_errors(capsys):
    assert main(["run", "--max-new", "2", "--batch", "1", "--prompt-ids", "1", "2", "3", "--profile-steps", "0"]) == 0
    assert "prompt 3 tokens" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--prompt-ids"):
        main(["run", "--max-new", "2", "--prompt-ids", "999"])
