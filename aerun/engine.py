"""`train_one_epoch` and `evaluate`: the hot loop, free of Hydra and of files.

Images live on the training device as uint8 and are batched by slicing a device
permutation; each batch is converted to float there. Loss sums stay on the device:
the host reads them only when the caller asks (log points), so a step never waits
for the device.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from aerun import losses
from aerun.data import apply_noise


@dataclass
class StepConfig:
    """What a training step needs to know, as plain values."""

    batch_size: int
    recon_loss: str = "mse"  # mse | bce
    precision: str = "32"  # 32 | bf16 | 16-mixed
    grad_clip: float = 0.0
    l1_weight: float = 0.0
    noise_kind: str = "none"
    noise_level: float = 0.0
    channels_last: bool = False


def autocast(device: torch.device, precision: str):
    """Mixed precision as a flag on one code path: a no-op context for fp32."""
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_float(images_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    x = images_uint8.float().div_(255.0)  # [B, C, H, W] uint8 -> float in [0, 1]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The data order of one epoch: a function of (seed, epoch) alone, so a resumed run sees the same order."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).to(device, non_blocking=True)


def noise_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """The denoising-noise stream of one epoch (fresh noise each epoch, reproducible)."""
    return torch.Generator(device=device).manual_seed(seed * 7_919 + epoch + 1)


def num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


@dataclass
class EpochAccumulator:
    """Device-side sums of the loss terms over an epoch, and a record of non-finite values."""

    device: torch.device
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    images: int = 0  # host-side count: known without asking the device
    steps: int = 0
    first_nonfinite_step: torch.Tensor | None = None
    nonfinite_terms: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, terms: dict[str, torch.Tensor], batch: int, global_step: int) -> None:
        if self.first_nonfinite_step is None:
            self.first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=self.device)
        any_bad = None
        for name, value in terms.items():
            value = value.detach().float()
            if name not in self.sums:
                self.sums[name] = torch.zeros_like(value)
                self.nonfinite_terms[name] = torch.zeros((), dtype=torch.bool, device=self.device)
            self.sums[name] += value * batch
            bad = ~torch.isfinite(value).all()
            self.nonfinite_terms[name] |= bad
            any_bad = bad if any_bad is None else any_bad | bad
        self.first_nonfinite_step.masked_fill_(any_bad & (self.first_nonfinite_step < 0), global_step)
        self.images += batch
        self.steps += 1

    def means(self) -> dict[str, float | list[float]]:
        """Per-image means of every term: one device read for all of them."""
        if not self.sums or self.images == 0:
            return {}
        names = list(self.sums)
        flat = torch.cat([self.sums[n].reshape(-1) for n in names]).div(self.images).tolist()
        out, i = {}, 0
        for name in names:
            size = self.sums[name].numel()
            out[name] = flat[i] if self.sums[name].dim() == 0 else flat[i:i + size]
            i += size
        return out

    def nonfinite(self) -> tuple[int, list[str]] | None:
        """(first step, terms) if any term went NaN/inf, else None; one device read."""
        if self.first_nonfinite_step is None:
            return None
        step = int(self.first_nonfinite_step.item())
        if step < 0:
            return None
        return step, [name for name, bad in self.nonfinite_terms.items() if bool(bad)]

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "images": self.images, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.nonfinite_terms = {k: torch.zeros((), dtype=torch.bool, device=self.device) for k in self.sums}
        self.images, self.steps = state["images"], state["steps"]


def train_one_epoch(
    model: torch.nn.Module,
    forward: Callable,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: torch.Tensor,
    perm: torch.Tensor,
    cfg: StepConfig,
    *,
    accumulator: EpochAccumulator,
    start_batch: int = 0,
    global_step: int = 0,
    noise: torch.Generator | None = None,
    kl_scale: Callable[[int], float] = lambda batch_index: 1.0,
    step_scheduler: Callable[[], None] | None = None,
    after_step: Callable[[int, int], bool] | None = None,
) -> tuple[int, bool]:
    """Run the batches of one epoch from `start_batch`; returns (global_step, stopped early).

    `forward` is the model or its compiled form; `after_step(batch_index, global_step)`
    runs after each optimizer step and returns True to stop (a signal, a log point
    that found a NaN).
    """
    model.train()
    device = images.device
    n = perm.numel()
    for batch_index in range(start_batch, num_batches(n, cfg.batch_size)):
        idx = perm[batch_index * cfg.batch_size:(batch_index + 1) * cfg.batch_size]
        target = to_float(images[idx], cfg.channels_last)
        inputs = apply_noise(target, cfg.noise_kind, cfg.noise_level, noise) if cfg.noise_kind != "none" else target
        with autocast(device, cfg.precision):
            out = forward(inputs)
        terms = model.objective(out, target, cfg.recon_loss, kl_scale(batch_index))
        loss = terms["loss"]
        if cfg.l1_weight > 0:
            terms["l1_weights"] = losses.l1_weight_penalty(model.parameters())
            loss = loss + cfg.l1_weight * terms["l1_weights"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if step_scheduler is not None:
            step_scheduler()
        global_step += 1
        accumulator.add(terms, idx.numel(), global_step)
        if after_step is not None and after_step(batch_index, global_step):
            return global_step, True
    return global_step, False


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 1000,
    recon_loss: str = "mse",
    precision: str = "32",
    noise_kind: str = "none",
    noise_level: float = 0.0,
    seed: int = 0,
    channels_last: bool = False,
) -> dict[str, float]:
    """Metrics over a split: MSE and BCE per pixel, PSNR (dB, mean over images), the
    objective per image; ELBO and per-dimension KL for VAEs; code sparsity; and the
    noisy-input PSNR for denoising. Uses its own RNG so training's stream is untouched."""
    model.eval()
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed + 12_345)
    sums: dict[str, torch.Tensor] = {}

    def add(name, value):
        sums[name] = sums[name] + value if name in sums else value

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 54_321)
        for start in range(0, images.shape[0], batch_size):
            target = to_float(images[start:start + batch_size], channels_last)
            inputs = apply_noise(target, noise_kind, noise_level, generator) if noise_kind != "none" else target
            with autocast(device, precision):
                out = model(inputs)
            terms = model.objective(out, target, recon_loss)
            b = target.shape[0]
            for name, value in terms.items():
                add(name, value.float() * b)
            mean_image = model.to_image(model.decode_raw(out["mu"]) if "mu" in out else out["recon"]).float()
            mse_per_image = (mean_image - target).square().flatten(1).mean(1)
            add("mse", mse_per_image.sum())
            add("psnr", (-10 * torch.log10(mse_per_image.clamp_min(1e-10))).sum())
            add("bce", losses.reconstruction_per_image(mean_image, target, "bce", False).sum() / target[0].numel())
            if noise_kind != "none":
                noisy_mse = (inputs - target).square().flatten(1).mean(1)
                add("psnr_noisy", (-10 * torch.log10(noisy_mse.clamp_min(1e-10))).sum())
            if model.is_variational:
                bce_sum = losses.reconstruction_per_image(out["recon"], target, "bce", True)
                kl = losses.gaussian_kl_per_dim(out["mu"], out["logvar"]).sum(1)
                add("elbo", -(bce_sum + kl).sum())
            else:
                z = out["z"].float()
                add("code_zero_fraction", (z.abs() < 1e-2).float().mean(1).sum())
                add("code_mean_activation", z.abs().mean(1).sum())
    n = images.shape[0]
    names = list(sums)
    values = torch.cat([sums[k].reshape(-1) for k in names]).div(n).tolist()
    result, i = {}, 0
    for name in names:
        size = sums[name].numel()
        result[name] = values[i] if size == 1 and sums[name].dim() == 0 else values[i:i + size]
        i += size
    if noise_kind != "none":
        result["psnr_gain"] = result["psnr"] - result["psnr_noisy"]
    return result
