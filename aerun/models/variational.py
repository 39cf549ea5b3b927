"""Gaussian VAEs: q(z|x) = N(mu, exp(logvar)), prior N(0, I), a Bernoulli decoder by default.

Subclasses provide `encode_stats(x) -> (mu, logvar)` and `decode_raw`. The objective is the
negative ELBO (nats per image with BCE): recon + beta * warm-up * KL. The posterior and
prior densities are methods, so the importance-weighted bound (`aerun.analysis.likelihood`)
works for any family that provides them.
"""

from __future__ import annotations

import math

import torch

from aerun import losses
from aerun.models.base import AEOutput, Autoencoder, Batch, Step, one_hot

LOG_2PI = math.log(2 * math.pi)


def kl_warmup(progress_epochs: float, warmup_epochs: float) -> float:
    """The KL weight in [0, 1] after `progress_epochs` of training: a linear ramp over
    `warmup_epochs` (Bowman et al. 2016), 1 from the start when there is no warm-up."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, progress_epochs / warmup_epochs)


class VariationalAutoencoder(Autoencoder):
    is_variational = True
    has_prior = True
    default_loss = "bce"
    LOGVAR_LIMIT = 10.0  # logvar is squashed into (-10, 10): std in (0.007, 148)

    def __init__(self, input_shape, latent_dim: int, beta: float = 1.0, kl_warmup_epochs: float = 0.0,
                 conditional: bool = False, num_classes: int | None = None):
        super().__init__(input_shape, latent_dim, output_activation="sigmoid")
        self.beta = float(beta)
        self.kl_warmup_epochs = float(kl_warmup_epochs)
        # A conditional VAE (Sohn et al. 2015): encoder and decoder both read the one-hot label.
        self.uses_labels = bool(conditional)
        if self.uses_labels and not num_classes:
            raise ValueError("a conditional model needs num_classes (the dataset's classes)")
        self.num_classes = int(num_classes or 0)
        self.label_dim = self.num_classes if self.uses_labels else 0

    def with_label(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """[B, F] -> [B, F + K]: the one-hot label appended when the model is conditional."""
        if not self.uses_labels:
            return h
        if labels is None:
            raise ValueError("this conditional model needs the labels of its inputs")
        return torch.cat([h, one_hot(labels, self.num_classes, h)], dim=1)

    def safe_logvar(self, raw: torch.Tensor) -> torch.Tensor:
        return self.LOGVAR_LIMIT * torch.tanh(raw / self.LOGVAR_LIMIT)

    def encode_stats(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode_stats(x, labels)[0]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> AEOutput:
        mu, logvar = self.encode_stats(x, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return AEOutput(self.decode_raw(z, labels), z, mu, logvar)

    # -- training -------------------------------------------------------------------------
    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        out = step.forward(batch.inputs, batch.labels) if self.uses_labels else step.forward(batch.inputs)
        terms = self.objective(out, batch.target, step.recon_loss, kl_warmup(step.progress, self.kl_warmup_epochs))
        step.optimize("model", terms["loss"], terms)
        return terms

    def objective(self, out: AEOutput, target, recon_loss: str, kl_scale: float = 1.0):
        recon = losses.reconstruction_per_image(out.recon, target, recon_loss, True).mean()
        kl_per_dim = losses.gaussian_kl_per_dim(out.mu, out.logvar).mean(0)  # [D]
        kl = kl_per_dim.sum()
        kl_weighted = self.beta * kl_scale * kl
        return {"loss": recon + kl_weighted, "recon": recon, "kl": kl, "kl_weighted": kl_weighted,
                "kl_per_dim": kl_per_dim}

    # -- evaluation -----------------------------------------------------------------------
    def mean_reconstruction_raw(self, out: AEOutput, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode_raw(out.mu, labels)  # the posterior mean (the S-VAE's mean direction)

    def extra_sums(self, out: AEOutput, batch: Batch, recon_loss: str) -> dict[str, torch.Tensor]:
        """The ELBO at beta = 1 under the likelihood the loss stands for (a bound on log p(x)
        whatever beta the model was trained with)."""
        nll = losses.decoder_nll_per_image(out.recon, batch.target, recon_loss, True)
        kl = losses.gaussian_kl_per_dim(out.mu, out.logvar).sum(1)
        return {"elbo": -(nll + kl).sum()}

    def epoch_warnings(self, val: dict) -> list[str]:
        kl_per_dim = val.get("kl_per_dim")
        if kl_per_dim and sum(kl_per_dim) < 0.01 * len(kl_per_dim):
            return [f"the KL term is collapsing towards 0 ({sum(kl_per_dim):.4f} nats): the decoder ignores the "
                    f"code; try a smaller model.beta or model.kl_warmup_epochs"]
        return []

    # -- the latent space -----------------------------------------------------------------
    def embed(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode_stats(x, labels)
        return {"codes": mu, "mu": mu, "logvar": logvar}

    prior_name = "N(0, I)"

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, device=device, generator=generator)

    # -- densities for the importance-weighted bound -----------------------------------------
    def posterior(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode_stats(x, labels)
        return {"mu": mu.float(), "logvar": logvar.float()}

    def sample_posterior(self, post: dict, k: int, generator=None) -> torch.Tensor:
        """[B, D] statistics -> [B, k, D] samples z ~ q(z|x)."""
        mu, std = post["mu"], torch.exp(0.5 * post["logvar"])
        eps = torch.randn(mu.shape[0], k, mu.shape[1], device=mu.device, generator=generator)
        return mu[:, None] + std[:, None] * eps

    def posterior_log_prob(self, z: torch.Tensor, post: dict) -> torch.Tensor:
        """log q(z|x): [B, k, D] -> [B, k]."""
        mu, logvar = post["mu"][:, None], post["logvar"][:, None]
        return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I): [..., D] -> [...]."""
        return -0.5 * (z.square() + LOG_2PI).sum(-1)

    def kl_to_prior(self, post: dict) -> torch.Tensor:
        """KL(q(z|x) || p(z)) in closed form, per image: [B]."""
        return losses.gaussian_kl_per_dim(post["mu"], post["logvar"]).sum(1)
