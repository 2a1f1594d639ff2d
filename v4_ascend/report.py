"""``backend_report()``: which kernel serves each op on each device here, and why the others don't.

The answer is read from PyTorch's dispatcher (is a kernel registered for the device's dispatch key?),
so it cannot drift from what actually runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4_ascend import backends, library

REFERENCE = "reference (CompositeExplicitAutograd)"


@dataclass(frozen=True)
class ReportRow:
    op: str
    device: str
    kernel: str
    backend: str
    why_not_others: tuple[str, ...]
    reason: str = ""  # why the serving backend's route is right (its limits), when it says


@dataclass(frozen=True)
class BackendReport:
    requested: str
    loaded: tuple[str, ...]
    skipped: dict[str, str]
    rows: tuple[ReportRow, ...]

    def __str__(self) -> str:
        lines = [f"V4_ASCEND_BACKEND={self.requested}; loaded: {', '.join(self.loaded) or 'none'}"]
        lines += [f"  not loaded: {name}: {why}" for name, why in self.skipped.items()]
        for row in self.rows:
            lines.append(f"{row.op:<22} {row.device:<5} {row.backend:<10} {row.kernel}")
            if row.reason:
                lines.append(f"{'':<29} because {row.reason}")
            lines += [f"{'':<29} not {why}" for why in row.why_not_others]
        return "\n".join(lines)

    __repr__ = __str__


def devices() -> list[str]:
    """Device types present in this process that v4_ascend can target."""
    found = ["cpu"]
    name = backends.privateuse1_name()
    if name != "privateuseone":
        found.append(name)
    if torch.cuda.is_available():
        found.append("cuda")
    return found


def _dispatch_key(device: str) -> str:
    return {"cpu": "CPU", "cuda": "CUDA"}.get(device, "PrivateUse1")


def serving_backend(op: str, device: str) -> tuple[str, str]:
    """(backend name, kernel description) serving ``op`` on ``device`` right now."""
    spec = library.ops()[op]
    if torch._C._dispatch_has_kernel_for_dispatch_key(spec.qualname, _dispatch_key(device)):
        for name in backends.loaded():
            backend = backends.module(name)
            route = backend.routes().get(op)
            if backend.DEVICE_TYPE == device and route is not None and route.served:
                return name, route.kernel
        return "unknown", "a kernel registered outside v4_ascend"
    return "reference", REFERENCE


def backend_report() -> BackendReport:
    """Per op and device: the serving kernel, and for every other backend why it does not serve."""
    skipped = backends.skipped()
    rows = []
    for device in devices():
        for op in library.ops():
            serving, kernel = serving_backend(op, device)
            others = []
            for name in backends.BACKENDS:
                backend = backends.module(name)
                if backend.DEVICE_TYPE != device or name == serving:
                    continue
                if name in skipped:
                    others.append(f"{name}: {skipped[name]}")
                else:
                    others.append(f"{name}: {backend.routes()[op].reason}")
            reason = backends.module(serving).routes()[op].reason if serving in backends.loaded() else ""
            rows.append(ReportRow(op, device, kernel, serving, tuple(others), reason))
    return BackendReport(backends.requested(), backends.loaded(), skipped, tuple(rows))
