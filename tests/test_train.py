"""`aerun train` in-process: every model family trains, learns, and leaves a complete run directory."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from aerun import runs
from aerun.checkpoint import load_checkpoint
from aerun.errors import DivergenceError, UserError
from aerun.config import validate_train
from aerun.commands.train import train
from aerun.resume import config_differences
from tests.conftest import compose, tiny_overrides


def _event_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aerun.loggers.tensorboard import event_dir

    acc = EventAccumulator(str(event_dir(run_dir)), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("model", ["cnn_ae", "linear_ae", "shallow_ae", "mlp_ae", "vae", "conv_vae"])
def test_every_model_trains_and_writes_a_complete_run(trained_run, model):
    run_dir = trained_run(f"model={model}")
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.json", "status.json", "reconstructions.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert 0 < metrics[split]["mse"] < 0.5
        assert metrics[split]["bce"] > 0
    assert metrics["epochs"] == 1 and metrics["steps"] == math.ceil(448 / 64)
    assert metrics["params"] > 0 and metrics["images_per_s"] > 0 and metrics["wall_time_s"] > 0
    assert 0 < metrics["step_time_s"] <= metrics["train_time_s"] <= metrics["wall_time_s"]
    assert metrics["objective"]["name"] == "val/loss"
    assert metrics["objective"]["value"] == pytest.approx(metrics["val"]["loss"])
    assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"
    if model in ("vae", "conv_vae"):
        assert metrics["recon_loss"] == "bce" and metrics["test"]["elbo"] < 0
    else:
        assert metrics["recon_loss"] == "mse"
    # inputs above reconstructions: 2 rows of 16 28x28 tiles with 2-pixel padding, upscaled 2x, and
    # the rows' labels in a margin on the left
    width, height = Image.open(run_dir / "reconstructions.png").size
    assert height == 2 * (2 * 30 + 2) and 2 * (16 * 30 + 2) + 40 < width < 2 * (16 * 30 + 2) + 300


def test_checkpoint_is_complete_and_weights_only(trained_run):
    run_dir = trained_run("model=cnn_ae")
    state = torch.load(run_dir / "last.pt", weights_only=True)  # no pickled classes inside
    for key in ("model", "optimizers", "schedulers", "scaler", "epoch", "batch_in_epoch", "global_step", "rng", "config",
                "aerun_version", "torch_version", "input_shape"):
        assert key in state, key
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 0
    assert state["config"]["model"]["_target_"] == "aerun.models.ConvAutoencoder"
    assert state["input_shape"] == [1, 28, 28]
    loaded = runs.load_run(run_dir)
    assert loaded.model.encode(torch.rand(2, 1, 28, 28)).shape == (2, 64)
    assert not list(run_dir.glob(".*.pt"))  # no temp files left behind


def test_training_learns(data_root, tmp_path):
    cfg = compose("train", tiny_overrides(data_root, "model=cnn_ae", "trainer.max_epochs=4", "optim.lr=3e-3"))
    metrics = train(cfg, tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")
    losses = [h["val_loss"] for h in state["history"]]
    assert losses[-1] < 0.7 * losses[0]
    assert metrics["best_epoch"] == min(range(len(losses)), key=losses.__getitem__) + 1



@pytest.mark.parametrize("train_eval_size, expected", [(100, 100), (None, 448), (0, 0)])
def test_final_metrics_are_the_best_weights_on_val_and_a_train_subset(data_root, tmp_path, train_eval_size, expected):
    """The final report reuses the best epoch's validation metrics and evaluates the first
    trainer.train_eval_size training images: both must equal a fresh evaluation of best.pt."""
    from aerun.data import load_dataset
    from aerun.engine import evaluate
    from aerun.runs import load_run

    size = "null" if train_eval_size is None else str(train_eval_size)
    cfg = compose("train", tiny_overrides(data_root, "model=mlp_ae", "trainer.max_epochs=3", "optim.lr=3e-3",
                                          f"trainer.train_eval_size={size}"))
    metrics = train(cfg, tmp_path)
    assert metrics["train_eval_images"] == expected
    loaded = load_run(tmp_path)
    d = loaded.config["data"]
    dataset = load_dataset(d["name"], d["root"], val_size=d["val_size"], seed=loaded.config["seed"])
    kwargs = dict(recon_loss=loaded.recon_loss, seed=loaded.config["seed"])
    assert metrics["val"] == pytest.approx(evaluate(loaded.model, dataset.val.images, **kwargs), rel=1e-5)
    assert metrics["test"] == pytest.approx(evaluate(loaded.model, dataset.test.images, **kwargs), rel=1e-5)
    if expected:
        fresh = evaluate(loaded.model, dataset.train.images[:expected], **kwargs)
        assert metrics["train"] == pytest.approx(fresh, rel=1e-5)
    else:
        assert metrics["train"] == {}


def test_negative_train_eval_size_is_refused():
    with pytest.raises(UserError, match="trainer.train_eval_size"):
        validate_train(compose("train", ["trainer.train_eval_size=-1"]))

def test_cifar_rgb_conv_ae(trained_run):
    run_dir = trained_run("data=cifar10", "model=cnn_ae", "model.latent_dim=32")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["mse"] < 0.5
    assert load_checkpoint(run_dir / "best.pt")["input_shape"] == [3, 32, 32]


def test_fashion_mnist_from_raw_files(trained_run):
    run_dir = trained_run("data=fashion_mnist", "model=linear_ae")
    assert json.loads((run_dir / "metrics.json").read_text())["data"] == "fashion_mnist"


def test_tensorboard_has_scalars_images_and_hparams_in_the_run_dir(trained_run):
    run_dir = trained_run("model=vae", "model.latent_dim=4")
    acc = _event_tags(run_dir)
    tags = acc.Tags()
    for tag in ("train/loss", "train/lr", "train/loss_running", "val/loss", "val/mse", "val/kl", "val/elbo",
                "val_kl_per_dim/000", "test/mse", "val/best_loss"):
        assert tag in tags["scalars"], tag
    assert "images/reconstruction" in tags["images"]
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    assert not [t for t in tags["scalars"] if t.startswith("hparam/")]
    assert len([p for p in (run_dir / runs.TENSORBOARD).iterdir() if p.is_dir()]) == 1  # one run, named


def test_denoising_run_writes_denoising_grid_and_psnr_gain(trained_run):
    run_dir = trained_run("model=cnn_ae", "data.noise.kind=gaussian", "data.noise.level=0.5")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"psnr_noisy", "psnr_gain"} <= set(metrics["test"])
    assert (run_dir / "denoising.png").is_file()


def test_sparse_l1_penalty_is_logged(trained_run):
    run_dir = trained_run("model=shallow_ae", "model.latent_dim=64", "model.sparsity.kind=l1",
                          "model.sparsity.weight=0.01", "optim.l1_weight=1e-5")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["sparsity"] > 0
    assert 0 <= metrics["test"]["code_zero_fraction"] <= 1


def _last(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)


def test_bf16_autocasts_the_step_and_changes_the_numbers(trained_run):
    fp32 = json.loads((trained_run("model=cnn_ae") / "metrics.json").read_text())
    bf16_dir = trained_run("model=cnn_ae", "trainer.precision=bf16")
    bf16 = json.loads((bf16_dir / "metrics.json").read_text())
    assert bf16["precision"] == "bf16"
    assert bf16["test"]["mse"] != fp32["test"]["mse"]  # the same seed: only the precision differs
    assert bf16["test"]["mse"] == pytest.approx(fp32["test"]["mse"], rel=0.1)


def test_channels_last_is_the_memory_format_of_the_conv_weights(trained_run):
    def conv_weight(run_dir):
        return _last(run_dir)["model"]["encoder.0.weight"]  # [16, 1, 3, 3]: a layout that can differ

    wide = {"model.channels=[8,16]"}
    assert conv_weight(trained_run("model=cnn_ae", *wide, "trainer.channels_last=true")).stride() == (9, 1, 3, 1)
    assert conv_weight(trained_run("model=cnn_ae", *wide, "trainer.channels_last=false")).stride() == (9, 9, 3, 1)


def test_sgd_with_cosine_anneals_to_eta_min_over_the_run(trained_run):
    state = _last(trained_run("model=linear_ae", "optim=sgd", "optim.scheduler=cosine", "optim.lr=0.01",
                              "optim.scheduler.eta_min=0.001", "trainer.max_epochs=2"))
    group = state["optimizers"]["model"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.001) and group["momentum"] == 0.9  # cosine ends at eta_min
    assert state["schedulers"]["model"]["T_max"] == 2 * 7  # the whole run, in steps
    assert all("momentum_buffer" in s for s in state["optimizers"]["model"]["state"].values())


def test_adamw_with_step_decay_multiplies_the_lr_each_step_size(trained_run):
    state = _last(trained_run("model=linear_ae", "optim=adamw", "optim.scheduler=step", "optim.scheduler.step_size=1",
                              "optim.scheduler.gamma=0.5", "trainer.max_epochs=2"))
    group = state["optimizers"]["model"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-3 * 0.25) and group["weight_decay"] == pytest.approx(1e-2)


def test_grad_clip_bounds_every_update(trained_run):
    """Plain SGD (no momentum) at lr 1: each step moves the weights by lr * the clipped gradient,
    so after 7 steps no parameter can have moved more than 7 * grad_clip in norm."""
    run_dir = trained_run("model=linear_ae", "optim=sgd", "optim.lr=1.0", "optim.momentum=0", "trainer.grad_clip=1e-3")
    from aerun.build import build_model

    state = _last(run_dir)
    torch.manual_seed(0)
    start = build_model(state["config"]["model"], (1, 28, 28)).state_dict()
    moved = torch.sqrt(sum((state["model"][k] - start[k]).square().sum() for k in start))
    assert 0 < moved <= 7 * 1e-3 * 1.0001


def test_loss_bce_is_the_training_objective(trained_run):
    metrics = json.loads((trained_run("model=cnn_ae", "loss=bce") / "metrics.json").read_text())
    assert metrics["recon_loss"] == "bce"
    assert metrics["test"]["recon"] == pytest.approx(metrics["test"]["bce"] * 784, rel=0.05)


@pytest.mark.parametrize("model", ["vae", "conv_vae", "mlp_ae"])
def test_bf16_trains_and_evaluates_every_family(trained_run, model):
    """A VAE's evaluation decodes its mean code, which autocast makes bf16: it once crashed
    there (mat1 and mat2 must have the same dtype)."""
    metrics = json.loads((trained_run(f"model={model}", "trainer.precision=bf16") / "metrics.json").read_text())
    assert 0 < metrics["test"]["mse"] < 0.5
    if model != "mlp_ae":
        assert metrics["test"]["elbo"] < 0


def test_divergence_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
    cfg = compose("train", tiny_overrides(data_root, "model=cnn_ae", "optim.lr=1e6", "trainer.max_epochs=3",
                                          "trainer.checkpoint_every_n_steps=1", "trainer.log_every_n_steps=1"))
    with pytest.raises(DivergenceError) as info:
        train(cfg, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "non-finite" in message and "optim.lr" in message
    assert f"{tmp_path / 'last.pt'} keeps the last good weights" in message
    state = load_checkpoint(tmp_path / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"


def test_divergence_before_any_checkpoint_does_not_promise_one(data_root, tmp_path):
    cfg = compose("train", tiny_overrides(data_root, "model=cnn_ae", "optim.lr=1e6", "trainer.log_every_n_steps=1"))
    with pytest.raises(DivergenceError) as info:
        train(cfg, tmp_path)
    assert "no checkpoint had been written yet" in str(info.value) and "keeps" not in str(info.value)
    assert not (tmp_path / "last.pt").exists()


def test_resume_refuses_a_changed_model_and_names_the_keys():
    old = {"model": {"latent_dim": 2, "hidden": [8]}, "trainer": {"max_epochs": 1}, "resume": None}
    new = {"model": {"latent_dim": 3, "hidden": [8]}, "trainer": {"max_epochs": 5}, "resume": "x"}
    assert config_differences(old, new) == ["model.latent_dim (2 -> 3)"]
    # speed and reporting options may change: a run from before channels_last became the default resumes
    old["trainer"].update(channels_last=False, train_eval_size=None)
    new["trainer"].update(channels_last=True, train_eval_size=10000, precision="bf16")
    assert config_differences(old, new) == ["model.latent_dim (2 -> 3)", "trainer.precision (<unset> -> bf16)"]


def test_a_run_dir_in_use_is_refused(data_root, tmp_path):
    import os

    (tmp_path / ".lock").write_text(str(os.getppid()))  # a live process holds it
    cfg = compose("train", tiny_overrides(data_root, "model=linear_ae"))
    with pytest.raises(UserError, match="in use by another aerun process"):
        train(cfg, tmp_path)
    (tmp_path / ".lock").write_text("999999999")  # a dead one: stale lock is taken over
    train(cfg, tmp_path)
    assert not (tmp_path / ".lock").exists()


def test_linear_mlp_has_no_sigmoid():
    from aerun.models import MLPAutoencoder

    model = MLPAutoencoder((1, 4, 4), latent_dim=2, hidden=[3], activation="identity")
    assert not model.output_is_logits
    x = torch.rand(5, 1, 4, 4)
    # a linear map: f(2x) - f(0) == 2 (f(x) - f(0))
    zero = model.decode(model.encode(torch.zeros_like(x)))
    torch.testing.assert_close(model.decode(model.encode(2 * x)) - zero, 2 * (model.decode(model.encode(x)) - zero))


@pytest.mark.parametrize("native, precision, device, warned", [
    (False, "bf16", "cpu", True), (True, "bf16", "cpu", False), (False, "32", "cpu", False),
    (False, "bf16", "cuda", False)])
def test_bf16_on_a_cpu_without_native_bf16_is_called_slow(monkeypatch, caplog, native, precision, device, warned):
    from aerun.devices import warn_slow_precision

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native, raising=False)
    with caplog.at_level("WARNING", logger="aerun"):
        warn_slow_precision(torch.device(device), precision)
    assert ("emulated and slower than fp32" in caplog.text) == warned


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizer_is_fused_and_steps_as_the_plain_one_does(name):
    import copy

    from aerun.build import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    reference = copy.deepcopy(model)
    start = model[0].weight.detach().clone()
    plain_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    settings = dict(_target_=f"torch.optim.{plain_class.__name__}", lr=1e-2, weight_decay=1e-3, l1_weight=0.0,
                    scheduler={"_target_": None}, **extra)
    fused = build_optimizer(model.parameters(), settings)
    assert fused.defaults["fused"] is True  # CPU has fused kernels since torch 2.4
    plain = plain_class(reference.parameters(), lr=1e-2, weight_decay=1e-3, foreach=False, **extra)
    for _ in range(5):
        x = torch.randn(8, 20)
        for net, optimizer in ((model, fused), (reference, plain)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    assert not torch.equal(model[0].weight, start)  # the steps did move the weights
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
