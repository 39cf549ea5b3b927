"""Which device a command runs on, the process-wide settings that go with it, and seeding."""

from __future__ import annotations

import logging
import os

from aerun.errors import UserError

log = logging.getLogger("aerun.devices")


def resolve_device(name: str, key: str = "trainer.device"):
    """auto -> CUDA when present, else the CPU; cuda without a GPU is refused naming `key`."""
    import torch

    name = getattr(name, "value", name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}=cuda: no CUDA device is available here; use {key}=auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def warn_slow_precision(device, precision: str) -> None:
    """bf16 on a CPU without native bf16 (AVX-512 BF16 / AMX) is emulated and several times
    slower than fp32 (benchmarks/results.md), so say so."""
    import torch

    if precision != "bf16" or device.type != "cpu":
        return
    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a torch build without the query: nothing to say
        return
    if not native:
        log.warning("trainer.precision=bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 is "
                    "emulated and slower than fp32 here; use trainer.precision=32")
