"""What the Ascend and Cambricon backends share: PrivateUse1 ownership, the capability-table structure,
and the kernel table whose kernels run the on-device reference composition (counted, with the reason)
whenever a call falls outside the vendor route.

Each vendor package holds only its own facts: a :class:`CapabilityTable` of :class:`VendorRoute` rows
(one per declared op: the vendor op considered, the SoCs / archs where it is used, why it is exact or
why not, its per-call limits), how to detect the device's SoC / arch, and the kernel bodies that map an
op onto the vendor's calls.
"""

from __future__ import annotations

import enum
import functools
import importlib.util
import inspect
import sys
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from v4_ascend import library
from v4_ascend.backends import privateuse1_name
from v4_ascend.backends.base import KernelTable, Route

ON_DEVICE = "the reference composition runs on the device"


def unavailable_reason(device: str, vendor_module: str, how_to: str) -> str | None:
    """Why the ``device`` backend cannot load in this process, or None."""
    owner = privateuse1_name()
    if owner != device:
        return f"PyTorch's PrivateUse1 device is '{owner}', not '{device}' ({how_to})"
    if vendor_module not in sys.modules and importlib.util.find_spec(vendor_module) is None:
        return f"{vendor_module} is not importable"
    return None


class Decision(str, enum.Enum):
    VENDOR = "vendor-fused"  # the vendor op serves calls inside its limits; exact for V4
    REFERENCE = "reference composition"  # no vendor op, or none exact for V4: the reference runs on the device


# A per-call limit check: the op's arguments -> None, or why the vendor route cannot serve this call.
LimitCheck = Callable[..., "str | None"]


@dataclass(frozen=True)
class VendorRoute:
    """How one vendor backend serves one v4_ascend op."""

    op: str
    vendor_op: str | None  # the vendor op(s) considered; None when the vendor has none
    targets: tuple[Hashable, ...]  # SoCs / archs where the vendor route is used (VENDOR) or documented
    decision: Decision
    why: str  # why the vendor route is exact (VENDOR) or why it is not used (REFERENCE)
    limits: str = ""  # the per-call limits of a VENDOR route, in words
    check: LimitCheck | None = None

    def decision_on(self, target: Hashable) -> Decision:
        return self.decision if target in self.targets else Decision.REFERENCE


def reference_route(op: str, vendor_op: str | None, why: str, targets: tuple = ()) -> VendorRoute:
    """A row whose op runs the reference composition on the device on every SoC / arch."""
    return VendorRoute(op, vendor_op, targets, Decision.REFERENCE, why)


class CapabilityTable:
    """One vendor's routes, one per declared op, and the per-call gate (xformers' ``not_supported_reasons``).

    ``columns`` are the SoCs / archs the docs table shows; ``label`` names any target in words;
    ``target_note`` may say why a target gets no vendor route at all (e.g. an unsupported arch).
    """

    def __init__(
        self,
        vendor: str,
        routes: Sequence[VendorRoute],
        columns: Sequence[Hashable],
        label: Callable[[Hashable], str],
        target_note: Callable[[Hashable], str | None] = lambda target: None,
    ):
        self.vendor = vendor
        self.routes = {entry.op: entry for entry in routes}
        self.columns = tuple(columns)
        self.label = label
        self.target_note = target_note

    def __contains__(self, op: str) -> bool:
        return op in self.routes

    def route(self, op: str) -> VendorRoute:
        try:
            return self.routes[op]
        except KeyError:
            raise KeyError(f"no {self.vendor} route is recorded for op '{op}'") from None

    def vendor_ops(self) -> list[str]:
        """Ops with a vendor-fused route on at least one SoC / arch (the backend registers kernels for them)."""
        return [op for op, entry in self.routes.items() if entry.decision is Decision.VENDOR]

    def not_supported_reason(self, op: str, target: Hashable, *args, **kwargs) -> str | None:
        """None when ``op``'s vendor route on ``target`` may serve this call, else why not (readable)."""
        entry = self.route(op)
        if entry.decision is Decision.REFERENCE:
            return f"{entry.vendor_op or 'no vendor op'} not used: {entry.why}"
        if target not in entry.targets:
            note = self.target_note(target)
            if note is not None:
                return note
            where = ", ".join(self.label(t) for t in entry.targets if t in self.columns)
            return f"{entry.vendor_op} is used on {where} only, not on {self.label(target)}"
        return entry.check(*args, **kwargs) if entry.check is not None else None

    def describe(self, op: str, target: Hashable) -> Route:
        """``op``'s route on ``target`` for ``backend_report()``: what runs (``kernel``) and why."""
        entry = self.route(op)
        if entry.decision is Decision.REFERENCE:
            return Route(None, f"{ON_DEVICE}: {self.not_supported_reason(op, target)}")
        if entry.decision_on(target) is Decision.REFERENCE:
            return Route(f"reference composition on the device ({self.label(target)})",
                         f"{op}: {self.not_supported_reason(op, target)}")
        return Route(
            f"{entry.vendor_op} [{self.label(target)}: {Decision.VENDOR.value}; outside its limits {ON_DEVICE}]",
            f"{entry.why}" + (f"; limits: {entry.limits}" if entry.limits else ""),
        )

    def markdown_table(self) -> str:
        """The per-op, per-SoC/arch route table (the vendor's docs page embeds it; a test keeps them equal)."""
        head = "| op | vendor op considered | " + " | ".join(self.label(t) for t in self.columns) + " | why |"
        lines = [head, "|" + "---|" * (len(self.columns) + 3)]
        for entry in self.routes.values():
            cells = [entry.decision_on(target).value for target in self.columns]
            vendor = f"`{entry.vendor_op}`" if entry.vendor_op else "none"
            why = entry.why + "." + (f" Limits: {entry.limits}." if entry.limits else "")
            lines.append(f"| `{entry.op}` | {vendor} | " + " | ".join(cells) + f" | {why} |")
        return "\n".join(lines)


