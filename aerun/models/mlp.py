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

    def encode(self, x, labels=None):
        return self.encoder(x)  # [B, C, H, W] -> [B, D]

    def decode_raw(self, z, labels=None):
        return self.decoder(z).view(-1, *self.input_shape)  # [B, D] -> [B, C, H, W]


class VAE(VariationalAutoencoder):
    """MLP VAE: input -> hidden... -> (mu, logvar); z -> reversed(hidden)... -> logits. Conditional:
    the one-hot label joins the flattened image and the code."""

    def __init__(self, input_shape, latent_dim: int = 16, hidden=(512, 256), activation: str = "relu",
                 beta: float = 1.0, kl_warmup_epochs: float = 0.0, conditional: bool = False,
                 num_classes: int | None = None):
        super().__init__(input_shape, latent_dim, beta=beta, kl_warmup_epochs=kl_warmup_epochs,
                         conditional=conditional, num_classes=num_classes)
        hidden = [int(h) for h in hidden]
        if not hidden:
            raise ValueError("VAE needs at least one hidden layer")
        # Flatten then the MLP (the layout of checkpoints written before the conditional VAE)
        self.encoder = nn.Sequential(nn.Flatten(), mlp([self.input_dim + self.label_dim, *hidden], activation, activation))
        self.to_stats = nn.Linear(hidden[-1], 2 * latent_dim)
        self.decoder = mlp([latent_dim + self.label_dim, *reversed(hidden), self.input_dim], activation, None)

    def encode_stats(self, x, labels=None):
        h = self.encoder[1](self.with_label(self.encoder[0](x), labels))  # [B, P (+ K)] -> [B, hidden[-1]]
        mu, raw_logvar = self.to_stats(h).chunk(2, dim=1)  # [B, 2D] -> 2 x [B, D]
        return mu, self.safe_logvar(raw_logvar)

    def decode_raw(self, z, labels=None):
        return self.decoder(self.with_label(z, labels)).view(-1, *self.input_shape)
