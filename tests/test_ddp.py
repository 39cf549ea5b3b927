"""DDP on CPU (gloo): two processes with half the batch each step like one process with the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_aerun, tiny_overrides

@pytest.mark.slow
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


def test_each_rank_takes_its_slice_of_every_global_batch():
    """The arithmetic DDP rests on, without processes: two ranks' slices tile each global batch."""
    from aerun import distributed
    from aerun.errors import UserError

    perm = torch.randperm(70, generator=torch.Generator().manual_seed(0))
    slices = [distributed.local_permutation(perm, 32, distributed.DistContext(True, r, r, 2)) for r in (0, 1)]
    assert [s.numel() for s in slices] == [32, 32]  # 2 full global batches of 32: 16 each per step
    for step in range(2):
        both = torch.cat([s[step * 16:(step + 1) * 16] for s in slices])
        assert torch.equal(both, perm[step * 32:(step + 1) * 32])
    assert distributed.steps_per_epoch(distributed.DistContext(True, 0, 0, 2), 70, 32) == 2
    with pytest.raises(UserError, match="divisible"):
        distributed.local_permutation(perm, 33, distributed.DistContext(True, 0, 0, 2))
    single = distributed.DistContext()
    assert distributed.first_bad_step(single, None) is None and distributed.first_bad_step(single, 7) == (7, 0)


def test_ddp_without_torchrun_is_a_clear_error(data_root, tmp_path):
    proc = run_aerun("train", *tiny_overrides(data_root), "trainer.strategy=ddp", cwd=tmp_path)
    assert proc.returncode == 2 and "start aerun with torchrun" in proc.stderr
    assert not (tmp_path / "outputs").exists()  # refused before a run directory was made


# ----------------------------------------------------------------------------- faults under DDP
def _torchrun(data_root, run_dir, port: int, *extra, faults: str = "", wait: bool = True):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", AERUN_TEST_FAULTS=faults)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
            "-m", "aerun", "train", *tiny_overrides(data_root, "model=linear_ae", "trainer.num_threads=1",
                                                    "trainer.batch_size=32", *extra),
            "trainer.strategy=ddp", f"hydra.run.dir={run_dir}"]
    if not wait:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
    return subprocess.run(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def _aerun_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("aerun:")]


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_both_with_one_message_naming_it(data_root, tmp_path):
    proc = _torchrun(data_root, tmp_path / "run", 29532, "trainer.log_every_n_steps=2", "trainer.max_epochs=3",
                     faults="NAN@batch#3:rank1")
    assert proc.returncode != 0
    lines = _aerun_lines(proc.stdout)
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("aerun: error: rank 0: training diverged") and "at step 3, first on rank 1" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("fault, says", [("BUG@step#3:rank1", "rank 1: internal error: ZeroDivisionError"),
                                         # whichever comes first: rank 0 notices the lost peer, or torchrun's
                                         # agent, seeing rank 1 die, sends rank 0 SIGTERM (on a loaded machine)
                                         ("SIGKILL@step#3:rank1", ("rank 0: stopped: lost contact with another rank",
                                                                   "rank 0: stopped by SIGTERM"))])
def test_a_rank_that_fails_or_dies_stops_the_other_within_seconds(data_root, tmp_path, fault, says):
    import time

    started = time.time()
    proc = _torchrun(data_root, tmp_path / "run", 29533, "trainer.max_epochs=100", faults=fault)
    assert proc.returncode != 0 and time.time() - started < 60  # no rank waits in a collective
    says = (says,) if isinstance(says, str) else says
    assert any(said in line for line in _aerun_lines(proc.stdout) for said in says), proc.stdout


@pytest.mark.slow
def test_sigterm_to_torchrun_checkpoints_once_and_the_workers_exit_143(data_root, tmp_path):
    import signal
    import time

    run_dir = tmp_path / "run"
    proc = _torchrun(data_root, run_dir, 29534, "trainer.max_epochs=100000", "trainer.log_every_n_steps=2",
                     "trainer.images_every_n_epochs=0", wait=False)
    deadline = time.time() + 120
    while not (run_dir / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    lines = _aerun_lines(output)
    assert len(lines) == 1 and lines[0].startswith("aerun: rank 0: stopped by SIGTERM"), output
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert output.count("checkpoint written") == 1
    torch.load(run_dir / "last.pt", weights_only=True)
