"""Decode tokens/s of the tiny V4 model, batch of 4, on the default backend (C++ CPU kernels) vs the reference.

Each backend runs in its own process (``V4_ASCEND_BACKEND`` is read at import). Usage::

    python benchmarks/decode_backends.py [--steps 12] [--repeats 5] [--batch 4] [--dtype float32] [--threads 1]

(from a source checkout that is not installed: ``PYTHONPATH=. python benchmarks/decode_backends.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch


def measure(checkpoint: str, batch: int, steps: int, dtype: str, repeats: int) -> dict:
    """Prefill ``batch`` prompts of different lengths, warm up, then time ``repeats`` runs of ``steps`` batched
    decode steps and keep the fastest (the machine may be shared: the minimum is the least disturbed run)."""
    from v4_ascend import backends
    from v4_ascend.model.generate import prefill
    from v4_ascend.model.transformer import Transformer

    model = Transformer.from_checkpoint(checkpoint, dtype=getattr(torch, dtype))
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, model.config.vocab_size, (20 + 7 * b,), generator=gen) for b in range(batch)]
    cache = model.new_cache(batch, max(map(len, prompts)) + repeats * steps + 2)
    tokens = prefill(model, cache, prompts).argmax(-1)
    for _ in range(2):  # warm-up
        tokens = model.forward(tokens, [1] * batch, cache).argmax(-1)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            tokens = model.forward(tokens, [1] * batch, cache).argmax(-1)
        runs.append(time.perf_counter() - start)
    seconds = min(runs)
    return {"backends": list(backends.loaded()) or ["reference"], "tokens_per_s": batch * steps / seconds,
            "ms_per_step": 1e3 * seconds / steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="decode steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the fastest counts")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # checkpoint dir: measure in this process
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.worker, args.batch, args.steps, args.dtype, args.repeats)))
        return 0
    from v4_ascend.model.checkpoint import write_checkpoint
    from v4_ascend.model.config import TINY

    results = {}
    with tempfile.TemporaryDirectory() as directory:
        write_checkpoint(directory, TINY, seed=0)
        for backend in ("auto", "reference"):
            env = dict(os.environ, V4_ASCEND_BACKEND=backend, OMP_NUM_THREADS=str(args.threads))
            command = [sys.executable, __file__, "--worker", directory, "--steps", str(args.steps), "--repeats",
                       str(args.repeats), "--batch", str(args.batch), "--dtype", args.dtype, "--threads",
                       str(args.threads)]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            results[backend] = json.loads(out.strip().splitlines()[-1])
            print(f"{backend:9s} backends={results[backend]['backends']}: "
                  f"{results[backend]['tokens_per_s']:.1f} tokens/s ({results[backend]['ms_per_step']:.1f} ms/step)")
    ratio = results["auto"]["tokens_per_s"] / results["reference"]["tokens_per_s"]
    print(f"decode speed-up of the default backend over the reference, batch {args.batch}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
