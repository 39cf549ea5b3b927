"""`logger=mlflow` (pip install 'aerun[mlflow]'): one MLflow run per training run, holding
the run's params, every scalar with its step, the epoch images, the final metrics at the
last step, and the figures, metrics.json, config.yaml and best.pt as artifacts.

Only `MlflowClient` calls, never `mlflow.start_run`: the fluent API keeps one active run
per process, so the jobs of a sweep run in one process would log into each other's runs.

Where the store is: `tracking_uri`, else $MLFLOW_TRACKING_URI, else MLflow's own default
(MLflow 3: `sqlite:///mlflow.db`, or `./mlruns` where that folder already holds runs;
MLflow 2: `./mlruns`). A relative path is read from the folder aerun was started in, so the
jobs of a sweep share one store. A new experiment in a local SQLite store keeps its
artifacts beside the database (`<db folder>/mlruns/<experiment>/`), not wherever the
process happens to run.

A resumed run goes on in the same MLflow run: its id is kept in `<run>/mlflow_run_id`.
MLflow cannot delete metric points, so the steps between the checkpoint and the crash show
twice; params cannot change, so a value changed at resume goes to the tag `resumed/<key>`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from aerun import runs
from aerun.loggers.base import Logger, RunInfo

log = logging.getLogger("aerun.train")

RUN_ID_FILE = "mlflow_run_id"
STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}
SQLITE = "sqlite:///"
MAX_KEY, MAX_VALUE, PARAMS_PER_BATCH, METRICS_PER_BATCH = 250, 6000, 100, 1000  # MLflow's limits


def launch_dir() -> Path:
    """The folder aerun was started in (Hydra's, should a job have changed directory)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except (ImportError, ValueError):
        pass
    return Path.cwd()


def _mlflow_default() -> str:
    try:  # what MLflow itself would pick (private, so it has a fallback)
        from mlflow.tracking._tracking_service.utils import _get_default_tracking_uri

        return _get_default_tracking_uri()
    except ImportError:
        return "./mlruns"


def resolve_tracking_uri(uri: str | None, base_dir: Path) -> str:
    """The store as an absolute URI: a relative file path or SQLite file is read from
    `base_dir`; servers (http, postgresql, databricks) are passed on as they are."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or _mlflow_default()
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a path (a one-letter scheme is a Windows drive)
        path = Path(url2pathname(urlparse(uri).path) if scheme == "file" else uri).expanduser()
        return (base_dir / path).resolve().as_uri()
    if scheme == "sqlite" and uri.startswith(SQLITE) and uri[len(SQLITE):] not in ("", ":memory:"):
        path = Path(uri[len(SQLITE):]).expanduser()  # sqlite:///rel.db is relative, sqlite:////abs.db is not
        return SQLITE + str((base_dir / path).resolve())
    return uri


def sqlite_artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a local SQLite database: MLflow's default would be ./mlruns of the process."""
    if not uri.startswith(SQLITE):
        return None
    folder = Path(uri[len(SQLITE):]).parent / "mlruns" / re.sub(r"[^\w.\-]", "_", experiment)
    return folder.as_uri()


def open_client(uri: str):
    """An MlflowClient on `uri`; MLflow 3's refusal of a file store (./mlruns) in one short line."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri)
    except MlflowException as exc:
        if "MLFLOW_ALLOW_FILE_STORE" not in str(exc):
            raise
        raise RuntimeError(f"MLflow refuses the file store {uri} by default: use a database (logger.mlflow."
                           f"tracking_uri=sqlite:///mlflow.db) or set MLFLOW_ALLOW_FILE_STORE=true") from exc


def mlflow_key(tag: str) -> str:
    """A param, metric or tag key MLflow accepts (letters, digits, _ - . space /; 250 characters)."""
    return re.sub(r"[^\w\-. /]", "_", tag)[:MAX_KEY]


class MlflowLogger(Logger):
    name = "mlflow"

    def __init__(self, info: RunInfo):
        super().__init__(info)
        self.tracking_uri = resolve_tracking_uri(info.options.get("tracking_uri"), launch_dir())
        self.client = open_client(self.tracking_uri)
        # MLflow >= 2.12 logs images per step under a key (its UI shows them with a step slider)
        self.image_per_step = "key" in inspect.signature(self.client.log_image).parameters
        self.closed = False
        experiment_id = self._experiment_id(info.options.get("experiment") or "aerun")
        resumed = self._resumed_run()
        if resumed is not None:
            self.run_id = resumed.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self._new_run(experiment_id)
        self._log_params(resumed.data.params if resumed is not None else {})
        log.info("MLflow: run %s in experiment %s; see it with: mlflow ui --backend-store-uri %s", info.name,
                 info.options.get("experiment") or "aerun", self.tracking_uri)

    # -- opening ------------------------------------------------------------------------
    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=sqlite_artifact_location(self.tracking_uri, name))
            except MlflowException:  # another job of a sweep created it first
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise RuntimeError(f"the MLflow experiment {name!r} is deleted; restore it "
                               f"(mlflow experiments restore) or choose logger.mlflow.experiment=...")
        return experiment.experiment_id

    def _resumed_run(self):
        """The MLflow run this run directory logged to before, when it resumes and it still exists."""
        path = self.info.run_dir / RUN_ID_FILE
        if self.info.purge_step is None or not path.is_file():
            return None
        from mlflow.exceptions import MlflowException

        run_id = path.read_text().strip()
        try:
            run = self.client.get_run(run_id)
        except MlflowException:  # another store, or the run was removed: start a new one
            log.info("MLflow: run %s is not in %s; logging to a new run", run_id, self.tracking_uri)
            return None
        return None if run.info.lifecycle_stage == "deleted" else run

    def _new_run(self, experiment_id: str) -> str:
        from aerun.io import write_text

        tags = {"aerun.run_dir": str(self.info.run_dir)}
        try:  # user, source and git commit, as mlflow.start_run would set them
            from mlflow.tracking.context.registry import resolve_tags

            tags = resolve_tags(tags)
        except ImportError:
            pass
        run_id = self.client.create_run(experiment_id, tags=tags, run_name=self.info.name).info.run_id
        write_text(self.info.run_dir / RUN_ID_FILE, run_id + "\n")  # for a resume
        return run_id

    def _log_params(self, logged: dict) -> None:
        """info.params in batches MLflow accepts; on a resume only the new keys (params are
        immutable), a changed value as a tag."""
        from mlflow.entities import Param, RunTag

        params, tags = [], []
        for key, value in self.info.params.items():
            key, value = mlflow_key(key), str(value)[:MAX_VALUE]
            if key not in logged:
                params.append(Param(key, value))
            elif logged[key] != value:
                tags.append(RunTag(f"resumed/{key}"[:MAX_KEY], value))
        for start in range(0, max(len(params), len(tags)), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + PARAMS_PER_BATCH],
                                  tags=tags[start:start + PARAMS_PER_BATCH])

    # -- as the run goes ------------------------------------------------------------------
    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(tag), float(value), now, int(step)) for tag, value in values.items()]
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + METRICS_PER_BATCH])

    def image(self, tag: str, image, step: int) -> None:
        if self.image_per_step:
            self.client.log_image(self.run_id, image.convert("RGB"), key=mlflow_key(tag), step=int(step))
        else:  # an older MLflow: one PNG per step under images/<tag>/
            folder = tag if tag.startswith("images/") else f"images/{tag}"
            self.client.log_image(self.run_id, image.convert("RGB"), artifact_file=f"{folder}/step_{step:06d}.png")

    def summary(self, metrics: dict[str, float], step: int) -> None:
        self.scalars(metrics, step)

    def artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.name == runs.BEST and not self.info.options.get("log_checkpoint", True):
                continue
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        if not self.closed:
            self.closed = True
            self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))
