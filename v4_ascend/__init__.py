"""v4_ascend: DeepSeek V4 operators as PyTorch dispatcher ops for Ascend NPUs, Cambricon MLUs and CPUs.

Importing the package declares every op (``torch.ops.v4_ascend.*``, typed in :mod:`v4_ascend.ops`)
and loads the backends chosen by ``V4_ASCEND_BACKEND`` (see :mod:`v4_ascend.backends`).
"""

from v4_ascend.testing import sim_device

sim_device.install_from_env()

from v4_ascend import backends, ops  # noqa: E402  (the simulated device must exist first)
from v4_ascend.report import backend_report  # noqa: E402

backends.load()

__version__ = "0.1.0"
__all__ = ["backend_report", "backends", "ops"]
