"""Shared fixtures: tiny datasets in the real on-disk formats, the real config composed
once and shrunk, and a runner for the `aerun` command itself."""

from __future__ import annotations

import os
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

from tests.datasets_fixture import make_cifar10, make_mnist_like

REPO = Path(__file__).resolve().parents[1]
AERUN = [sys.executable, "-m", "aerun"]
# Under pytest-xdist (make test: 2 processes on 2 cores) each worker, and every aerun it starts,
# gets one torch thread: two workers of two threads each on two cores run ~10x slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def aerun_cache(tmp_path_factory) -> Path:
    """Judges and decoded-folder caches go to a temp folder, never the user's ~/.cache/aerun (the
    subprocesses the tests start inherit the variable)."""
    path = tmp_path_factory.mktemp("aerun-cache")
    os.environ["AERUN_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """MNIST (gz), FashionMNIST (raw) and CIFAR-10 (pickled batches), tiny but learnable."""
    root = tmp_path_factory.mktemp("datasets")
    make_mnist_like(root, folder="MNIST", n_train=512, n_test=128, gz=True)
    make_mnist_like(root, folder="FashionMNIST", n_train=256, n_test=64, gz=False, raw=True, seed=1)
    make_cifar10(root, n_per_batch=64, n_test=64)
    return root


def tiny_overrides(data_root: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long CPU run on the tiny datasets."""
    return [f"data.root={data_root}", "data.val_size=64", "trainer.max_epochs=1", "trainer.batch_size=64",
            "trainer.progress=false", "trainer.log_every_n_steps=2", "trainer.device=cpu", *extra]


def compose(command: str = "train", overrides: list[str] | None = None):
    """The real config of `command`, composed as the CLI does."""
    from aerun.precheck import compose as _compose

    return _compose(command, overrides or [])


def run_aerun(*args: str, cwd: Path | None = None, timeout: float = 240, env: dict | None = None,
              check: bool = False) -> subprocess.CompletedProcess:
    """Run the `aerun` CLI in a subprocess (as a user would), capturing its output."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    # a scratch working directory by default, so runs never land in the repository's outputs/
    proc = subprocess.run([*AERUN, *args], cwd=cwd or tempfile.mkdtemp(prefix="aerun-cwd-"), capture_output=True, text=True, timeout=timeout,
                          env=full_env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"aerun {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def trained_run(data_root, tmp_path_factory):
    """Factory: train a tiny run in-process and return its run directory."""
    from aerun.commands.train import train

    def make(*extra: str) -> Path:
        run_dir = tmp_path_factory.mktemp("run")
        cfg = compose("train", tiny_overrides(data_root, *extra))
        train(cfg, run_dir)
        return run_dir

    return make
