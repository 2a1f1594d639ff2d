"""A pure-Python PrivateUse1 device named ``npu`` or ``mlu``, for CI machines without the hardware.

``V4_ASCEND_SIM_DEVICE=npu|mlu`` (read when v4_ascend is imported) claims PyTorch's PrivateUse1 slot
under that name. Tensors on the simulated device wrap a host tensor; every aten op runs on the host
copy, while ``v4_ascend`` ops are re-dispatched to the ``PrivateUse1`` key, so dispatch reaches
exactly the kernel a real ``npu``/``mlu`` tensor would reach (a vendor backend's kernel if one is
registered, else the reference composition). It proves wiring, never vendor numerics. PyTorch
allows one PrivateUse1 name per process, hence one simulated device per process. Autograd on the
simulated device is not supported (the Python device guard has no streams).
"""

from __future__ import annotations

import os

import torch
from torch.utils import backend_registration
from torch.utils._pytree import tree_map

from v4_ascend import library

ENV = "V4_ASCEND_SIM_DEVICE"
NAMES = ("npu", "mlu")

_device: torch.device | None = None
_libraries: list[torch.library.Library] = []


class _DeviceModule:
    """The ``torch.<name>`` module of the simulated device."""

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def synchronize(device=None) -> None:
        return None

    @staticmethod
    def is_initialized() -> bool:
        return True

    @staticmethod
    def _is_in_bad_fork() -> bool:
        return False

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        return None

    @staticmethod
    def get_amp_supported_dtype():
        return [torch.float16, torch.bfloat16]

    @staticmethod
    def is_autocast_enabled() -> bool:
        return False


class SimTensor(torch.Tensor):
    """A tensor on the simulated device; ``host`` holds its data."""

    host: torch.Tensor

    @staticmethod
    def __new__(cls, host: torch.Tensor):
        tensor = torch.Tensor._make_wrapper_subclass(
            cls,
            host.size(),
            strides=host.stride(),
            storage_offset=host.storage_offset(),
            dtype=host.dtype,
            device=_device,
            requires_grad=host.requires_grad,
        )
        tensor.host = host
        return tensor

    def __repr__(self) -> str:
        return f"SimTensor({self.host!r}, device='{_device}')"

    def tolist(self):
        """Host values, as ``.tolist()`` gives on a real device (PyTorch refuses it on wrapper subclasses)."""
        return self.host.tolist()

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == library.NAMESPACE:
            return func.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.PrivateUse1), *args, **kwargs)
        return _run_on_host(func, args, kwargs)


def _to_host(x):
    return x.host if isinstance(x, SimTensor) else x


def _to_device(x):
    return SimTensor(x) if isinstance(x, torch.Tensor) and not isinstance(x, SimTensor) else x


def _run_on_host(func, args, kwargs):
    device = kwargs.get("device")
    if isinstance(device, torch.device) and device.type == _device.type:
        kwargs = dict(kwargs, device=torch.device("cpu"))
    out = func(*tree_map(_to_host, args), **tree_map(_to_host, kwargs))
    if isinstance(device, torch.device) and device.type == "cpu":
        return out  # an explicit transfer to the host (``.cpu()``, ``.to("cpu")``) leaves the device
    if func._schema.is_mutable:
        written = [
            arg
            for spec, arg in zip(func._schema.arguments, args)
            if spec.alias_info is not None and spec.alias_info.is_write
        ]
        written += [kwargs[s.name] for s in func._schema.arguments if s.kwarg_only and s.name in kwargs
                    and s.alias_info is not None and s.alias_info.is_write]
        if len(func._schema.returns) == 1 and len(written) == 1:
            return written[0]
    return tree_map(_to_device, out)


def _factory_ops():
    """aten overloads that take a device and no tensor: they never reach ``__torch_dispatch__``."""
    for full in torch._C._dispatch_get_all_op_names():
        if not full.startswith("aten::"):
            continue
        name, _, overload = full[len("aten::"):].partition(".")
        try:
            op = getattr(getattr(torch.ops.aten, name), overload or "default")
        except (AttributeError, RuntimeError):
            continue
        schema = op._schema
        if len(schema.returns) != 1 or not any(a.name == "device" for a in schema.arguments):
            continue
        if any("Tensor" in str(a.type) for a in schema.arguments):
            continue
        yield full[len("aten::"):], op


def install(name: str) -> torch.device:
    """Claim PrivateUse1 as ``name`` and make it a working simulated device (once per process)."""
    global _device
    if _device is not None:
        if _device.type != name:
            raise RuntimeError(f"the simulated device is already '{_device.type}'; one per process")
        return _device
    if name not in NAMES:
        raise ValueError(f"{ENV} must be one of {', '.join(NAMES)}, got {name!r}")
    backend_registration._setup_privateuseone_for_python_backend(rename=name, backend_module=_DeviceModule())
    _device = torch.device(name, 0)
    aten = torch.library.Library("aten", "IMPL")
    for qualified, op in _factory_ops():
        aten.impl(qualified, lambda *a, _op=op, **k: _run_on_host(_op, a, k), "PrivateUse1")

    def copy_from(src, dst, non_blocking=False):
        _to_host(dst).copy_(_to_host(src))
        return dst

    aten.impl("_copy_from", copy_from, "PrivateUse1")
    _libraries.append(aten)
    return _device


def install_from_env() -> torch.device | None:
    name = os.environ.get(ENV, "").strip().lower()
    return install(name) if name else None


def device() -> torch.device | None:
    """The simulated device of this process, if any."""
    return _device
