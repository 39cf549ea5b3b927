"""The one interface every tracker implements, and the fan-out the training reporter calls.

A tracker that fails (a server down, a disk full under its folder) must not cost a training
run: `Loggers` catches its exception, warns once naming it, and leaves it out from then on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("aerun.train")


@dataclass
class RunInfo:
    """What a tracker is told about the run when it opens."""

    run_dir: Path
    name: str  # aerun.loggers.params.run_name: "vae,latent_dim=2,lr=0.0003"
    params: dict  # aerun.loggers.params.experiment_params, in reading order
    purge_step: int | None = None  # a resumed run: drop what was logged at or after this step
    options: dict = field(default_factory=dict)  # this tracker's own config (logger.<name>)
    leading: frozenset = frozenset()  # params.leading_keys: the settings to show first (overridden, defining)


class Logger:
    """A tracker. Scalars and images as the run goes; at the end the final metrics (also the
    HParams view of TensorBoard), the files worth keeping, and how the run ended."""

    name = "logger"

    def __init__(self, info: RunInfo):
        self.info = info

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Scalars of one step, keyed by tag (train/loss, val/mse, ...)."""

    def image(self, tag: str, image, step: int) -> None:
        """A PIL image (a labelled grid, a scatter plot) at one step."""

    def summary(self, metrics: dict[str, float], step: int) -> None:
        """The final metrics (test/*, val/best_*) at the last step, beside the run's params."""

    def artifacts(self, paths: list[Path]) -> None:
        """Files the run wrote that the tracker should keep (figures, metrics.json, best.pt)."""

    def close(self, status: str) -> None:
        """status: "finished", "failed" or "stopped" (a signal; the run can be resumed)."""


class Loggers:
    """Every chosen tracker behind one call each; a tracker that raises is dropped with one warning."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = list(loggers)

    @property
    def names(self) -> list[str]:
        return [logger.name for logger in self.loggers]

    def get(self, name: str) -> Logger | None:
        return next((logger for logger in self.loggers if logger.name == name), None)

    def _each(self, method: str, *args) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop the training run
                self.loggers.remove(logger)
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("logger %s failed (%s: %s); it is off for the rest of this run, which goes on",
                            logger.name, type(exc).__name__, first[:300])
                if method != "close":
                    try:
                        logger.close("failed")
                    except Exception:  # noqa: BLE001 - already reported
                        pass

    def scalars(self, values: dict[str, float], step: int) -> None:
        if values:
            self._each("scalars", values, step)

    def image(self, tag: str, image, step: int) -> None:
        self._each("image", tag, image, step)

    def summary(self, metrics: dict[str, float], step: int) -> None:
        self._each("summary", metrics, step)

    def artifacts(self, paths: list[Path]) -> None:
        existing = [Path(p) for p in paths if Path(p).is_file()]
        if existing:
            self._each("artifacts", existing)

    def close(self, status: str) -> None:
        self._each("close", status)
        self.loggers = []
