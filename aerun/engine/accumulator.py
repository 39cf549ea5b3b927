"""`EpochAccumulator`: the loss terms of an epoch summed on the device, read in one transfer."""

from __future__ import annotations

import math

import torch

# A loss beyond this per image is divergence, though finite: aerun's losses are sums over an
# image's pixels (at most ~100 nats a pixel for BCE, 1 for MSE) plus KL or penalty terms, so a
# working run stays many orders of magnitude below it (a 3 x 256 x 256 image: ~2e7 at worst).
EXPLODED = 1e10


class EpochAccumulator:
    """Device-side sums of the loss terms over an epoch, and each step's values.

    All terms live in one flat float32 buffer, so a step costs three small device ops whatever
    the number of terms: gather the step's values, add them into the sums, copy them into the
    step's row of a history buffer. A read is one transfer. A NaN or inf stays non-finite in a
    running sum (NaN + x = NaN, inf + x = inf or NaN), so the terms that went bad are found from
    the sums; only then is the history read, to name the first step whose values went bad.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.images = 0  # host-side count: known without asking the device
        self.steps = 0
        self._names: list[str] = []
        self._shapes: dict[str, torch.Size] = {}
        self._slices: dict[str, slice] = {}
        self._scalars_only = True
        self._flat = torch.zeros(0, dtype=torch.float32, device=self.device)
        self._history = torch.zeros(0, 0, dtype=torch.float32, device=self.device)  # [rows, terms' size]
        self._rows = 0  # rows of the history written since creation or load
        self._first_step: int | None = None  # global step of the first add() since creation/load
        self._read_cache: tuple[int, list[float]] | None = None  # (steps, sums)

    # -- layout --------------------------------------------------------------------------
    def _grow(self, terms: dict[str, torch.Tensor]) -> None:
        """Give every new term a zero slot at the end of the flat buffer (and history rows)."""
        new = [(name, value.shape) for name, value in terms.items() if name not in self._slices]
        if not new:
            return
        parts, offset = [self._flat], self._flat.numel()
        for name, shape in new:
            size = math.prod(shape)
            self._names.append(name)
            self._shapes[name] = shape
            self._slices[name] = slice(offset, offset + size)
            parts.append(torch.zeros(size, dtype=torch.float32, device=self.device))
            offset += size
        self._flat = torch.cat(parts)
        self._scalars_only = all(len(shape) == 0 for shape in self._shapes.values())
        history = torch.zeros(self._history.shape[0], offset, dtype=torch.float32, device=self.device)
        history[:, :self._history.shape[1]] = self._history
        self._history = history

    def _history_row(self) -> torch.Tensor:
        if self._rows >= self._history.shape[0]:  # double the rows: amortised, no per-step allocation
            grown = torch.zeros(max(256, 2 * self._history.shape[0]), self._flat.numel(), device=self.device)
            grown[:self._rows] = self._history[:self._rows]
            self._history = grown
        self._rows += 1
        return self._history[self._rows - 1]

    @property
    def sums(self) -> dict[str, torch.Tensor]:
        """name -> device tensor of the term's sum over images (a view of the flat buffer)."""
        return {name: self._flat[self._slices[name]].view(self._shapes[name]) for name in self._names}

    # -- per step --------------------------------------------------------------------------
    @torch.no_grad()
    def add(self, terms: dict[str, torch.Tensor], batch: int, global_step: int) -> None:
        names = list(terms)
        if names != self._names:
            self._grow(terms)
        if self._first_step is None:
            self._first_step = global_step
        row = self._history_row()
        if names == self._names:  # the usual case: every term, in layout order
            if self._scalars_only:
                values = torch.stack([value.float() for value in terms.values()])
            else:
                values = torch.cat([value.float().reshape(-1) for value in terms.values()])
            self._flat.add_(values, alpha=batch)
            row.copy_(values)
        else:  # a step that reports a subset of the terms, or in another order
            for name, value in terms.items():
                part = value.float().reshape(-1)
                self._flat[self._slices[name]].add_(part, alpha=batch)
                row[self._slices[name]] = part
        self.images += batch
        self.steps += 1
        self._read_cache = None

    # -- reads -----------------------------------------------------------------------------
    def _read(self) -> list[float]:
        """The sums on the host: one device read, reused until the next add()."""
        if self._read_cache is None or self._read_cache[0] != self.steps:
            self._read_cache = (self.steps, self._flat.tolist())
        return self._read_cache[1]

    def means(self) -> dict[str, float | list[float]]:
        """Per-image means of every term: one device read for all of them (none if `nonfinite()`
        has just read them)."""
        if not self._names or self.images == 0:
            return {}
        flat = self._read()
        out = {}
        for name in self._names:
            part = [v / self.images for v in flat[self._slices[name]]]
            out[name] = part[0] if len(self._shapes[name]) == 0 else part
        return out

    def nonfinite(self) -> tuple[int, list[str]] | None:
        """(first step, terms) if any term went NaN/inf, or the loss exploded (`EXPLODED`), else
        None; one device read (two when something went bad: the history names the step)."""
        if self._first_step is None:
            return None
        flat = self._read()
        bad = [name for name in self._names if not all(math.isfinite(v) for v in flat[self._slices[name]])]
        loss = self._slices.get("loss")
        exploded = loss is not None and "loss" not in bad and abs(flat[loss][0]) > EXPLODED * max(1, self.images)
        if exploded:
            bad.append(f"loss (beyond {EXPLODED:.0e} an image)")
        if not bad:
            return None
        rows = self._history[:self._rows]
        good_rows = torch.isfinite(rows).all(1)
        if exploded:
            good_rows &= rows[:, loss.start].abs() <= EXPLODED
        first_bad = int((~good_rows).nonzero()[0, 0]) if not bool(good_rows.all()) else self._rows - 1
        return self._first_step + first_bad, bad

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"sums": {name: value.clone() for name, value in self.sums.items()},
                "images": self.images, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self._names, self._shapes, self._slices = [], {}, {}
        self._flat = torch.zeros(0, dtype=torch.float32, device=self.device)
        self._history = torch.zeros(0, 0, dtype=torch.float32, device=self.device)
        self._grow(state["sums"])
        for name, value in state["sums"].items():
            self._flat[self._slices[name]] = value.detach().reshape(-1).to(self.device, torch.float32)
        self.images, self.steps = state["images"], state["steps"]
        self._rows = 0
        self._first_step = None
        self._read_cache = None
