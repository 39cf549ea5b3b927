"""Fully connected autoencoders: the course's linear/MLP AE, the shallow AE, the MLP VAE."""

from __future__ import annotations

from torch import nn

from aerun.models.base import Autoencoder
from aerun.models.layers import mlp
from aerun.models.variational import VariationalAutoencoder


class MLPAutoencoder(Autoencoder):
    """input -> hidden... -> latent -> reversed(hidden)... -> input.

    hidden=[] is the shallow AE (one Linear each side). With activation=identity and
    latent_activation=identity the model is linear, and output_activation=auto drops
    the sigmoid too, so it spans the same subspace PCA finds.
    """

    def __init__(self, input_shape, latent_dim: int = 2, hidden=(128, 64, 12), activation: str = "relu",
                 latent_activation: str = "identity", output_activation: str = "auto", sparsity=None):
        if output_activation == "auto":
            linear = activation == "identity" and latent_activation == "identity"
            output_activation = "identity" if linear else "sigmoid"
        super().__init__(input_shape, latent_dim, sparsity=sparsity, output_activation=output_activation)
        self.latent_activation = latent_activation
        hidden = [int(h) for h in hidden]
        self.encoder = nn.Sequential(nn.Flatten(), mlp([self.input_dim, *hidden, latent_dim], activation, latent_activation))
        self.decoder = mlp([latent_dim, *reversed(hidden), self.input_dim], activation, None)

    def encode(self, x):
        return self.encoder(x)  # [B, C, H, W] -> [B, D]

    def decode_raw(self, z):
        return self.decoder(z).view(-1, *self.input_shape)  # [B, D] -> [B, C, H, W]


class VAE(VariationalAutoencoder):
    """MLP VAE: input -> hidden... -> (mu, logvar); z -> reversed(hidden)... -> logits."""

    def __init__(self, input_shape, latent_dim: int = 16, hidden=(512, 256), activation: str = "relu",
                 beta: float = 1.0, kl_warmup_epochs: float = 0.0):
        super().__init__(input_shape, latent_dim, beta=beta, kl_warmup_epochs=kl_warmup_epochs)
        hidden = [int(h) for h in hidden]
        self.encoder = nn.Sequential(nn.Flatten(), mlp([self.input_dim, *hidden], activation, activation)) \
            if hidden else nn.Flatten()
        features = hidden[-1] if hidden else self.input_dim
        self.to_stats = nn.Linear(features, 2 * latent_dim)
        self.decoder = mlp([latent_dim, *reversed(hidden), self.input_dim], activation, None)

    def encode_stats(self, x):
        mu, raw_logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)  # [B, 2D] -> 2 x [B, D]
        return mu, self.safe_logvar(raw_logvar)

    def decode_raw(self, z):
        return self.decoder(z).view(-1, *self.input_shape)
