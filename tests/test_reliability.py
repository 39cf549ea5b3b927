"""A run that dies loses only the steps since its last checkpoint; hostile or broken files are refused."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from aerun import runs
from aerun.checkpoint import load_checkpoint, save_checkpoint
from aerun.errors import UserError
from tests.conftest import AERUN, REPO, run_aerun, tiny_overrides

# A VAE on noisy inputs uses every RNG stream the loop has: data order, noise, reparameterisation.
EXACT = ["model=vae", "model.latent_dim=4", "data.noise.kind=gaussian", "data.noise.level=0.2",
         "trainer.deterministic=true", "trainer.max_epochs=2", "trainer.checkpoint_every_n_steps=4",
         "trainer.batch_size=32"]


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

@pytest.mark.slow
def test_kill_9_at_an_odd_step_then_resume_is_bit_exact(data_root, tmp_path):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    proc = run_aerun("train", *tiny_overrides(data_root, *EXACT), f"hydra.run.dir={reference}")
    assert proc.returncode == 0, proc.stderr
    proc = run_aerun("train", *tiny_overrides(data_root, *EXACT), f"hydra.run.dir={crashed}",
                     env={"AERUN_TEST_FAULTS": "SIGKILL@step#19"})
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(crashed / "last.pt")
    assert state["global_step"] == 16 and state["batch_in_epoch"] == 2  # 14 steps an epoch, a checkpoint every 4
    proc = run_aerun("train", f"resume={crashed}")  # as a user types it: the crash is not re-applied
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stderr + proc.stdout
    _assert_same_weights(_weights(reference / "last.pt"), _weights(crashed / "last.pt"))
    _assert_same_weights(_weights(reference / "best.pt"), _weights(crashed / "best.pt"))
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    new_metrics = json.loads((crashed / "metrics.json").read_text())
    assert ref_metrics["test"] == new_metrics["test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashed", "reference"]  # no new run folder

@pytest.mark.slow
def test_resume_continues_to_more_epochs_in_the_same_dir(data_root, tmp_path):
    run_dir = tmp_path / "run"
    assert run_aerun("train", *tiny_overrides(data_root, "model=linear_ae"), f"hydra.run.dir={run_dir}").returncode == 0
    proc = run_aerun("train", f"resume={run_dir}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["steps"] == 14
    # resuming a finished run trains nothing, says so, and reports the same best-weights metrics
    proc = run_aerun("train", f"resume={run_dir}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert "nothing left to train" in proc.stdout + proc.stderr
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["steps"] == 14 and again["val"] == metrics["val"] and again["test"] == metrics["test"]

@pytest.mark.slow
def test_resume_with_a_changed_model_is_refused(data_root, tmp_path):
    run_dir = tmp_path / "run"
    assert run_aerun("train", *tiny_overrides(data_root, "model=linear_ae"), f"hydra.run.dir={run_dir}").returncode == 0
    proc = run_aerun("train", f"resume={run_dir}", "model.latent_dim=5", "optim.lr=0.1")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "model.latent_dim (2 -> 5)" in line and "optim.lr (0.001 -> 0.1)" in line


def _start(data_root, run_dir, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    args = [*AERUN, "train", *tiny_overrides(data_root, "model=linear_ae", "trainer.max_epochs=100000", *extra),
            f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_writes_a_checkpoint_and_says_how_to_resume(data_root, tmp_path, sig, code):
    run_dir = tmp_path / "run"
    proc = _start(data_root, run_dir, "trainer.images_every_n_epochs=0")
    _wait_for(run_dir / "last.pt", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"aerun train resume={run_dir}" in out + err
    state = load_checkpoint(run_dir / "last.pt")
    assert state["global_step"] >= 7
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert not (run_dir / ".lock").exists()


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_whole_checkpoints(data_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(data_root, run_dir, "trainer.checkpoint_every_n_steps=1", "trainer.images_every_n_epochs=0")
    _wait_for(run_dir / "last.pt", proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    load_checkpoint(run_dir / "last.pt")  # complete, loadable
    assert not list(run_dir.glob(".last.pt*"))


class _Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _fake_run(tmp_path, checkpoint_bytes: bytes, name="last.pt"):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("model: {}\n")
    (run_dir / name).write_bytes(checkpoint_bytes)
    return run_dir


def test_a_malicious_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    malicious = tmp_path / "evil.pt"
    torch.save({"model": {}, "format": "aerun-checkpoint-v1", "x": _Payload(marker)}, malicious)
    run_dir = _fake_run(tmp_path, malicious.read_bytes())
    proc = run_aerun("train", f"resume={run_dir}")
    assert proc.returncode == 2
    assert "refusing to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint(run_dir / "last.pt")
    # a raw pickle (not a torch zip) with the same payload
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UserError):
        load_checkpoint(raw)
    assert not marker.exists()


@pytest.mark.parametrize("name, data, expected", [
    ("metrics.json", b'{"test": {"mse": 0.01}}', "not a checkpoint file (it looks like JSON"),
    ("reconstructions.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a checkpoint file (a PNG image"),
])
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UserError, match=re.escape(expected)) as info:
        load_checkpoint(path)
    assert "could run code" not in str(info.value)


@pytest.mark.parametrize("kind", ["empty", "truncated", "foreign", "text"])
def test_broken_checkpoints_give_one_line(tmp_path, kind):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.ones(1000)}})
    data = {"empty": b"", "truncated": good.read_bytes()[: good.stat().st_size // 2],
            "text": b"hello, not a checkpoint\n"}.get(kind)
    if kind == "foreign":
        foreign = tmp_path / "foreign.pt"
        torch.save({"state_dict": {"w": torch.ones(3)}}, foreign)
        data = foreign.read_bytes()
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_checkpoint_of_another_model_is_refused(trained_run):
    from aerun import runs

    run_dir = trained_run("model=linear_ae")
    other = trained_run("model=cnn_ae")
    (run_dir / "best.pt").write_bytes((other / "best.pt").read_bytes())
    state = torch.load(run_dir / "best.pt", weights_only=True)
    state["config"] = torch.load(run_dir / "last.pt", weights_only=True)["config"]  # claims to be the linear AE
    torch.save(state, run_dir / "best.pt")
    with pytest.raises(UserError, match="does not fit the model"):
        runs.load_run(run_dir)


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path):
    from aerun.io import atomic_path

    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_cuda_rng_state_is_this_gpus_and_restores_on_another_gpu_count(monkeypatch):
    """One state for the process's own GPU: a run saved on an 8-GPU node resumes on a 1-GPU box
    (one state per visible GPU, restored by index, was an IndexError there). Checkpoints of the
    old format (a list) restore the entry of the current GPU."""
    from aerun import checkpoint

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((16,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state.clone()))
    state = checkpoint.capture_rng_state()
    assert torch.equal(state["cuda"], torch.full((16,), 7, dtype=torch.uint8))
    checkpoint.restore_rng_state(state)
    old_format = {**state, "cuda": [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]}
    checkpoint.restore_rng_state(old_format)
    assert [int(s[0]) for s in restored] == [7, 0]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    checkpoint.restore_rng_state({**state, "cuda": old_format["cuda"][:2]})  # GPU 3 of a 2-GPU save: nothing to restore
    assert len(restored) == 2


def test_a_noise_stream_saved_on_another_kind_of_device_is_replaced_not_fatal(caplog):
    """trainer.device may change on resume; a mid-epoch checkpoint of a denoising run holds the
    noise generator of the device it was trained on (CUDA's state is 16 bytes, the CPU's 5,056)."""
    from aerun.data.noise import noise_generator, restore_noise_state

    cpu = noise_generator(torch.device("cpu"), 0, 1)
    fresh = cpu.get_state()
    assert not restore_noise_state(cpu, torch.zeros(16, dtype=torch.uint8))  # a CUDA generator's state
    assert torch.equal(cpu.get_state(), fresh) and "another kind of device" in caplog.text
    other = noise_generator(torch.device("cpu"), 5, 3)
    assert restore_noise_state(cpu, other.get_state()) and torch.equal(cpu.get_state(), other.get_state())


def test_a_signal_during_a_deferred_import_arrives_after_it_and_a_swallowed_one_is_raised_again():
    """torch's C import of numpy clears any Python error, so a Ctrl-C raised inside `import torch`
    was lost and the run trained to the end: such imports run deferred, and a swallowed signal is
    raised again when the training loop starts."""
    import os
    import signal as sig

    from aerun.errors import Interrupted
    from aerun.signals import SignalPolicy

    policy = SignalPolicy()
    saved = {s: sig.getsignal(s) for s in (sig.SIGINT, sig.SIGTERM)}
    try:
        policy.install()
        done = []
        with pytest.raises(Interrupted) as stopped:
            with policy.deferred():
                os.kill(os.getpid(), sig.SIGTERM)
                done.append("the import finished")  # not cut short inside the block
        assert done and stopped.value.signum == sig.SIGTERM
        try:  # a C extension swallowing the exception the handler raised
            os.kill(os.getpid(), sig.SIGINT)
            for _ in range(1000):
                pass
        except Interrupted:
            pass
        with pytest.raises(Interrupted):
            with policy.graceful():
                pass
    finally:
        for s, handler in saved.items():
            sig.signal(s, handler)


def test_a_run_trained_with_aerun_data_root_resumes_without_it(data_root, tmp_path):
    """data.root came from $AERUN_DATA_ROOT, so it is in no saved override: the resume reads the
    run's own value instead of refusing 'the config differs in data.root'."""
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_overrides(data_root) if not o.startswith("data.root=")]
    proc = run_aerun("train", *overrides, f"hydra.run.dir={run_dir}", env={"AERUN_DATA_ROOT": str(data_root)})
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "AERUN_DATA_ROOT"}
    proc = subprocess.run([*AERUN, "train", f"resume={run_dir}", "trainer.max_epochs=2"], capture_output=True,
                          text=True, timeout=240, env={**env, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_a_refused_resume_leaves_a_sweep_job_as_it_was(tmp_path):
    """Marked failed, the job would start afresh at the next resume and delete its last.pt."""
    from aerun.errors import ResumeRefused
    from aerun.launch import Job, _job_failed

    job_dir = tmp_path / "3"
    job_dir.mkdir()
    runs.write_status(job_dir, "interrupted", reason="stopped by SIGTERM")
    before = (job_dir / runs.STATUS).read_text()
    _job_failed(Job(job_dir, [], True, 3), ResumeRefused("resume: the config differs from the run's in seed (0 -> 1)"))
    assert (job_dir / runs.STATUS).read_text() == before
    _job_failed(Job(job_dir, [], True, 3), UserError("optim.lr: must be > 0"))  # a real failure is still recorded
    assert json.loads((job_dir / runs.STATUS).read_text())["status"] == "failed"
