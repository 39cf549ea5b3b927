"""logger=mlflow and logger=wandb: what a run leaves in each store, read back with the
tracker's own client or record format; offline W&B touches no network; a tracker that
fails costs the run nothing but itself; a missing extra is refused before a run exists."""

from __future__ import annotations

import importlib.util
import json
import struct
import textwrap
from pathlib import Path

import pytest

from aerun.errors import UserError
from tests.conftest import compose, run_aerun, tiny_overrides

# A sitecustomize for the child process: every connection that is not loopback or a unix
# socket, and every name lookup that is not local, is written down and refused.
NO_NETWORK = textwrap.dedent('''
    import os, sys
    ATTEMPTS = os.environ["AERUN_TEST_NETWORK_LOG"]
    open(ATTEMPTS, "a").close()  # the hook is armed
    def _local(host):
        host = host.decode() if isinstance(host, bytes) else str(host)
        return host in ("", "None", "localhost", "::1") or host.startswith("127.")
    def _refuse(event, args):
        if event == "socket.connect" and isinstance(args[1], tuple) and not _local(args[1][0]):
            target = args[1]
        elif event == "socket.getaddrinfo" and not _local(args[0]):
            target = args[0]
        else:
            return
        with open(ATTEMPTS, "a") as f:
            f.write(f"{event} {target!r}\\n")
        raise ConnectionRefusedError(f"no network in this test: {target!r}")
    sys.addaudithook(_refuse)
''')


def _train(data_root: Path, run_dir: Path, monkeypatch, *extra: str):
    """Train a tiny run in-process; returns the RunInfo the trackers were opened with."""
    import aerun.loggers
    from aerun.commands.train import train

    seen, build = {}, aerun.loggers.build_loggers

    def spy(logger_cfg, info):
        seen["info"] = info
        return build(logger_cfg, info)

    monkeypatch.setattr(aerun.loggers, "build_loggers", spy)
    train(compose("train", tiny_overrides(data_root, *extra)), run_dir)
    return seen["info"]


