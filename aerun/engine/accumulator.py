"""`EpochAccumulator`: the loss terms of an epoch summed on the device, read in one transfer."""

from __future__ import annotations

import math

import torch

class EpochAccumulator:
    """Device-side sums of the loss terms over an epoch, and a record of non-finite values.

    All terms live in one flat float32 buffer, so a step costs a handful of small device ops
    whatever the number of terms (a `cat`, an `add_`, and three ops that count the steps whose
    running sums were still finite), and a read is one transfer. A NaN or inf stays non-finite
    in a running sum (NaN + x = NaN, inf + x = inf or NaN), so the terms that went bad are found
    from the sums at read time, and the first bad step from the count of finite steps before it.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.images = 0  # host-side count: known without asking the device
        self.steps = 0
        self._names: list[str] = []
        self._shapes: dict[str, torch.Size] = {}
        self._slices: dict[str, slice] = {}
        self._flat = torch.zeros(0, dtype=torch.float32, device=self.device)
        self._finite_steps = torch.zeros((), dtype=torch.long, device=self.device)
        self._first_step: int | None = None  # global step of the first add() since creation/load
        self._read_cache: tuple[int, list[float]] | None = None  # (steps, [finite count, sums...])

    # -- layout --------------------------------------------------------------------------
    def _grow(self, terms: dict[str, torch.Tensor]) -> None:
        """Give every new term a zero slot at the end of the flat buffer."""
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

    @property
    def sums(self) -> dict[str, torch.Tensor]:
        """name -> device tensor of the term's sum over images (a view of the flat buffer)."""
        return {name: self._flat[self._slices[name]].view(self._shapes[name]) for name in self._names}

    # -- per step --------------------------------------------------------------------------
    def add(self, terms: dict[str, torch.Tensor], batch: int, global_step: int) -> None:
        names = list(terms)
        if names != self._names:
            self._grow(terms)
        if self._first_step is None:
            self._first_step = global_step
        if names == self._names:  # the usual case: every term, in layout order
            values = torch.cat([value.detach().reshape(-1) for value in terms.values()])
            self._flat.add_(values, alpha=batch)
        else:  # a step that reports a subset of the terms, or in another order
            for name, value in terms.items():
                self._flat[self._slices[name]].add_(value.detach().reshape(-1), alpha=batch)
        self._finite_steps.add_(torch.isfinite(self._flat).all())
        self.images += batch
        self.steps += 1
        self._read_cache = None

    # -- reads -----------------------------------------------------------------------------
    def _read(self) -> list[float]:
        """[finite steps, sums...] on the host: one device read, reused until the next add()."""
        if self._read_cache is None or self._read_cache[0] != self.steps:
            flat = torch.cat([self._finite_steps.reshape(1).to(self._flat.dtype), self._flat])
            self._read_cache = (self.steps, flat.tolist())
        return self._read_cache[1]

    def means(self) -> dict[str, float | list[float]]:
        """Per-image means of every term: one device read for all of them (none if `nonfinite()`
        has just read them)."""
        if not self._names or self.images == 0:
            return {}
        flat = self._read()[1:]
        out = {}
        for name in self._names:
            part = [v / self.images for v in flat[self._slices[name]]]
            out[name] = part[0] if len(self._shapes[name]) == 0 else part
        return out

    def nonfinite(self) -> tuple[int, list[str]] | None:
        """(first step, terms) if any term went NaN/inf, else None; one device read."""
        if self._first_step is None:
            return None
        values = self._read()
        finite_steps, flat = int(values[0]), values[1:]
        bad = [name for name in self._names if not all(math.isfinite(v) for v in flat[self._slices[name]])]
        if not bad:
            return None
        return self._first_step + finite_steps, bad

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"sums": {name: value.clone() for name, value in self.sums.items()},
                "images": self.images, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self._names, self._shapes, self._slices = [], {}, {}
        self._flat = torch.zeros(0, dtype=torch.float32, device=self.device)
        self._grow(state["sums"])
        for name, value in state["sums"].items():
            self._flat[self._slices[name]] = value.detach().reshape(-1).to(self.device, torch.float32)
        self.images, self.steps = state["images"], state["steps"]
        self._finite_steps.zero_()
        self._first_step = None
        self._read_cache = None


