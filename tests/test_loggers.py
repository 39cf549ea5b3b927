"""What a finished run leaves in its trackers, read back the way TensorBoard and pandas read it:
no hparam/* charts, the HParams summary pointing at tags that exist, the experiment-defining
keys first and no paths, images each epoch, a run name that says what the run is, metrics.csv
equal to metrics.json; a tracker that fails costs the run nothing."""

from __future__ import annotations

import json
import logging

import pytest

from aerun import runs
from aerun.loggers import Logger, Loggers, RunInfo
from aerun.loggers.csv import read_rows
from aerun.loggers.params import experiment_params, run_name
from aerun.loggers.tensorboard import event_dir
from tests.conftest import compose, run_aerun, tiny_overrides


def _accumulator(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir(run_dir)), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _hparams(acc):
    from tensorboard.plugins.hparams import metadata

    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    return experiment, start


@pytest.fixture(scope="module")
def vae_run(data_root, tmp_path_factory):
    """A 2-d VAE through the real CLI (Hydra names its model choice and overrides), with csv too."""
    run_dir = tmp_path_factory.mktemp("vae") / "run"
    run_aerun("train", *tiny_overrides(data_root, "model=vae", "model.latent_dim=2", "model.hidden=[64]",
                                       "optim.lr=3e-3", "trainer.max_epochs=2", "logger=[tensorboard,csv]"),
              f"hydra.run.dir={run_dir}", check=True)
    return run_dir


def test_the_run_is_named_by_its_model_and_overrides_not_tensorboard(vae_run):
    name = event_dir(vae_run).name
    assert event_dir(vae_run).parent == vae_run / runs.TENSORBOARD
    assert name.startswith("vae,") and "latent_dim=2" in name and "lr=3e-3" in name
    assert "root" not in name and "device" not in name and "/" not in name and " " not in name


def test_no_hparam_charts_and_the_hparams_metrics_are_tags_that_exist(vae_run):
    acc = _accumulator(vae_run)
    scalars = set(acc.Tags()["scalars"])
    assert not [t for t in scalars if t.startswith("hparam/")]
    experiment, start = _hparams(acc)
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    assert metric_tags and set(metric_tags) <= scalars
    assert {"test/loss", "test/mse", "test/elbo", "val/best_loss"} <= set(metric_tags)
    metrics = json.loads((vae_run / "metrics.json").read_text())
    last = {t: acc.Scalars(t)[-1] for t in ("test/mse", "val/best_loss")}
    assert last["test/mse"].value == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    assert last["test/mse"].step == metrics["steps"]  # logged once, at the last step
    assert len(acc.Scalars("test/mse")) == 1


def test_hparams_lead_with_the_overrides_then_the_defining_keys_and_leave_paths_out(vae_run):
    experiment, start = _hparams(_accumulator(vae_run))
    names = [h.name for h in experiment.hparam_infos]
    overridden = ["data.val_size", "trainer.max_epochs", "trainer.batch_size", "model", "model.latent_dim",
                  "model.hidden", "optim.lr"]  # tiny_overrides and the fixture's own, in the order given
    assert names[:len(overridden)] == overridden
    for key in ("model", "optim", "trainer.batch_size", "model.beta", "data.noise.kind", "data.name", "seed"):
        assert key in names[:len(overridden) + 9], key
    assert not [n for n in names if n.endswith((".root", ".path", "_target_", ".device", ".progress", "download"))]
    assert start.hparams["model"].string_value == "vae" and start.hparams["model.latent_dim"].number_value == 2
    # TensorBoard's table sorts the columns flagged `differs` first: the overridden and defining keys
    leading = {h.name for h in experiment.hparam_infos if h.differs}
    assert set(overridden) | {"optim", "model.beta", "data.noise.kind", "data.noise.level", "data.name", "seed"} == leading
    assert start.hparams["data.val_size"].number_value == 64


def test_images_each_epoch_reconstruction_fixed_samples_and_the_2d_scatter(vae_run):
    acc = _accumulator(vae_run)
    for tag in ("images/reconstruction", "images/samples", "images/latent"):
        events = acc.Images(tag)
        assert len(events) == 2, tag  # one per epoch
        assert events[0].width > 100 and events[0].height > 50


