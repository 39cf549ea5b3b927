"""The `aerun` command as a user meets it: help, a smoke run, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aerun.launch import claim_run_dir
from tests.conftest import REPO, run_aerun, tiny_overrides


def test_help_lists_commands_and_group_choices_without_importing_torch():
    code = ("import sys; from aerun.cli import main; rc = main(['--help']); "
            "assert 'torch' not in sys.modules and 'hydra' not in sys.modules, 'slow import'; sys.exit(rc)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    for word in ("train", "model", "cnn_ae", "linear_ae", "vae", "conv_vae", "data", "mnist", "fashion_mnist",
                 "cifar10", "optim", "adam", "debug", "smoke"):
        assert word in proc.stdout, word
    assert elapsed < 5  # generous for a loaded CI machine; measured ~0.05 s


def test_command_help_shows_the_composed_config_with_what_each_key_does(tmp_path):
    proc = run_aerun("train", "--help", "model=vae", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "_target_: aerun.models.VAE" in proc.stdout and "aerun --help" in proc.stdout
    assert "base_" not in proc.stdout  # the schemas behind the groups are not choices
    lines = {line.split(":")[0].strip(): line for line in proc.stdout.splitlines() if ":" in line}
    assert "# 32 | bf16 | 16-mixed (CUDA only)" in lines["precision"]  # the YAML comment of trainer.precision
    assert "# null: the model's default" in lines["loss"]
    assert "kill_at_step" not in proc.stdout and "_partial_" not in proc.stdout  # no test hooks, no internals
    assert not (tmp_path / "outputs").exists()  # help starts no run
    proc = run_aerun("encode", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "# auto | pca | tsne | hammer" in proc.stdout


def test_smoke_run_through_the_cli(data_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_aerun("train", "debug=smoke", *tiny_overrides(data_root), f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (run_dir / "config.yaml").is_file()
    assert "parameters" in proc.stdout + proc.stderr  # parameter count printed at start
    # the command exits without the interpreter's teardown: the log and the event file must be whole
    assert (run_dir / "aerun.log").read_text().rstrip().splitlines()[-1].startswith("test: mse")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aerun.loggers.tensorboard import event_dir

    events = EventAccumulator(str(event_dir(run_dir)))
    events.Reload()
    assert "test/mse" in events.Tags()["scalars"]


def test_exit_status_and_output_survive_the_prompt_exit(tmp_path):
    """`aerun` ends with os._exit: a SystemExit's code, atexit handlers and buffered output still count."""
    code = ("import atexit, sys; from aerun import cli; "
            "atexit.register(lambda: print('atexit ran')); "
            "cli.main = lambda: (print('buffered', end=''), sys.exit(143)); cli.console_main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 143
    assert proc.stdout == "bufferedatexit ran\n"


@pytest.mark.slow
def test_default_run_dirs_are_under_outputs_and_never_shared(data_root, tmp_path):
    first = claim_run_dir(str(tmp_path))
    second = claim_run_dir(str(tmp_path))  # same second
    assert first != second and Path(first).is_dir() and Path(second).is_dir()
    proc = run_aerun("train", *tiny_overrides(data_root, "model=linear_ae"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "outputs").glob("*/*/metrics.json")
    assert run.parent.parent.parent == tmp_path / "outputs"


def test_cfg_job_prints_the_composed_config():
    proc = run_aerun("train", "--cfg", "job", "model=vae", "model.beta=4")
    assert proc.returncode == 0, proc.stderr
    assert "beta: 4" in proc.stdout and "_target_: aerun.models.VAE" in proc.stdout


def test_unknown_command():
    proc = run_aerun("trian")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "unknown command 'trian'" in proc.stderr and "did you mean 'train'" in proc.stderr


# (arguments, text the one-line error must contain)
BAD_INPUTS = [
    (["optim.lr=-1"], "optim.lr"),
    (["optim.lr=abc"], "optim.lr=abc"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["model.latent_dim=0"], "model.latent_dim"),
    (["trainer.batch_size=abc"], "trainer.batch_size=abc"),
    (["trainer.batch_size=0"], "trainer.batch_size"),
    (["data=nosuch"], "choose one of cifar10, fashion_mnist, folder, mnist, npz"),
    (["model=nosuch"], "choose one of"),
    (["optim=adagrad"], "optim=adagrad"),
    (["trainer.max_epoch=3"], "did you mean trainer.max_epochs"),
    (["modle=vae"], "did you mean model"),
    (["model=cnn_ae", "model.hidden=[8]"], "model.hidden: unknown key"),
    (["model=mlp_ae", "model.hidden=128,64"], "model.hidden is a list; write it in brackets"),  # the README's example
    (["model.latent_dim=2,4"], "a comma-separated value is a sweep; add -m"),
    (["trainer.device=tpu"], "expected one of [auto, cpu, cuda]"),
    (["trainer.precision=64"], "trainer.precision"),
    (["trainer.device=cpu", "trainer.precision=16-mixed"], "16-mixed needs a CUDA device"),
    (["model.sparsity.kind=l3"], "model.sparsity.kind=l3"),
    (["model.sparsity.rho=1.5"], "model.sparsity.rho"),
    (["data.noise.kind=gauss"], "data.noise.kind=gauss"),
    (["data.noise.kind=masking", "data.noise.level=2"], "data.noise.level"),
    (["data.noise.kind=gaussian"], "must be > 0 when data.noise.kind=gaussian"),
    (["data.val_size=-1"], "data.val_size"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay"),
    (["optim.scheduler=linear"], "optim.scheduler=linear"),
    (["loss=hinge"], "loss=hinge"),
    (["model=mlp_ae", "model.activation=identity", "loss=bce"], "loss: bce needs a sigmoid output"),
    (["model=vae", "model.beta=-1"], "model.beta"),
    (["model=vaegan", "model.equilibrium_margin=0"], "model.equilibrium_margin: must be > 0 (or null"),
    (["model=vaegan", "model.discriminator_lr_scale=0"], "model.discriminator_lr_scale: must be > 0"),
    (["trainer.compile=true", "trainer.deterministic=true"], "trainer.compile"),
    (["trainer.grad_clip=-1"], "trainer.grad_clip"),
    (["seed=1.5"], "seed=1.5"),
    (["model.latent_dim=2,3"], "add -m"),
    (["optimized_metric=loss"], "optimized_metric"),
    (["resume=/no/such/run"], "resume=/no/such/run: no such directory"),
    (["resume=/etc/hostname"], "not a directory"),
    (["--bogus"], "unknown option '--bogus'"),
    (["latent_dim"], "cannot parse the overrides"),
    (["trainer.device=cuda"], "no CUDA device"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch: unknown key (a `+` override adds a key"),
    (["+model.latnt_dim=3"], "did you mean model.latent_dim"),
    (["+foo=1"], "foo: unknown key"),
    (["+experiment=cnn_mnist"], "write experiment=cnn_mnist"),
    (["trainer.train_eval_size=-5"], "trainer.train_eval_size"),
    (["model=rbm", "model.reconstruction=samples"], "expected one of [auto, probabilities, binary]"),
]


@pytest.mark.parametrize("args, expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_gives_one_line_and_exit_2(args, expected, data_root, tmp_path, monkeypatch, capsys):
    """In-process through `aerun.cli.main` (the same code path as the command); a few run as
    real processes below."""
    from aerun.cli import main

    if args == ["trainer.device=cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    monkeypatch.chdir(tmp_path)
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aerun: error: "), err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "outputs").exists()  # refused before a run directory was made


@pytest.mark.parametrize("args, expected", [(["optim.lr=-1"], "optim.lr: must be > 0, got -1.0"),
                                            (["--bogus"], "unknown option '--bogus'"),
                                            (["model=vae", "model.sparsity.kind=l1"], "model.sparsity")])
def test_bad_input_as_a_process_is_one_line_without_traceback(args, expected, tmp_path):
    proc = run_aerun("train", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aerun: error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr


def test_resume_dir_that_is_not_a_run(tmp_path):
    proc = run_aerun("train", f"resume={tmp_path}")
    assert proc.returncode == 2
    assert "not an aerun run directory" in proc.stderr


def test_missing_dataset_names_the_expected_files_and_the_option(tmp_path):
    proc = run_aerun("train", f"data.root={tmp_path}", "trainer.progress=false", cwd=tmp_path)
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert "MNIST/raw/train-images-idx3-ubyte" in message and "data.download=true" in message
