"""Model decode step (perf.md: tiny V4 config, batch 4, goal >= 3x the tokens/s of the reference backend).

The backend is chosen when ``v4_ascend`` is imported (``V4_ASCEND_BACKEND``), so each side runs in its own
persistent worker process: the default backend (the C++ kernels on the CPU) and ``V4_ASCEND_BACKEND=reference``.
The harness still alternates them call by call; one timed call sends "run STEPS decode steps" to a worker and
waits for its reply (a pipe round trip, tens of microseconds against milliseconds of work). Both workers load the
same deterministic tiny checkpoint, prefill the same 4 prompts of unequal lengths, and then keep decoding
greedily, so every call extends the sequences by STEPS tokens (the cache is sized for the whole run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import weakref
from functools import partial

import torch

from v4_ascend.bench.harness import Case, Workload

OP = "model_decode"
BATCH, STEPS = 4, 4


class DecodeWorker:
    """A child process holding the tiny model and its cache; calling it runs STEPS batched decode steps there."""

    def __init__(self, checkpoint: str, backend: str, device: torch.device, dtype: torch.dtype):
        env = dict(os.environ, V4_ASCEND_BACKEND=backend, OMP_NUM_THREADS=str(torch.get_num_threads()))
        command = [sys.executable, "-m", "v4_ascend.bench.model_decode", checkpoint, "--device", str(device),
                   "--dtype", str(dtype).removeprefix("torch."), "--threads", str(torch.get_num_threads())]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.backend = backend
        self.serving = self._expect("ready")  # the backends the worker loaded
        weakref.finalize(self, self.process.kill)

    def _expect(self, word: str) -> str:
        """Reads the worker's answer, which starts with `word`; returns the rest of the line."""
        line = self.process.stdout.readline().strip()
        if line.split(" ")[0] != word:
            raise RuntimeError(f"bench model_decode: the {self.backend} worker answered {line!r} instead of {word!r} "
                               f"(exit status {self.process.poll()}; its error is above)")
        return line.removeprefix(word).strip()

    def __call__(self) -> None:
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        self._expect("done")


def decode(device, *, dtype):
    from v4_ascend.model.checkpoint import write_checkpoint
    from v4_ascend.model.config import TINY

    directory = tempfile.TemporaryDirectory(prefix="v4_ascend_bench_")
    write_checkpoint(directory.name, TINY, seed=0)
    kernel = DecodeWorker(directory.name, "auto", device, dtype)
    reference = DecodeWorker(directory.name, "reference", device, dtype)
    weakref.finalize(kernel, directory.cleanup)  # the workers have loaded it; the folder goes with the case
    return Workload(kernel=kernel, baselines={"reference backend (own process)": reference},
                    backend=kernel.serving,
                    note=f"{STEPS} decode steps of {BATCH} sequences per timed call: tokens/s = "
                    f"{STEPS * BATCH} / time; both sides in worker processes, same checkpoint and prompts; "
                    "a cache that fills up (after 50 calls) is re-prefilled inside the call")


CASES = [Case(OP, f"tiny-b{BATCH}", f"TINY config, batch {BATCH}, {STEPS} greedy steps per call", dtype,
              partial(decode, dtype=dtype), quick=dtype == torch.float32, in_process=False)
         for dtype in (torch.float32, torch.bfloat16)]


def _serve(checkpoint: str, device: str, dtype: str, threads: int) -> None:
    """Worker loop: load, prefill, say "ready" and the loaded backends, then run STEPS greedy decode steps per
    "step" line."""
    from v4_ascend import backends
    from v4_ascend.model.generate import prefill
    from v4_ascend.model.transformer import Transformer

    torch.set_num_threads(threads)
    model = Transformer.from_checkpoint(checkpoint, dtype=getattr(torch, dtype), device=device)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, model.config.vocab_size, (20 + 7 * b,), generator=gen) for b in range(BATCH)]

    def start():
        cache = model.new_cache(BATCH)
        return cache, prefill(model, cache, prompts).argmax(-1)

    cache, tokens = start()
    print("ready", ", ".join(backends.loaded()) or "reference", flush=True)
    for _ in sys.stdin:
        if int(cache.lengths.max()) + STEPS > cache.max_len:
            cache, tokens = start()
        for _ in range(STEPS):
            tokens = model.forward(tokens, [1] * BATCH, cache).argmax(-1)
        tokens.cpu()  # waits for a device's queued work before answering
        print("done", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bench worker: decode steps of the tiny model on request")
    parser.add_argument("checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()
    _serve(arguments.checkpoint, arguments.device, arguments.dtype, arguments.threads)