def test_metrics_csv_reads_back_equal_to_metrics_json(vae_run):
    metrics = json.loads((vae_run / "metrics.json").read_text())
    rows = read_rows(vae_run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)
    last = rows[-1]
    assert int(last["step"]) == metrics["steps"]
    for name in ("mse", "loss", "elbo"):
        assert last[f"test/{name}"] == pytest.approx(metrics["test"][name], rel=1e-12)
    epochs = [r for r in rows if "train/epoch" in r]
    assert [int(r["train/epoch"]) for r in epochs] == [1, 2] and "val/mse" in epochs[0]
    header = (vae_run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and len(header) == len(set(header))


def test_a_resumed_run_drops_the_csv_rows_it_logs_again(trained_run, tmp_path):
    from aerun.loggers.csv import CsvLogger

    info = RunInfo(tmp_path, "x", {}, None, {})
    first = CsvLogger(info)
    for step in (2, 4, 6):
        first.scalars({"train/loss": float(step), "train/epoch": 1.0}, step)
    first.close("stopped")
    resumed = CsvLogger(RunInfo(tmp_path, "x", {}, 4, {}))
    resumed.scalars({"train/loss": 40.0}, 4)
    resumed.close("finished")
    assert [(r["step"], r["train/loss"]) for r in read_rows(tmp_path / "metrics.csv")] == [(2, 2.0), (4, 40.0)]


class _Broken(Logger):
    name = "broken"

    def __init__(self):
        super().__init__(RunInfo(None, "x", {}))
        self.calls = 0

    def scalars(self, values, step):
        self.calls += 1
        raise ConnectionError("tracking server at http://127.0.0.1:9 refused the connection")


class _Recorder(Logger):
    name = "recorder"

    def __init__(self):
        super().__init__(RunInfo(None, "x", {}))
        self.seen, self.status = [], None

    def scalars(self, values, step):
        self.seen.append(step)

    def close(self, status):
        self.status = status


def test_a_failing_tracker_warns_once_and_the_others_go_on(caplog):
    broken, recorder = _Broken(), _Recorder()
    loggers = Loggers([broken, recorder])
    with caplog.at_level(logging.WARNING, logger="aerun.train"):
        for step in range(3):
            loggers.scalars({"train/loss": 1.0}, step)
        loggers.close("finished")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "logger broken failed (ConnectionError" in warnings[0] and "goes on" in warnings[0]
    assert broken.calls == 1 and recorder.seen == [0, 1, 2] and recorder.status == "finished"


def test_a_tracker_that_fails_in_a_real_run_costs_nothing(data_root, tmp_path, monkeypatch, caplog):
    from aerun.commands.train import train
    from aerun.loggers import tensorboard

    def fail(self, tag, image, step):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tensorboard.TensorBoardLogger, "image", fail)
    with caplog.at_level(logging.WARNING, logger="aerun.train"):
        train(compose("train", tiny_overrides(data_root, "model=linear_ae", "logger=[tensorboard,csv]")), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["mse"] > 0
    assert (tmp_path / "metrics.csv").is_file()
    assert sum("logger tensorboard failed" in r.getMessage() for r in caplog.records) == 1


def test_logger_csv_alone_writes_no_tensorboard_folder(data_root, tmp_path):
    from aerun.commands.train import train

    train(compose("train", tiny_overrides(data_root, "model=linear_ae", "logger=csv", "logger.csv.filename=log.csv")),
          tmp_path)
    assert not (tmp_path / runs.TENSORBOARD).exists() and (tmp_path / "log.csv").is_file()


def test_run_names_and_params_from_overrides():
    overrides = ["model=vae", "model.latent_dim=2", "data.root=/data", "optim.lr=3e-4", "trainer.device=cpu",
                 "hydra.run.dir=out/x", "data.noise.kind=gaussian", "logger=[tensorboard,csv]"]
    assert run_name("vae", overrides) == "vae,latent_dim=2,lr=3e-4,noise.kind=gaussian"
    resumed = ["model=vae", "trainer.max_epochs=1", "data.val_size=64", "trainer.max_epochs=2"]  # saved, then new
    assert run_name("vae", resumed) == "vae,max_epochs=2,val_size=64"
    assert len(run_name("cnn_ae", [f"model.hidden{i}=[{'1' * 40}]" for i in range(5)])) <= 96
    plain = {"model": {"_target_": "aerun.models.VAE", "latent_dim": 2, "beta": 1.0, "hidden": [64]},
             "optim": {"_target_": "torch.optim.Adam", "lr": 3e-4, "scheduler": {"_target_": None}},
             "data": {"name": "mnist", "root": "/data", "max_train_samples": None, "noise": {"kind": "none", "level": 0}},
             "trainer": {"batch_size": 64, "device": "cpu", "progress": True}, "seed": 3, "loss": None}
    params = experiment_params(plain, "vae", overrides)
    assert list(params)[:4] == ["model", "model.latent_dim", "optim.lr", "data.noise.kind"]  # the overrides' order
    assert params["optim"] == "Adam" and params["model.hidden"] == "[64]" and params["seed"] == 3
    assert not {"data.root", "trainer.device", "trainer.progress", "data.max_train_samples", "loss"} & set(params)
