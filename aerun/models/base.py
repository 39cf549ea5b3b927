"""The contract every model family keeps, and what is written once for all of them.

A family is one module in `aerun/models/` and one YAML in `configs/model/`. It says how it
trains; the loop (`aerun.engine`) owns what is the same for all: batches, precision,
gradient clipping, logging, checkpoints, signals, divergence checks, DDP.

    parameter_groups()          -> {optimizer name: parameters}  one optimizer per entry
    training_step(batch, step)  -> {term: tensor}  does its own update through `step`
    eval_metrics(batch, ...)    -> {metric: batch sum}  what `evaluate` averages over a split
    epoch_warnings(val)         -> [one-line warnings]   (collapse, divergence signs)

A plain autoencoder writes only `encode` and `decode_raw`; the defaults here give it one
optimizer, the reconstruction objective and the metrics. Models know nothing of files or
configs: they take plain arguments.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch
from torch import nn

from aerun import losses


def one_hot(labels: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """[B] int64 -> [B, K] in the dtype and device of `like` (a conditional model's label input)."""
    return torch.nn.functional.one_hot(labels, num_classes).to(dtype=like.dtype, device=like.device)


class AEOutput(NamedTuple):
    """What `forward` returns (a NamedTuple, so torch.compile and DDP pass it through)."""

    recon: torch.Tensor  # [B, C, H, W] the decoder's raw output: logits when the output is a sigmoid
    z: torch.Tensor  # [B, D] the code the decoder read (a posterior sample for VAEs)
    mu: torch.Tensor | None = None  # [B, D] posterior mean (VAEs; the mean direction for the S-VAE)
    logvar: torch.Tensor | None = None  # [B, D] posterior log-variance (Gaussian VAEs)
    scale: torch.Tensor | None = None  # [B, 1] posterior concentration kappa (S-VAE)


class Batch(NamedTuple):
    inputs: torch.Tensor  # [B, C, H, W] float in [0, 1]: what the encoder sees (noisy when denoising)
    target: torch.Tensor  # [B, C, H, W] the clean image
    labels: torch.Tensor | None  # [B] int64 class labels (None in training unless the model uses_labels)


class Step(Protocol):
    """What the loop hands `training_step` (implemented by `aerun.engine.step.StepContext`)."""

    recon_loss: str  # "mse" | "bce"
    progress: float  # epochs trained so far, fractional (the KL warm-up reads it)

    def forward(self, *args) -> AEOutput: ...  # the model (compiled / DDP-wrapped) under autocast

    def autocast(self): ...  # the mixed-precision context, for a family that runs its networks itself

    def optimize(self, name: str, loss: torch.Tensor, terms: dict | None = None, retain_graph: bool = False) -> None: ...

    def scaled(self, grad: torch.Tensor) -> torch.Tensor: ...  # a gradient computed by hand, scaled as backward's
    def apply_gradients(self, name: str) -> None: ...  # clip and step on gradients the family computed itself


class Autoencoder(nn.Module):
    """encode(x) -> z, decode(z) -> x_hat in image space; forward(x) -> AEOutput."""

    is_variational = False
    default_loss = "mse"
    supports_ddp = True  # one optimizer stepped by one backward: DDP can synchronise it
    has_prior = False  # whether `sample_codes` draws from a prior the decoder was trained on
    latent_geometry = "euclidean"  # or "sphere": codes on S^(d-1) (plots, paths, manifold grids know it)
    uses_labels = False  # whether training_step reads batch.labels (None otherwise: not gathered)

    def __init__(self, input_shape, latent_dim: int, sparsity: dict | None = None,
                 output_activation: str = "sigmoid"):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)  # (C, H, W)
        self.latent_dim = int(latent_dim)
        sparsity = sparsity or {}
        self.sparsity_kind = str(sparsity.get("kind", "none"))
        self.sparsity_weight = float(sparsity.get("weight", 0.0))
        self.sparsity_rho = float(sparsity.get("rho", 0.05))
        self.output_is_logits = output_activation == "sigmoid"

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    # -- networks: subclasses provide these -----------------------------------------------
    # `labels` ([B] int64) is read only by conditional models (uses_labels); others ignore it.
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C, H, W] -> [B, latent_dim]; the mean code for VAEs."""
        raise NotImplementedError

    def decode_raw(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """[B, latent_dim] -> [B, C, H, W] before the output activation."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> AEOutput:
        z = self.encode(x, labels)
        return AEOutput(self.decode_raw(z, labels), z)

    # -- written once ---------------------------------------------------------------------
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_image(self.decode_raw(z, labels))

    def to_image(self, raw: torch.Tensor) -> torch.Tensor:
        """The image in [0, 1]-space from the decoder's raw output."""
        return torch.sigmoid(raw) if self.output_is_logits else raw

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, labels), labels)

    # -- training -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """One optimizer over every parameter."""
        return {"model": list(self.parameters())}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        out = step.forward(batch.inputs, batch.labels) if self.uses_labels else step.forward(batch.inputs)
        terms = self.objective(out, batch.target, step.recon_loss)
        step.optimize("model", terms["loss"], terms)
        return terms

    def sparsity_activations(self, z: torch.Tensor) -> torch.Tensor:
        """Code activations in [0, 1) for the KL sparsity penalty: sigmoid codes as they are,
        ReLU codes through tanh (0 stays 0; a sigmoid would map every ReLU code to >= 0.5, out of
        reach of any rho < 0.5), any other code through a sigmoid."""
        kind = getattr(self, "latent_activation", "")
        if kind == "sigmoid":
            return z
        if kind == "relu":
            return torch.tanh(z)
        return torch.sigmoid(z)

    def objective(self, out: AEOutput, target: torch.Tensor, recon_loss: str) -> dict[str, torch.Tensor]:
        """Per-batch loss terms, each summed per image and averaged over the batch."""
        recon = losses.reconstruction_per_image(out.recon, target, recon_loss, self.output_is_logits).mean()
        terms = {"recon": recon}
        total = recon
        if self.sparsity_kind == "l1":
            penalty = losses.l1_code_penalty(out.z)
        elif self.sparsity_kind == "kl":
            penalty = losses.kl_sparsity_penalty(self.sparsity_activations(out.z), self.sparsity_rho)
        else:
            penalty = None
        if penalty is not None:
            terms["sparsity"] = penalty
            total = total + self.sparsity_weight * penalty
        terms["loss"] = total
        return terms

    # -- evaluation -----------------------------------------------------------------------
    def eval_metrics(self, batch: Batch, recon_loss: str, autocast) -> dict[str, torch.Tensor]:
        """Sums over the batch of the objective's terms (per image) and of the per-pixel metrics
        of the reconstruction: `evaluate` adds them over a split and divides by its size."""
        with autocast():
            out = self(batch.inputs, batch.labels)
            mean_raw = self.mean_reconstruction_raw(out, batch.labels)  # under autocast: its code is bf16/fp16 there
        sums = {name: value.float() * batch.target.shape[0]
                for name, value in self.objective(out, batch.target, recon_loss).items()}
        sums.update(reconstruction_sums(self.to_image(mean_raw).float(), batch.target))
        sums.update(self.extra_sums(out, batch, recon_loss))
        return sums

    def mean_reconstruction_raw(self, out: AEOutput, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The raw reconstruction the metrics judge (a VAE's is its mean code's)."""
        return out.recon

    def extra_sums(self, out: AEOutput, batch: Batch, recon_loss: str) -> dict[str, torch.Tensor]:
        """A family's own metrics, as batch sums (a plain AE's: how sparse its codes are)."""
        z = out.z.float()
        return {"code_zero_fraction": (z.abs() < 1e-2).float().mean(1).sum(), "code_mean_activation": z.abs().mean(1).sum()}

    def epoch_warnings(self, val: dict) -> list[str]:
        return []

    def counts_for_best(self, epochs_done: int) -> bool:
        """Whether the epoch that just ended may give best.pt (a staged family: its last stage only)."""
        return True

    # -- the latent space -----------------------------------------------------------------
    def embed(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"codes": [B, D]} (+ the posterior's statistics for VAEs): what `encode` writes."""
        return {"codes": self.encode(x, labels)}

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 10, method: str = "linear",
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode `steps` points on the path between the codes of x0 and x1: -> [steps, C, H, W]
        (`labels` [2]: the classes of x0 and x1 for a conditional model, decoded as x1's... see path)."""
        ends = labels[:, None] if labels is not None else [None, None]
        z0, z1 = self.encode(x0[None], ends[0])[0], self.encode(x1[None], ends[1])[0]
        path_labels = labels[1].expand(steps) if labels is not None else None
        return self.decode(self.path_between(z0, z1, steps, method), path_labels)

    def path_between(self, z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str = "linear") -> torch.Tensor:
        """[D], [D] -> [steps, D]: the codes on the path between two codes."""
        return interpolate_codes(z0, z1, steps, method)

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no prior to sample from")

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.sample_codes(n, generator), labels)


