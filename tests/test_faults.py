"""Every way a process can end, through the `aerun` command as a user runs it: one line on
stderr, the right exit status (2 bad input, 130/143 a signal, 1 otherwise), an honest
status.json, the last good checkpoint intact, no temp files, and a refused command that
changes nothing. Faults are injected at named points (AERUN_TEST_FAULTS, aerun/faults.py) or
by monkeypatching the file system in-process."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aerun.checkpoint import load_checkpoint
from tests.conftest import AERUN, REPO, run_aerun, tiny_overrides

SMOKE = ["model=linear_ae", "trainer.max_epochs=2", "trainer.checkpoint_every_n_steps=1"]


def one_line(proc) -> str:
    """The single line the failing command printed on stderr, checked to be alone and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("aerun:")]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def no_temp_files(run_dir: Path) -> bool:
    return not [p for p in run_dir.rglob(".*") if p.name not in (".hydra", ".lock") and p.parent.name != ".hydra"]


def train_with(data_root, run_dir, fault: str, *extra, env=None, cwd=None):
    return run_aerun("train", *tiny_overrides(data_root, *SMOKE, *extra), f"hydra.run.dir={run_dir}",
                     env={"AERUN_TEST_FAULTS": fault, **(env or {})}, cwd=cwd)


# ----------------------------------------------------------------------------- I/O errors
@pytest.mark.parametrize("fault, says", [
    ("ENOSPC", "the disk is full"),
    pytest.param("EIO", "an input/output error", marks=pytest.mark.slow),
    pytest.param("EROFS", "the file system is read-only", marks=pytest.mark.slow)])
