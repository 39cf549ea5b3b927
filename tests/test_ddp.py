"""DDP on CPU (gloo): two processes with half the batch each step like one process with the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_aerun, tiny_overrides


def test_two_gloo_processes_match_one_process(data_root, tmp_path):
    common = tiny_overrides(data_root, "model=linear_ae", "trainer.num_threads=1", "trainer.max_epochs=2")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert run_aerun("train", *common, f"hydra.run.dir={single}").returncode == 0
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                           "-m", "aerun", "train", *common, "trainer.strategy=ddp", f"hydra.run.dir={ddp}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DDP: 2 processes, global batch 64 (32 each)" in proc.stdout + proc.stderr
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    assert a["steps"] == b["steps"] == 14  # 448 images, global batch 64
    assert b["test"]["mse"] == pytest.approx(a["test"]["mse"], rel=1e-3)
    wa = torch.load(single / "last.pt", weights_only=True)["model"]
    wb = torch.load(ddp / "last.pt", weights_only=True)["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-4)
    # only rank 0 wrote: one run directory, nothing else beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]


def test_ddp_without_torchrun_is_a_clear_error(data_root, tmp_path):
    proc = run_aerun("train", *tiny_overrides(data_root), "trainer.strategy=ddp", cwd=tmp_path)
    assert proc.returncode == 2 and "start aerun with torchrun" in proc.stderr
    assert not (tmp_path / "outputs").exists()  # refused before a run directory was made