def _numbers(section: dict) -> dict:
    return {k: v for k, v in section.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its tables takes seconds)."""
    pytest.importorskip("mlflow")
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


def _mlflow_run(store: str, run_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    return client, client.get_run((run_dir / "mlflow_run_id").read_text().strip())


def test_mlflow_holds_the_params_metrics_history_and_files(data_root, tmp_path, monkeypatch, mlflow_store):
    run_dir = tmp_path / "run"
    info = _train(data_root, run_dir, monkeypatch, "logger=[csv,mlflow]",
                  f"logger.mlflow.tracking_uri={mlflow_store}")
    client, run = _mlflow_run(mlflow_store, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == info.name
    assert run.data.params == {k: str(v) for k, v in info.params.items()}
    test = _numbers(metrics["test"])
    assert test and {f"test/{k}": v for k, v in test.items()} == {f"test/{k}": run.data.metrics[f"test/{k}"]
                                                                  for k in test}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/mse")] == [metrics["steps"]]
    running = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_running")]
    assert len(running) >= 2 and running == sorted(running)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mse")] == [metrics["steps"]]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reconstructions.png", "metrics.json", "config.yaml", "best.pt"} <= names
    assert any(a.path.startswith("images/") for a in client.list_artifacts(run.info.run_id, "images"))
    # a SQLite store keeps the artifacts beside the database, not in the process's folder
    assert run.info.artifact_uri.startswith((Path(mlflow_store[len("sqlite:///"):]).parent / "mlruns").as_uri())


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(data_root, tmp_path, monkeypatch, mlflow_store):
    run_dir, extra = tmp_path / "run", ["logger=[mlflow]", f"logger.mlflow.tracking_uri={mlflow_store}"]
    _train(data_root, run_dir, monkeypatch, *extra)
    first = (run_dir / "mlflow_run_id").read_text()
    _train(data_root, run_dir, monkeypatch, *extra, f"resume={run_dir}", "trainer.max_epochs=2")
    client, run = _mlflow_run(mlflow_store, run_dir)
    assert (run_dir / "mlflow_run_id").read_text() == first and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/epoch")] == [7, 14]
    assert run.data.params["trainer.max_epochs"] == "1" and run.data.tags["resumed/trainer.max_epochs"] == "2"


def test_a_tracker_that_fails_mid_run_warns_once_and_the_run_finishes(data_root, tmp_path, monkeypatch, caplog,
                                                                       mlflow_store):
    from mlflow.tracking import MlflowClient

    log_batch = MlflowClient.log_batch

    def server_gone(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if metrics:  # the params at the start go through; the first scalars do not
            raise ConnectionError("tracking server went away")
        return log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", server_gone)
    run_dir = tmp_path / "run"
    with caplog.at_level("WARNING", logger="aerun.train"):
        _train(data_root, run_dir, monkeypatch, "logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={mlflow_store}")
    warnings = [r.getMessage() for r in caplog.records if "logger mlflow" in r.getMessage()]
    assert len(warnings) == 1 and "ConnectionError: tracking server went away" in warnings[0], warnings
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and "mse" in metrics["test"] and "psnr" in metrics["test"]
    from aerun.loggers.csv import read_rows

    assert read_rows(run_dir / "metrics.csv")[-1]["test/mse"] == pytest.approx(metrics["test"]["mse"])
    assert _mlflow_run(mlflow_store, run_dir)[1].info.status == "FAILED"  # told so when it was dropped


def test_an_unreachable_tracking_server_leaves_the_other_trackers(tmp_path, monkeypatch, caplog):
    pytest.importorskip("mlflow")
    from aerun.loggers import RunInfo, build_loggers

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not after minutes of retries
    info = RunInfo(tmp_path, "run", {"model": "vae"})
    with caplog.at_level("WARNING", logger="aerun.train"):
        opened = build_loggers({"csv": {}, "mlflow": {"tracking_uri": "http://127.0.0.1:9"}}, info)
    assert opened.names == ["csv"]
    assert [r.getMessage() for r in caplog.records if "logger mlflow did not start" in r.getMessage()]
    opened.close("finished")


def test_relative_stores_are_read_from_the_launch_folder(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from aerun.loggers.mlflow import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("sqlite:///runs/mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_tracking_uri("file:./mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/env.db"


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: W&B's LevelDB-style log (a 7-byte header, 32 KiB
    blocks, each record a 7-byte header: crc32, length, type) of `Record` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", path
    pos, body, records = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        body, pos = body + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL, or LAST of a record split across blocks
            record = wandb_internal_pb2.Record()
            record.ParseFromString(body)
            records.append(record)
            body = b""
    return records


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_wandb_offline_keeps_history_and_summary_and_touches_no_network(data_root, tmp_path):
    pytest.importorskip("wandb")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_NETWORK)
    attempts, run_dir = tmp_path / "network.log", tmp_path / "run"
    env = {"PYTHONPATH": str(tmp_path / "site"), "AERUN_TEST_NETWORK_LOG": str(attempts), "WANDB_MODE": "offline",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
           **{k: str(tmp_path / k.lower()) for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")}}
    proc = run_aerun("train", *tiny_overrides(data_root, "logger=[csv,wandb]"), f"hydra.run.dir={run_dir}", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert attempts.is_file() and attempts.read_text() == ""  # armed, and nothing tried
    (offline,) = run_dir.glob("wandb/offline-run-*")
    for log in offline.glob("logs/*.log"):  # the wandb-core process, which no Python hook sees
        assert "127.0.0.1:9" not in log.read_text(), log
    output = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in output if line.startswith("wandb:")]  # no W&B banner or warnings
    assert [line for line in output if "wandb sync" in line] == [
        f"W&B: offline run in {offline}; upload it with: wandb sync {offline}"]
    records = wandb_records(next(offline.glob("run-*.wandb")))
    history = [(r.history.step.num, _items(r.history.item)) for r in records if r.HasField("history")]
    summary = {}
    for r in records:
        if r.HasField("summary"):
            summary.update(_items(r.summary.update))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert summary["test/mse"] == pytest.approx(metrics["test"]["mse"])
    assert history[-1][0] == metrics["steps"] and history[-1][1]["test/mse"] == pytest.approx(metrics["test"]["mse"])
    assert [step for step, row in history if "train/loss_running" in row][:2] == [2, 4]
    assert any(key.startswith("images/reconstruction") for _, row in history for key in row)  # a wandb.Image
    (run_record,) = [r.run for r in records if r.HasField("run")]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert run_record.display_name.startswith(config["model"]) and "optim.lr" in config  # the params
    assert {p.name for p in (offline / "files").iterdir()} >= {"reconstructions.png", "metrics.json", "config.yaml"}
    assert json.loads((run_dir / "wandb_run.json").read_text())["id"] == run_record.run_id


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """W&B's own folders in tmp_path, offline: a test never writes to ~/.config or ~/.cache."""
    pytest.importorskip("wandb")
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_two_runs_in_one_process_each_log_to_their_own(tmp_path, wandb_home, mlflow_store):
    """The jobs of a sweep in one process (the basic launcher) interleaved: no tracker keeps
    a global current run."""
    from aerun.loggers import RunInfo, build_loggers

    cfg = {"mlflow": {"tracking_uri": mlflow_store}, "wandb": {"mode": "offline"}}
    jobs = [build_loggers(cfg, RunInfo(tmp_path / f"job{i}", f"job{i}", {"job": i})) for i in range(2)]
    assert [job.names for job in jobs] == [["mlflow", "wandb"]] * 2
    for step in range(1, 4):
        for i, job in enumerate(jobs):
            job.scalars({"train/loss": 10 * i + step}, step)
    for job in jobs:
        job.close("finished")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    for i in range(2):
        run_id = (tmp_path / f"job{i}" / "mlflow_run_id").read_text().strip()
        own = [10 * i + 1, 10 * i + 2, 10 * i + 3]
        assert [m.value for m in client.get_metric_history(run_id, "train/loss")] == own
        (offline,) = (tmp_path / f"job{i}").glob("wandb/offline-run-*")
        rows = [_items(r.history.item) for r in wandb_records(next(offline.glob("*.wandb"))) if r.HasField("history")]
        assert [row["train/loss"] for row in rows] == own


