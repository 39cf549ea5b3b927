"""`logger=tensorboard` (the default): event files under `<run>/tensorboard/<run name>/`, so
`tensorboard --logdir outputs` lists ".../tensorboard/vae,latent_dim=2,lr=0.0003", not
".../tensorboard" for every run.

The final metrics are scalars (test/*, val/best_*) at the last step and the HParams summary
points at those tags: the HParams tab and the Time Series charts read the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aerun import runs
from aerun.loggers.base import Logger, RunInfo

EVENTS_PREFIX = "events.out.tfevents"


def event_dir(run_dir: Path) -> Path | None:
    """The folder that holds a run's event files: `tensorboard/<name>/`, or `tensorboard/`
    itself for runs made before run names; None when the run has no TensorBoard events."""
    root = Path(run_dir) / runs.TENSORBOARD
    if not root.is_dir():
        return None
    if any(p.name.startswith(EVENTS_PREFIX) for p in root.iterdir()):
        return root
    named = sorted(p for p in root.iterdir() if p.is_dir() and any(q.name.startswith(EVENTS_PREFIX)
                                                                    for q in p.iterdir()))
    return named[0] if named else None


def projector_dir(run_dir: Path) -> Path:
    """Where `encode` adds its embedding: beside the run's events, or a folder of its own."""
    found = event_dir(run_dir)
    return found if found is not None else Path(run_dir) / runs.TENSORBOARD / Path(run_dir).name


def mark_leading(experiment, leading: frozenset) -> None:
    """Flag the leading settings as `differs` in the HParams experiment summary: TensorBoard's table
    sorts the columns that differ first (then by name) and shows the first few, so the overridden
    and experiment-defining keys lead instead of data.* in alphabetical order."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in leading
    value.metadata.plugin_data.content = data.SerializeToString()


class TensorBoardLogger(Logger):
    name = "tensorboard"

    def __init__(self, info: RunInfo):
        super().__init__(info)
        from torch.utils.tensorboard import SummaryWriter

        existing = event_dir(info.run_dir)  # a resumed run keeps writing where it wrote
        log_dir = existing if existing is not None else info.run_dir / runs.TENSORBOARD / info.name
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=info.purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image, step: int) -> None:
        array = np.asarray(image.convert("RGB"))  # [H, W, 3] uint8
        self.writer.add_image(tag, array, step, dataformats="HWC")

    def summary(self, metrics: dict[str, float], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.scalars(metrics, step)
        experiment, start, end = hparams(self.info.params, metrics)  # metric infos name the tags just written
        mark_leading(experiment, self.info.leading)
        for proto in (experiment, start, end):
            self.writer.file_writer.add_summary(proto)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()
