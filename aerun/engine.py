"""`train_one_epoch` and `evaluate`: the hot loop, free of Hydra and of files.

Images live on the training device as uint8 and are batched by slicing a device
permutation; each batch is converted to float there. Loss sums stay on the device:
the host reads them only when the caller asks (log points), so a step never waits
for the device. Importing this module turns on flush-to-zero for denormal floats
(`torch.set_flush_denormal(True)`) so CPU training does not slow down as optimizer
state decays towards zero.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from aerun import losses
from aerun.data import apply_noise

# Flush denormal floats to zero. Adam's moment estimates for weights that rarely get a gradient
# (e.g. those fed by MNIST's always-black border pixels) decay through the denormal range, where
# x86 float math is ~100x slower: a linear_ae Adam loop on MNIST ran ~12% slower by step 1,400
# without this (0.62 vs 0.55 s per 200 steps), and the gap grows with the run.
# Values below 1.2e-38 become 0; nothing aerun computes depends on them. The flag is per thread
# and torch's CPU worker threads copy it when they start, so it is set here, at import, before
# `aerun train` runs its first parallel op; `train_one_epoch` sets it again for the calling thread.
torch.set_flush_denormal(True)


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
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # see the top of this module
    n = perm.numel()
    for batch_index in range(start_batch, num_batches(n, cfg.batch_size)):
        idx = perm[batch_index * cfg.batch_size:(batch_index + 1) * cfg.batch_size]
        # index_select, not images[idx]: the same rows, but a row copy instead of advanced
        # indexing's per-element gather (~13x faster for a uint8 batch on CPU)
        target = to_float(images.index_select(0, idx), cfg.channels_last)
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
                # a VAE's metrics decode the mean code; under autocast too, as mu is bf16/fp16 there
                mean_raw = model.decode_raw(out["mu"]) if "mu" in out else out["recon"]
            terms = model.objective(out, target, recon_loss)
            b = target.shape[0]
            for name, value in terms.items():
                add(name, value.float() * b)
            mean_image = model.to_image(mean_raw).float()
            mse_per_image = (mean_image - target).square().flatten(1).mean(1)
            add("mse", mse_per_image.sum())
            add("psnr", (-10 * torch.log10(mse_per_image.clamp_min(1e-10))).sum())
            add("bce", losses.reconstruction_per_image(mean_image, target, "bce", False).sum() / target[0].numel())
            if noise_kind != "none":
                noisy_mse = (inputs - target).square().flatten(1).mean(1)
                add("psnr_noisy", (-10 * torch.log10(noisy_mse.clamp_min(1e-10))).sum())
            if model.is_variational:
                nll = losses.decoder_nll_per_image(out["recon"], target, recon_loss, True)
                kl = losses.gaussian_kl_per_dim(out["mu"], out["logvar"]).sum(1)
                add("elbo", -(nll + kl).sum())
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