def reconstruction_sums(image: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Batch sums of MSE and BCE per pixel and of PSNR (dB) per image, images in [0, 1], and of
    `recon_variety`: how much the reconstructions vary across the batch's images, as a fraction
    of how much the images do (about 1 for a model that reads its input; near 0 for one that
    outputs the same image for every input, see `collapse_warning`)."""
    mse_per_image = (image - target).square().flatten(1).mean(1)
    n = target.shape[0]
    spread = target.var(0, unbiased=False).mean()
    # images that do not vary (one image, or copies of one) say nothing: count them as neutral
    variety = torch.where(spread > 1e-12, image.var(0, unbiased=False).mean() / spread.clamp_min(1e-12),
                          torch.ones_like(spread)) if n > 1 else torch.ones((), device=target.device)
    return {"mse": mse_per_image.sum(), "psnr": psnr(mse_per_image).sum(),
            "bce": losses.reconstruction_per_image(image, target, "bce", False).sum() / target[0].numel(),
            "recon_variety": variety * n}


COLLAPSED_VARIETY = 0.01


def collapse_warning(val: dict) -> list[str]:
    """The one warning every family shares: reconstructions that no longer depend on the input
    (the model outputs the mean image: dead ReLUs after a too-large step, most often)."""
    variety = val.get("recon_variety")
    if variety is None or not variety < COLLAPSED_VARIETY:
        return []
    return [f"the reconstructions barely depend on the input (their spread across images is {100 * variety:.2g}% "
            f"of the images'): the model outputs about the same image, the mean one, for every input; dead "
            f"ReLUs after a too-large step, or too few steps yet, are the usual causes: try a lower optim.lr, "
            f"model.activation=leaky_relu, or more epochs"]


def psnr(mse_per_image: torch.Tensor) -> torch.Tensor:
    """dB for images in [0, 1]: -10 log10(MSE), per image."""
    return -10 * torch.log10(mse_per_image.clamp_min(1e-10))


def interpolate_codes(z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str = "linear") -> torch.Tensor:
    """[D], [D] -> [steps, D] along a line or a great circle (slerp)."""
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)[:, None]
    if method == "linear":
        return (1 - t) * z0 + t * z1
    if method == "slerp":
        cos = torch.dot(z0, z1) / (z0.norm() * z1.norm()).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        if omega.abs() < 1e-4:
            return (1 - t) * z0 + t * z1
        return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
    raise ValueError(f"unknown interpolation method {method!r}; choose linear or slerp")