def test_a_resumed_wandb_run_keeps_its_id_and_skips_the_steps_it_logged(tmp_path, wandb_home):
    from aerun.loggers import RunInfo, build_loggers

    first = build_loggers({"wandb": {}}, RunInfo(tmp_path, "run", {"lr": 0.1}))
    for step in range(1, 7):  # a crash after step 6; the checkpoint was at step 4
        first.scalars({"train/loss": step, **({"train/epoch": 1} if step == 6 else {})}, step)
    first.close("stopped")
    again = build_loggers({"wandb": {}}, RunInfo(tmp_path, "run", {"lr": 0.1}, purge_step=4))
    for step in range(4, 9):
        again.scalars({"train/loss": 100 + step}, step)
    again.summary({"test/mse": 0.5}, 8)
    again.close("finished")
    first_dir, second_dir = sorted(tmp_path.glob("wandb/offline-run-*"))
    records = [wandb_records(next(folder.glob("*.wandb"))) for folder in (first_dir, second_dir)]
    assert len({r.run.run_id for rs in records for r in rs if r.HasField("run")}) == 1  # the same W&B run
    rows = [(r.history.step.num, _items(r.history.item)) for r in records[1] if r.HasField("history")]
    assert [(step, row["train/loss"]) for step, row in rows] == [(7, 107), (8, 108)]
    assert rows[-1][1]["test/mse"] == 0.5


def test_a_missing_extra_is_refused_in_one_line(monkeypatch):
    from aerun.loggers import check_loggers

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    with pytest.raises(UserError) as refused:
        check_loggers(compose("train", ["logger=[tensorboard,mlflow]"]).logger)
    assert "pip install 'aerun[mlflow]'" in str(refused.value) and "\n" not in str(refused.value)
    assert check_loggers(compose("train", ["logger=[tensorboard,csv]"]).logger) == ["tensorboard", "csv"]


def test_a_refused_command_writes_no_run_directory(data_root, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None  # not installed\n")
    proc = run_aerun("train", *tiny_overrides(data_root, "logger=[csv,wandb]"), f"hydra.run.dir={tmp_path / 'out'}",
                     env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stdout + proc.stderr
    assert "pip install 'aerun[wandb]'" in proc.stderr
    assert not (tmp_path / "out").exists()
