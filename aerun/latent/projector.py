"""TensorBoard's embedding projector: codes, class names and thumbnails of a split, added to
the trained run's own `tensorboard/` (the one write into a run another command makes)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from aerun import runs
from aerun.io import write_text

log = logging.getLogger("aerun.latent")


PROJECTOR_CONFIG = "projector_config.pbtxt"


def add_projector_entry(run_dir: Path, tag: str, step: int, codes: np.ndarray, labels: list[str],
                        thumbnails) -> Path:
    """An embedding-projector entry (codes, labels, image sprite) beside the run's TensorBoard
    events (`tensorboard/<run name>/`), so its run in TensorBoard shows it.

    The writer keeps only its own entries in projector_config.pbtxt, so the entries other
    calls added (other splits, other checkpoints) are merged back in; a second call with
    the same tag and step replaces its entry.
    """
    import torch
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    from torch.utils.tensorboard import SummaryWriter

    from aerun.loggers.tensorboard import projector_dir

    log_dir = projector_dir(Path(run_dir))  # beside the run's training curves
    config_path = log_dir / PROJECTOR_CONFIG
    previous = ProjectorConfig()
    if config_path.is_file():
        try:
            text_format.Parse(config_path.read_text(), previous)
        except text_format.ParseError:
            log.warning("%s is not a projector config; rewriting it", config_path)
    entry = log_dir / f"{step:05d}" / tag
    if entry.is_dir():
        shutil.rmtree(entry)  # our own earlier entry for the same codes: replace it
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        writer.add_embedding(torch.as_tensor(codes), metadata=labels, label_img=thumbnails, global_step=step,
                             tag=tag)
    finally:
        writer.close()
    merged = ProjectorConfig()
    if config_path.is_file():
        text_format.Parse(config_path.read_text(), merged)
    ours = {e.tensor_path for e in merged.embeddings}
    for old in previous.embeddings:
        if old.tensor_path not in ours and (log_dir / old.tensor_path).exists():
            merged.embeddings.append(old)
    write_text(config_path, text_format.MessageToString(merged))
    return entry