class VendorKernels:
    """A vendor's ``PrivateUse1`` kernels for the ops its :class:`CapabilityTable` routes to the vendor.

    :meth:`kernel` wraps a kernel body so that every call is first validated (the reference's own
    checks), then gated by the capability table for the device's SoC / arch; a call the vendor route
    cannot serve runs the op's reference composition on the device tensors (never on the CPU) and is
    counted per (op, reason) in :meth:`reference_fallbacks` for the validation kit.
    """

    def __init__(self, capabilities: CapabilityTable, detect: Callable[[object], Hashable]):
        self.capabilities = capabilities
        self.detect = detect  # device -> SoC / arch
        self.table = KernelTable("PrivateUse1")
        self._fallbacks: Counter = Counter()

    def kernel(self, op: str, validate: Callable[..., object]):
        """Decorator: the body serves ``op`` when the capability table allows this call, else the reference."""
        entry = self.capabilities.route(op)
        if entry.decision is not Decision.VENDOR:
            raise ValueError(f"{op}: the {self.capabilities.vendor} table routes it to the reference composition")
        reference = library.ops()[op].reference

        def wrap(body):
            signature = inspect.signature(body)

            @functools.wraps(body)
            def run(*args, **kwargs):
                # The dispatcher omits trailing arguments left at their defaults: every callee gets them all.
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                args = bound.args
                validate(*args)
                device = next(a.device for a in args if hasattr(a, "device"))
                reason = self.capabilities.not_supported_reason(op, self.detect(device), *args)
                if reason is not None:
                    self._fallbacks[(op, reason)] += 1
                    return reference(*args)
                return body(*args)

            return self.table.kernel(op)(run)

        return wrap

    def register(self) -> None:
        missing = set(self.capabilities.vendor_ops()) - set(self.table.registered())
        if missing:
            raise RuntimeError(f"{self.capabilities.vendor}: vendor-fused routes without a kernel: {sorted(missing)}")
        self.table.register()

    def reference_fallbacks(self) -> dict[tuple[str, str], int]:
        """Calls of vendor-routed ops that the reference composition served on the device, per (op, reason)."""
        return dict(self._fallbacks)

    def fallback_lines(self) -> list[str]:
        """The validation kits' summary of :meth:`reference_fallbacks`, one line per (op, reason)."""
        if not self._fallbacks:
            return ["no call left a vendor route for the on-device reference composition"]
        return [f"{op}: {count} call(s) ran the reference composition on the device: {reason}"
                for (op, reason), count in sorted(self._fallbacks.items())]

    def routes(self, target: Hashable) -> dict[str, Route]:
        """Per declared op, its route on ``target`` (ops missing from the table say so)."""
        out = {}
        for op in library.ops():
            if op in self.capabilities:
                out[op] = self.capabilities.describe(op, target)
            else:
                out[op] = Route(None, f"{ON_DEVICE}: no {self.capabilities.vendor} route is recorded for this op")
        return out