@pytest.mark.slow
def test_a_failed_checkpoint_write_keeps_the_last_good_one(data_root, tmp_path, fault, says):
    run_dir = tmp_path / "run"
    proc = train_with(data_root, run_dir, f"{fault}@checkpoint#3")
    assert proc.returncode == 1
    line = one_line(proc)
    assert f"could not finish writing {run_dir / 'last.pt'}: {says}" in line
    assert f"resume with aerun train resume={run_dir}" in line
    assert load_checkpoint(run_dir / "last.pt")["global_step"] == 2  # the second write, whole
    assert status(run_dir)["status"] == "failed" and says in status(run_dir)["reason"]
    assert no_temp_files(run_dir) and not (run_dir / ".lock").exists()
    # what it says to do works: the same run continues from there
    proc = run_aerun("train", f"resume={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert status(run_dir)["status"] == "ok" and json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_a_full_disk_in_process_through_os_replace(data_root, tmp_path, monkeypatch, capsys):
    """The same, with the rename itself refused (monkeypatched os.replace)."""
    from aerun.cli import main

    real = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        if str(dst).endswith("last.pt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    run_dir = tmp_path / "run"
    assert main(["train", *tiny_overrides(data_root, *SMOKE), f"hydra.run.dir={run_dir}"]) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err
    assert load_checkpoint(run_dir / "last.pt")["global_step"] == 1 and no_temp_files(run_dir)


@pytest.mark.parametrize("code, says", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied")])
def test_an_output_folder_that_refuses_writes_is_one_line(data_root, tmp_path, monkeypatch, capsys, code, says):
    """Tests run as root, where chmod refuses nothing: the refusal is monkeypatched into mkdir."""
    from aerun.cli import main

    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if "outputs" in self.parts:
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.chdir(tmp_path)
    assert main(["train", *tiny_overrides(data_root, *SMOKE)]) == 1
    err = capsys.readouterr().err
    assert says in err and "outputs" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


# ----------------------------------------------------------------------------- signals
@pytest.mark.slow
def test_sigterm_while_the_final_metrics_are_computed(data_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = train_with(data_root, run_dir, "SIGTERM@final_evaluation")
    assert proc.returncode == 143
    line = one_line(proc)
    assert "stopped by SIGTERM" in line and f"aerun train resume={run_dir}" in line
    assert status(run_dir)["status"] == "interrupted" and not (run_dir / "metrics.json").exists()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2 and no_temp_files(run_dir)
    proc = run_aerun("train", f"resume={run_dir}")  # nothing left to train: the final metrics only
    assert proc.returncode == 0 and "nothing left to train" in proc.stderr + proc.stdout
    assert status(run_dir)["status"] == "ok" and (run_dir / "metrics.json").is_file()


def test_sigterm_during_the_last_epochs_validation_is_not_lost(data_root, tmp_path):
    """Inside the loop a first signal is a request honoured at the next step; after the last
    epoch's end there is no next step, so the request must stop the run there."""
    run_dir = tmp_path / "run"
    proc = train_with(data_root, run_dir, "SIGTERM@epoch_end#2")
    assert proc.returncode == 143 and "stopped by SIGTERM" in one_line(proc), proc.stderr
    assert status(run_dir)["status"] == "interrupted" and not (run_dir / "metrics.json").exists()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2 and no_temp_files(run_dir)


@pytest.mark.parametrize("point", ["startup", "data"])
def test_a_signal_before_training_starts_leaves_no_folder(data_root, tmp_path, point):
    proc = run_aerun("train", *tiny_overrides(data_root, *SMOKE), cwd=tmp_path,
                     env={"AERUN_TEST_FAULTS": f"SIGINT@{point}"})
    assert proc.returncode == 130 and "stopped by SIGINT" in one_line(proc)
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))


def test_a_second_signal_inside_a_checkpoint_write_leaves_the_old_file_whole(data_root, tmp_path):
    """The first Ctrl-C asks for a stop after the step; the second arrives while last.pt is being
    written (after its bytes, before the rename) and stops at once."""
    run_dir = tmp_path / "run"
    proc = train_with(data_root, run_dir, "SIGINT@checkpoint#3,SIGINT@checkpoint#3")
    assert proc.returncode == 130 and "stopped by SIGINT" in one_line(proc)
    assert load_checkpoint(run_dir / "last.pt")["global_step"] == 2
    assert no_temp_files(run_dir) and status(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_ctrl_c_between_two_sweep_jobs_is_one_line(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_aerun("train", "-m", *tiny_overrides(data_root, "model=linear_ae", "model.latent_dim=2,3"),
                     f"hydra.sweep.dir={sweep}", env={"AERUN_TEST_FAULTS": "SIGINT@job_end#1"})
    assert proc.returncode == 130 and "stopped by SIGINT" in one_line(proc)
    assert status(sweep / "0")["status"] == "ok" and not (sweep / "1").exists()


def test_sigterm_in_a_latent_command_leaves_nothing(data_root, tmp_path, trained_run):
    run = trained_run("model=linear_ae")
    before = sorted(p.name for p in run.iterdir())
    proc = run_aerun("encode", str(run), cwd=tmp_path, env={"AERUN_TEST_FAULTS": "SIGTERM@latent"})
    assert proc.returncode == 143 and "stopped by SIGTERM" in one_line(proc)
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.npz"))
    assert sorted(p.name for p in run.iterdir()) == before


# ----------------------------------------------------------------------------- memory and bugs
def test_out_of_memory_says_what_to_lower(data_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = train_with(data_root, run_dir, "OOM@step#3")
    assert proc.returncode == 1
    line = one_line(proc)
    assert "out of memory" in line and "lower trainer.batch_size" in line and "resume with" in line
    assert "out of memory" in status(run_dir)["reason"] and load_checkpoint(run_dir / "last.pt")["global_step"] == 3


@pytest.mark.slow
def test_a_bug_is_one_line_unless_a_traceback_is_asked_for(data_root, tmp_path):
    proc = train_with(data_root, tmp_path / "a", "BUG@step#3")
    assert proc.returncode == 1
    line = one_line(proc)
    assert "internal error: ZeroDivisionError" in line and "AERUN_DEBUG=1" in line
    proc = train_with(data_root, tmp_path / "b", "BUG@step#3", env={"AERUN_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr


# ----------------------------------------------------------------------------- refused commands change nothing
def _snapshot(run_dir: Path) -> dict:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_refused_resume_changes_nothing_and_the_allowed_one_still_works(data_root, tmp_path):
    run_dir = tmp_path / "p"
    assert run_aerun("train", *tiny_overrides(data_root, "model=linear_ae"), f"hydra.run.dir={run_dir}").returncode == 0
    before = _snapshot(run_dir)
    proc = run_aerun("train", f"resume={run_dir}", "optim.lr=0.01")
    assert proc.returncode == 2 and "optim.lr (0.001 -> 0.01)" in one_line(proc)
    assert _snapshot(run_dir) == before  # status.json, .hydra/overrides.yaml, .hydra/config.yaml untouched
    proc = run_aerun("train", f"resume={run_dir}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_a_second_process_on_a_run_dir_in_use_is_refused_before_touching_it(data_root, tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    first = subprocess.Popen([*AERUN, "train", *tiny_overrides(data_root, "model=linear_ae", "trainer.max_epochs=100000",
                                                               "trainer.images_every_n_epochs=0"),
                              f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "last.pt").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        hydra_files = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
        proc = run_aerun("train", *tiny_overrides(data_root, "model=linear_ae"), f"hydra.run.dir={run_dir}")
        assert proc.returncode == 2 and "in use by another aerun process" in one_line(proc)
        assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == hydra_files
        assert status(run_dir)["status"] == "running"
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert first.returncode == 143


def test_an_error_found_after_start_up_leaves_no_run_folder(data_root, tmp_path):
    """data.val_size is checked against the data only once it is loaded: the folder made for the
    run is removed again, and `outputs/` holds nothing."""
    proc = run_aerun("train", *tiny_overrides(data_root, "data.val_size=100000"), cwd=tmp_path)
    assert proc.returncode == 2 and "leaves none for training" in one_line(proc)
    assert not (tmp_path / "outputs").exists()  # nor the outputs/ folder it had made for it
    proc = run_aerun("train", *tiny_overrides(data_root, "data.val_size=100000"), f"hydra.run.dir={tmp_path}/a/b/run",
                     cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "a").exists()


def test_missing_data_and_missing_cuda_are_refused_before_a_folder_exists(tmp_path):
    proc = run_aerun("train", f"data.root={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert proc.returncode == 2 and "MNIST not found" in one_line(proc)
    if not torch.cuda.is_available():
        proc = run_aerun("train", f"data.root={tmp_path}", "trainer.device=cuda", cwd=tmp_path)
        assert proc.returncode == 2 and "no CUDA device" in one_line(proc)
        # 16-mixed with the default device=auto: the grad scaler is a GPU feature, refused here too
        proc = run_aerun("train", f"data.root={tmp_path}", "trainer.precision=16-mixed", cwd=tmp_path)
        assert proc.returncode == 2 and "16-mixed: needs a CUDA device" in one_line(proc)
    assert not (tmp_path / "outputs").exists()


# ----------------------------------------------------------------------------- no option is ignored
@pytest.mark.parametrize("overrides, says", [
    (["model=vae", "model.sparsity.kind=l1", "model.sparsity.weight=0.5"],
     "model.sparsity: unknown key; it is not an option of model=vae, it applies to model=cnn_ae, model=linear_ae"),
    (["model.sparsity.weight=0.5"], "model.sparsity.weight=0.5: has no effect with model.sparsity.kind=none"),
    (["model.sparsity.kind=l1", "model.sparsity.rho=0.2"], "model.sparsity.rho=0.2: has no effect with model.sparsity.kind=l1"),
    (["data.noise.level=0.3"], "data.noise.level=0.3: has no effect with data.noise.kind=none"),
    (["optim.momentum=0.5"], "optim.momentum: unknown key; it is not an option of this one, it applies to optim=rmsprop, optim=sgd"),
    (["optim.gamma=0.5"], "optim.gamma: unknown key; it moved to optim.scheduler.gamma"),
    (["trainer.ddp_timeout_s=30"], "has no effect with trainer.strategy=single"),
])
def test_an_option_that_would_be_ignored_is_refused(overrides, says):
    from aerun.cli import main  # in-process: the pre-check alone, nothing runs

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", *overrides]) == 2
    assert says in err.getvalue(), err.getvalue()


def test_a_run_directory_that_is_a_file_is_refused_in_one_line(data_root, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    for where, says in ((afile, "is a file"), (afile / "run", f"lies inside {afile}, which is a file")):
        proc = run_aerun("train", *tiny_overrides(data_root), f"hydra.run.dir={where}", cwd=tmp_path)
        assert proc.returncode == 2 and says in one_line(proc), proc.stderr
    proc = run_aerun("train", "-m", *tiny_overrides(data_root), "seed=1,2", f"hydra.sweep.dir={afile / 's'}",
                     cwd=tmp_path)
    assert proc.returncode == 2 and "hydra.sweep.dir" in one_line(proc)
    assert afile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_training_into_a_folder_that_holds_a_run_or_a_sweep_is_refused(data_root, tmp_path):
    """Re-running a command with the same hydra.run.dir would overwrite a finished run's best.pt."""
    run_dir = tmp_path / "run"
    assert run_aerun("train", *tiny_overrides(data_root), f"hydra.run.dir={run_dir}").returncode == 0
    before = (run_dir / "best.pt").read_bytes()
    proc = run_aerun("train", *tiny_overrides(data_root, "model=linear_ae"), f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and f"aerun train resume={run_dir}" in one_line(proc)
    assert (run_dir / "best.pt").read_bytes() == before
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "status.json").write_text('{"status": "ok"}')
    proc = run_aerun("train", "-m", *tiny_overrides(data_root), "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2 and "holds a sweep already" in one_line(proc)
    assert sorted(p.name for p in sweep.iterdir()) == ["0"]


def test_cfg_job_with_an_equals_sign_writes_no_folder(tmp_path):
    proc = run_aerun("train", "--cfg=job", cwd=tmp_path)
    assert proc.returncode == 0 and "_target_" in proc.stdout and not (tmp_path / "outputs").exists()
