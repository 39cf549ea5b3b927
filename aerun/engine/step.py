"""What one training step needs from the loop: precision, the update, and batch tensors.

`StepContext` is what a model's `training_step(batch, step)` receives. It runs the model
(compiled or DDP-wrapped) under autocast, and `optimize(name, loss)` does the update of
optimizer `name` as every family needs it: zero the gradients, the L1 weight penalty,
backward through the grad scaler, clipping, the optimizer step.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from aerun import losses


def autocast(device: torch.device, precision: str):
    """Mixed precision as a flag on one code path: a no-op context for fp32."""
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_float(images_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    x = images_uint8.float().div_(255.0)  # [B, C, H, W] uint8 -> float in [0, 1]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class FloatBatches:
    """Rows of uint8 images -> a float batch in [0, 1], written into buffers that every step
    reuses: no per-step allocation, and with channels_last the layout change happens in the
    same copy. A batch is valid until the next call (the step that uses it is over by then)."""

    def __init__(self, images: torch.Tensor, batch_size: int, channels_last: bool = False):
        self.images = images  # uint8 [N, C, H, W]
        shape = (batch_size, *images.shape[1:])
        self.rows = torch.empty(shape, dtype=torch.uint8, device=images.device)
        self.floats = torch.empty(shape, dtype=torch.float32, device=images.device)
        if channels_last:
            self.floats = self.floats.contiguous(memory_format=torch.channels_last)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        n = idx.numel()
        rows, floats = self.rows[:n], self.floats[:n]
        # index_select, not images[idx]: the same rows, but a row copy instead of advanced
        # indexing's per-element gather (~13x faster for a uint8 batch on CPU)
        torch.index_select(self.images, 0, idx, out=rows)
        return floats.copy_(rows).div_(255.0)  # as to_float: the same bits


@dataclass
class StepOptions:
    """The loop's settings for every step, as plain values."""

    recon_loss: str = "mse"  # mse | bce
    precision: str = "32"  # 32 | bf16 | 16-mixed
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    l1_weight: float = 0.0  # alpha * ||W||_1 added to each optimizer's loss


class StepContext:
    """The `step` of `model.training_step(batch, step)`."""

    def __init__(self, forward, optimizers: dict, scaler: torch.amp.GradScaler, device: torch.device,
                 options: StepOptions):
        self._forward = forward
        self.optimizers = optimizers
        self.scaler = scaler
        self.device = device
        self.options = options
        self.recon_loss = options.recon_loss
        self.progress = 0.0  # epochs trained, fractional: set by the loop before each step
        self.stepped: list[str] = []  # the optimizers that stepped in this step
        self._params = {name: [p for group in opt.param_groups for p in group["params"]]
                        for name, opt in optimizers.items()}
        # With several optimizers, backward reaches only the parameters of the one being stepped.
        self._inputs = self._params if len(optimizers) > 1 else {name: None for name in optimizers}

    def autocast(self):
        return autocast(self.device, self.options.precision)

    def forward(self, *args):
        with self.autocast():
            return self._forward(*args)

    def optimize(self, name: str, loss: torch.Tensor, terms: dict | None = None, retain_graph: bool = False) -> None:
        """One update of optimizer `name` from `loss` (terms: where to log the L1 penalty)."""
        optimizer, params = self.optimizers[name], self._params[name]
        if self.options.l1_weight > 0:
            penalty = losses.l1_weight_penalty(params)
            loss = loss + self.options.l1_weight * penalty
            if terms is not None:
                terms["l1_weights"] = penalty
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(inputs=self._inputs[name], retain_graph=retain_graph)
        self.apply_gradients(name)

    def scaled(self, grad: torch.Tensor) -> torch.Tensor:
        """A gradient the family computed itself, scaled as `backward` of a scaled loss would have
        scaled it (16-mixed): `apply_gradients` unscales every `.grad` before the step."""
        return self.scaler.scale(grad)

    def apply_gradients(self, name: str) -> None:
        """Clip and step optimizer `name` on the gradients its parameters hold (a family that
        computes its own gradients, e.g. contrastive divergence, sets `.grad = step.scaled(g)`
        and calls this)."""
        optimizer = self.optimizers[name]
        if self.options.grad_clip > 0:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self._params[name], self.options.grad_clip)
        self.scaler.step(optimizer)
        self.stepped.append(name)

    def begin(self, progress: float) -> None:
        self.progress = progress
        self.stepped = []

    def end(self) -> None:
        if self.stepped:  # the scaler's bookkeeping needs at least one optimizer step to read
            self.scaler.update()
