"""Loss terms as pure functions. Each is summed per image and averaged over the batch,
so reconstruction and KL share one unit (nats for BCE) and need no magic weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reconstruction_per_image(output: torch.Tensor, target: torch.Tensor, kind: str, output_is_logits: bool) -> torch.Tensor:
    """[B, ...] -> [B]: MSE or Bernoulli negative log-likelihood summed over pixels."""
    output, target = output.float(), target.float()
    if kind == "mse":
        recon = torch.sigmoid(output) if output_is_logits else output
        return (recon - target).square().flatten(1).sum(1)
    if kind == "bce":
        if output_is_logits:
            return F.binary_cross_entropy_with_logits(output, target, reduction="none").flatten(1).sum(1)
        return F.binary_cross_entropy(output.clamp(1e-6, 1 - 1e-6), target, reduction="none").flatten(1).sum(1)
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def decoder_nll_per_image(output: torch.Tensor, target: torch.Tensor, kind: str, output_is_logits: bool) -> torch.Tensor:
    """-log p(x|z) per image in nats, [B, ...] -> [B], for the likelihood each loss stands for.

    bce: a Bernoulli decoder (on [0, 1] grey levels, the usual MNIST practice without
    binarisation). mse: a Gaussian with variance 1/2 per pixel, whose negative log density is
    the summed squared error plus 0.5 log(pi) per pixel. So a VAE's ELBO is a bound on the
    likelihood it was trained for, whichever loss it used."""
    nll = reconstruction_per_image(output, target, kind, output_is_logits)
    if kind == "mse":
        nll = nll + 0.5 * math.log(math.pi) * target[0].numel()
    return nll


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension: [B, D] -> [B, D], >= 0."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def l1_code_penalty(z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the L1 norm of each code: [B, D] -> scalar."""
    return z.float().abs().sum(1).mean()


def kl_sparsity_penalty(activations: torch.Tensor, rho: float, eps: float = 1e-6) -> torch.Tensor:
    """Sum over units of KL(rho || rho_hat), rho_hat the batch-mean activation in (0, 1)."""
    rho_hat = activations.float().mean(0).clamp(eps, 1 - eps)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def l1_weight_penalty(parameters) -> torch.Tensor:
    """alpha * ||W||_1 of the weight matrices/kernels (biases excluded)."""
    return sum(p.abs().sum() for p in parameters if p.dim() > 1)
