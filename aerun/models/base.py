"""The one autoencoder interface. Subclasses write the networks and `forward`; the
objective, reconstruction, interpolation and sampling are written once here.

Models know nothing of files or configs: they take plain arguments.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aerun import losses

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class Autoencoder(nn.Module):
    """encode(x) -> z, decode(z) -> x_hat in image space; forward(x) -> dict of tensors.

    `forward` returns `recon` as the decoder's raw output: logits when the output
    activation is a sigmoid (so BCE is computed stably), the image itself otherwise.
    """

    is_variational = False
    default_loss = "mse"

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

    # -- subclasses provide these ------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, latent_dim]; the mean code for VAEs."""
        raise NotImplementedError

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """[B, latent_dim] -> [B, C, H, W] before the output activation."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        return {"recon": self.decode_raw(z), "z": z}

    # -- written once --------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raw = self.decode_raw(z)
        return torch.sigmoid(raw) if self.output_is_logits else raw

    def to_image(self, recon: torch.Tensor) -> torch.Tensor:
        """The image in [0, 1]-space from `forward(...)["recon"]`."""
        return torch.sigmoid(recon) if self.output_is_logits else recon

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

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

    def objective(self, out: dict[str, torch.Tensor], target: torch.Tensor, recon_loss: str,
                  kl_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Per-batch loss terms, each summed per image and averaged over the batch."""
        recon = losses.reconstruction_per_image(out["recon"], target, recon_loss, self.output_is_logits).mean()
        terms = {"recon": recon}
        total = recon
        if self.sparsity_kind == "l1":
            penalty = losses.l1_code_penalty(out["z"])
        elif self.sparsity_kind == "kl":
            penalty = losses.kl_sparsity_penalty(self.sparsity_activations(out["z"]), self.sparsity_rho)
        else:
            penalty = None
        if penalty is not None:
            terms["sparsity"] = penalty
            total = total + self.sparsity_weight * penalty
        terms["loss"] = total
        return terms

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 10, method: str = "linear") -> torch.Tensor:
        """Decode `steps` points on the path between the codes of x0 and x1: -> [steps, C, H, W]."""
        z0, z1 = self.encode(x0[None])[0], self.encode(x1[None])[0]
        return self.decode(interpolate_codes(z0, z1, steps, method))

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no prior to sample from")


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


class VariationalAutoencoder(Autoencoder):
    """Gaussian encoder q(z|x) = N(mu, exp(logvar)), prior N(0, I).

    Subclasses provide `encode_stats(x) -> (mu, logvar)` and `decode_raw`.
    The objective is the negative ELBO (nats per image with BCE): recon + beta * KL.
    """

    is_variational = True
    default_loss = "bce"
    LOGVAR_LIMIT = 10.0  # logvar is squashed into (-10, 10): std in (0.007, 148)

    def __init__(self, input_shape, latent_dim: int, beta: float = 1.0, kl_warmup_epochs: float = 0.0,
                 sparsity: dict | None = None):
        super().__init__(input_shape, latent_dim, sparsity=sparsity, output_activation="sigmoid")
        self.beta = float(beta)
        self.kl_warmup_epochs = float(kl_warmup_epochs)

    def safe_logvar(self, raw: torch.Tensor) -> torch.Tensor:
        return self.LOGVAR_LIMIT * torch.tanh(raw / self.LOGVAR_LIMIT)

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_stats(x)[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode_stats(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return {"recon": self.decode_raw(z), "z": z, "mu": mu, "logvar": logvar}

    def kl_scale_at(self, epoch_progress: float) -> float:
        """The KL warm-up factor in [0, 1] after `epoch_progress` epochs of training."""
        if self.kl_warmup_epochs <= 0:
            return 1.0
        return min(1.0, epoch_progress / self.kl_warmup_epochs)

    def objective(self, out, target, recon_loss: str, kl_scale: float = 1.0):
        recon = losses.reconstruction_per_image(out["recon"], target, recon_loss, True).mean()
        kl_per_dim = losses.gaussian_kl_per_dim(out["mu"], out["logvar"]).mean(0)  # [D]
        kl = kl_per_dim.sum()
        kl_weighted = self.beta * kl_scale * kl
        return {"loss": recon + kl_weighted, "recon": recon, "kl": kl, "kl_weighted": kl_weighted,
                "kl_per_dim": kl_per_dim}

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return self.decode(z)
