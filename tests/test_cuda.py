"""On a GPU (skipped without one): every family trains, evaluates and resumes on CUDA through
the real CLI, in each precision the trainer offers. CI has no GPU; `benchmarks/gpu_session.sh`
runs these on a lent one."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from tests.conftest import run_aerun, tiny_overrides
from tests.test_device_hygiene import FAMILIES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _on_cuda(data_root, *extra):
    return [o for o in tiny_overrides(data_root, *extra) if o != "trainer.device=cpu"] + ["trainer.device=cuda"]


# families whose layer-by-layer training needs more than the one epoch of tiny_overrides
EPOCHS = {"dbn": ["model.epochs_per_layer=1", "trainer.max_epochs=3"], "stacked_rbm": ["trainer.max_epochs=5"],
          "stacked_greedy": ["trainer.max_epochs=5"]}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_trains_on_cuda(name, data_root, tmp_path):
    overrides = _on_cuda(data_root, *FAMILIES[name], *EPOCHS.get(name, []))
    proc = run_aerun("train", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["device"] == "cuda" and metrics["test"], metrics


@pytest.mark.parametrize("precision", ["16-mixed", "bf16"])
@pytest.mark.parametrize("name", ["cnn_ae", "vae", "vaegan", "stacked_rbm"])  # stacked_rbm: CD grads, scaled
def test_mixed_precision_trains_on_cuda(name, precision, data_root, tmp_path):
    overrides = _on_cuda(data_root, *FAMILIES[name], *EPOCHS.get(name, []), f"trainer.precision={precision}")
    proc = run_aerun("train", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == precision and metrics["test"]["loss"] == metrics["test"]["loss"]  # not NaN


def test_a_denoising_run_stopped_mid_epoch_on_cuda_resumes_on_the_cpu(data_root, tmp_path):
    run = tmp_path / "run"
    common = ["model=vae", "data.noise.kind=gaussian", "data.noise.level=0.2", "trainer.checkpoint_every_n_steps=2"]
    proc = run_aerun("train", *_on_cuda(data_root, *common), f"hydra.run.dir={run}",
                     env={"AERUN_TEST_FAULTS": "SIGKILL@step#5"})  # 7 steps an epoch: last.pt of step 4
    assert proc.returncode == -signal.SIGKILL and (run / "last.pt").is_file(), proc.stderr[-2000:]
    proc = run_aerun("train", f"resume={run}", "trainer.device=cpu", env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["device"] == "cpu"
