"""`logger=wandb` (pip install 'aerun[wandb]'): one Weights & Biases run per training run,
under `<run>/wandb/`. Offline by default: nothing goes over the network and nothing asks for
a login; `wandb sync <run>/wandb/offline-run-*` uploads it later (mode=online logs live).

Each training run holds its own run object (`reinit="create_new"`), so the jobs of a sweep
run in one process each get their own W&B run. W&B's banner and console capture are off;
the one line that says how to sync an offline run is aerun's, at the end.

W&B keeps a step only if it is not below the last one. A resumed run goes on in the same W&B
run (its id, name and last logged step are kept in `<run>/wandb_run.json`) and skips the steps it
had logged before the crash, rather than have W&B drop them with a warning each.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from aerun import runs
from aerun.loggers.base import Logger, RunInfo

log = logging.getLogger("aerun.train")

STATE_FILE = "wandb_run.json"
# finish(exit_code): 0 is finished, anything else failed; a stopped run is also marked
# preempting (W&B's word for "can be resumed"), with the exit code of a SIGTERM (128 + 15).
EXIT_CODES = {"finished": 0, "failed": 1, "stopped": 143}


def read_state(run_dir: Path) -> dict:
    """The W&B run id, name and last logged step this run directory saved, or {}."""
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


class WandbLogger(Logger):
    name = "wandb"

    def __init__(self, info: RunInfo):
        super().__init__(info)
        import wandb

        self.wandb = wandb
        options = info.options
        self.mode = str(options.get("mode") or "offline")
        state = read_state(info.run_dir) if info.purge_step is not None else {}
        self.run = wandb.init(
            project=options.get("project") or "aerun", entity=options.get("entity"), mode=self.mode,
            dir=str(info.run_dir), name=state.get("name", info.name), config=dict(info.params), id=state.get("id"),
            resume="allow" if state.get("id") else None, allow_val_change=bool(state.get("id")),
            reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        # the first step this run may log: past what it logged before a resume
        resumed_step = int(self.run.step or 0) if self.run.resumed else 0
        self.floor = max(resumed_step, int(state.get("last_step", -1)) + 1)
        self.last_step = self.floor - 1
        self.sync_dir = Path(self.run.dir).parent if self.mode == "offline" else None  # .../offline-run-*/
        self.closed = False
        self._save_state()

    def _save_state(self) -> None:
        from aerun.io import write_json

        if self.mode == "disabled":  # W&B's no-op run: nothing to resume
            return
        state = {"id": self.run.id, "name": self.run.name, "last_step": self.last_step}
        write_json(self.info.run_dir / STATE_FILE, state)

    def _log(self, values: dict, step: int) -> None:
        if step < self.floor:  # logged before this run resumed
            return
        self.run.log(values, step=int(step))
        self.last_step = max(self.last_step, int(step))

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._log({tag: float(value) for tag, value in values.items()}, step)
        if "train/epoch" in values:  # an epoch ended: what a resume has to skip
            self._save_state()

    def image(self, tag: str, image, step: int) -> None:
        self._log({tag: self.wandb.Image(image.convert("RGB"))}, step)

    def summary(self, metrics: dict[str, float], step: int) -> None:
        self.run.summary.update({tag: float(value) for tag, value in metrics.items()})
        self._log({tag: float(value) for tag, value in metrics.items()}, max(step, self.floor))

    def artifacts(self, paths: list[Path]) -> None:
        """The figures as images at the last step; every file (best.pt if log_checkpoint) in
        the run's Files: linked into the W&B run's folder, which W&B uploads whole at the end
        or at `wandb sync` (run.save would say so in a warning per file)."""
        figures = {f"figures/{p.stem}": self.wandb.Image(str(p)) for p in paths if p.suffix == ".png"}
        if figures:
            self._log(figures, max(self.last_step, self.floor))
        for path in paths:
            if self.mode == "disabled" or (path.name == runs.BEST and not self.info.options.get("log_checkpoint")):
                continue
            target = Path(self.run.dir) / path.name
            target.unlink(missing_ok=True)
            try:  # a hard link: no second copy of a checkpoint (aerun replaces files, never edits them)
                os.link(path, target)
            except OSError:  # another file system
                shutil.copy2(path, target)

    def close(self, status: str) -> None:
        if self.closed:
            return
        self.closed = True
        if status == "stopped":
            self.run.mark_preempting()
        self.run.finish(exit_code=EXIT_CODES.get(status, 1))
        self._save_state()
        if self.sync_dir is not None:
            log.info("W&B: offline run in %s; upload it with: wandb sync %s", self.sync_dir, self.sync_dir)
