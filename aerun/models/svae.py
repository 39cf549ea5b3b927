"""The hyperspherical VAE (Davidson et al. 2018, "Hyperspherical Variational Auto-Encoders").

The posterior is a von Mises-Fisher vMF(mu, kappa) on the sphere S^(d-1) with a learned
concentration kappa, the prior the uniform distribution on the sphere; the KL between them is in
closed form (aerun.models.vmf) and samples are reparameterised (Wood's rejection sampler). Codes
live on the sphere: `encode` gives the mean direction mu, `sample_codes` draws uniformly on the
sphere, `path_between` follows great circles. MLP (network=mlp) or conv (network=conv) encoder
and decoder, as `vae` and `conv_vae`; `conditional=true` as for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aerun import losses
from aerun.models.base import AEOutput, Batch
from aerun.models.conv import conv_decoder, conv_encoder
from aerun.models.layers import activation as make_activation
from aerun.models.layers import mlp
from aerun.models.variational import VariationalAutoencoder
from aerun.models.vmf import HypersphericalUniform, VonMisesFisher, log_sphere_area, slerp


class SVAE(VariationalAutoencoder):
    latent_geometry = "sphere"

    def __init__(self, input_shape, latent_dim: int = 3, network: str = "mlp", hidden=(512, 256),
                 channels=(32, 64), trunk_dim: int = 256, activation: str = "relu", beta: float = 1.0,
                 kl_warmup_epochs: float = 0.0, conditional: bool = False, num_classes: int | None = None):
        super().__init__(input_shape, latent_dim, beta=beta, kl_warmup_epochs=kl_warmup_epochs,
                         conditional=conditional, num_classes=num_classes)
        if latent_dim < 2:
            raise ValueError("an S-VAE's code lives on S^(d-1): latent_dim must be >= 2")
        self.network = network
        k = self.label_dim
        if network == "conv":
            channels = [int(c) for c in channels]
            self.encoder = conv_encoder(self.input_shape, channels, trunk_dim, activation, activation)
            features = trunk_dim
            self.from_latent = nn.Sequential(nn.Linear(latent_dim + k, trunk_dim), make_activation(activation))
            self.decoder = conv_decoder(self.input_shape, channels, trunk_dim, activation)
        else:
            hidden = [int(h) for h in hidden]
            self.encoder = nn.Sequential(nn.Flatten(), mlp([self.input_dim + k, *hidden], activation, activation))
            features = hidden[-1]
            self.from_latent = nn.Identity()
            self.decoder = mlp([latent_dim + k, *reversed(hidden), self.input_dim], activation, None)
        self.to_direction = nn.Linear(features + (k if network == "conv" else 0), latent_dim)
        self.to_concentration = nn.Linear(features + (k if network == "conv" else 0), 1)
        self.uniform = HypersphericalUniform(latent_dim)

    # -- the networks ------------------------------------------------------------------------
    def features(self, x, labels=None):
        if self.network == "conv":
            return self.with_label(self.encoder(x), labels)
        return self.encoder[1](self.with_label(self.encoder[0](x), labels))

    def encode_stats(self, x, labels=None):
        """(mu [B, d] on the sphere, kappa [B, 1] > 1: softplus + 1 as in the paper)."""
        h = self.features(x, labels)
        return F.normalize(self.to_direction(h), dim=-1), F.softplus(self.to_concentration(h)) + 1

    def decode_raw(self, z, labels=None):
        out = self.decoder(self.from_latent(self.with_label(z, labels)))
        return out.view(-1, *self.input_shape)

    def posterior_of(self, mu, kappa) -> VonMisesFisher:
        return VonMisesFisher(mu.float(), kappa.float())  # float32 even under autocast: samples come back in it

    def forward(self, x, labels=None) -> AEOutput:
        mu, kappa = self.encode_stats(x, labels)
        z = self.posterior_of(mu, kappa).rsample().to(mu.dtype)  # [B, d] on the sphere
        return AEOutput(self.decode_raw(z, labels), z, mu, None, kappa)

    # -- training ----------------------------------------------------------------------------
    def objective(self, out: AEOutput, target, recon_loss: str, kl_scale: float = 1.0):
        recon = losses.reconstruction_per_image(out.recon, target, recon_loss, True).mean()
        kl = self.posterior_of(out.mu, out.scale).kl_to_uniform().mean()
        kl_weighted = self.beta * kl_scale * kl
        return {"loss": recon + kl_weighted, "recon": recon, "kl": kl, "kl_weighted": kl_weighted,
                "kappa": out.scale.float().mean()}

    def extra_sums(self, out: AEOutput, batch: Batch, recon_loss: str) -> dict[str, torch.Tensor]:
        nll = losses.decoder_nll_per_image(out.recon, batch.target, recon_loss, True)
        kl = self.posterior_of(out.mu, out.scale).kl_to_uniform()
        return {"elbo": -(nll + kl).sum()}

    def epoch_warnings(self, val: dict) -> list[str]:
        if val and val.get("kl", 1.0) < 0.01:
            return [f"the KL term is collapsing towards 0 ({val['kl']:.4f} nats, mean kappa {val.get('kappa', 0):.2f}):"
                    f" the posterior is nearly uniform and the decoder ignores the code; try a smaller model.beta or "
                    f"model.kl_warmup_epochs"]
        return []

    # -- the latent space ----------------------------------------------------------------------
    def embed(self, x, labels=None):
        mu, kappa = self.encode_stats(x, labels)
        return {"codes": mu, "kappa": kappa}

    prior_name = "the uniform distribution on the sphere"

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.uniform.sample(n, generator=generator, device=next(self.parameters()).device)

    def path_between(self, z0, z1, steps: int, method: str = "slerp") -> torch.Tensor:
        """The great circle between two codes (both on the sphere): slerp whatever `method` says."""
        return slerp(F.normalize(z0, dim=-1), F.normalize(z1, dim=-1), steps)

    # -- densities for the importance-weighted bound ---------------------------------------------
    def posterior(self, x, labels=None) -> dict[str, torch.Tensor]:
        mu, kappa = self.encode_stats(x, labels)
        return {"mu": mu.float(), "kappa": kappa.float()}

    def sample_posterior(self, post: dict, k: int, generator=None) -> torch.Tensor:
        return VonMisesFisher(post["mu"], post["kappa"]).rsample_k(k, generator)  # [B, k, d]

    def posterior_log_prob(self, z: torch.Tensor, post: dict) -> torch.Tensor:
        q = VonMisesFisher(post["mu"], post["kappa"])
        return q.log_prob(z.transpose(0, 1)).transpose(0, 1)  # [B, k, d] -> [B, k]

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full(z.shape[:-1], -log_sphere_area(self.latent_dim), device=z.device)

    def kl_to_prior(self, post: dict) -> torch.Tensor:
        return VonMisesFisher(post["mu"], post["kappa"]).kl_to_uniform()
