"""`TrainState`: everything a run needs to continue bit for bit, and its checkpoint form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Scheduled:
    """A learning-rate scheduler and when it steps: after every optimizer step, or every epoch."""

    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_step: bool


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Scheduled]
    scaler: torch.amp.GradScaler
    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches of the current epoch finished (a mid-epoch checkpoint)
    global_step: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    best_val_metrics: dict | None = None  # the best epoch's validation metrics: the final report reuses them
    last_finite_loss: float | None = None
    history: list[dict] = field(default_factory=list)
    accumulator: dict | None = None  # a mid-epoch checkpoint's partial epoch sums
    noise_rng: torch.Tensor | None = None  # ... and its denoising-noise stream

    @property
    def lr(self) -> float:
        """The learning rate of the first optimizer (what the logs show)."""
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: s.scheduler.state_dict() for name, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(), "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step, "best_val": self.best_val, "best_epoch": self.best_epoch,
            "best_val_metrics": self.best_val_metrics, "last_finite_loss": self.last_finite_loss,
            "history": self.history, "accumulator": self.accumulator, "noise_rng": self.noise_rng,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint (aerun-checkpoint-v1 held one `optimizer` and `scheduler`)."""
        self.model.load_state_dict(state["model"])
        optimizers = state.get("optimizers")
        schedulers = state.get("schedulers")
        if optimizers is None:  # v1: one optimizer
            (only,) = self.optimizers
            optimizers = {only: state["optimizer"]}
            schedulers = {only: state["scheduler"]} if state.get("scheduler") else {}
        for name, opt in self.optimizers.items():
            opt.load_state_dict(optimizers[name])
        for name, s in self.schedulers.items():
            if (schedulers or {}).get(name):
                s.scheduler.load_state_dict(schedulers[name])
        self.scaler.load_state_dict(state["scaler"])
        for key in ("epoch", "batch_in_epoch", "global_step", "best_val", "best_epoch"):
            setattr(self, key, state[key])
        self.best_val_metrics = state.get("best_val_metrics")
        self.last_finite_loss = state.get("last_finite_loss")
        self.history = list(state.get("history", []))
        self.accumulator, self.noise_rng = state.get("accumulator"), state.get("noise_rng")
