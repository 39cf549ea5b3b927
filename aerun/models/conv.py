"""Convolutional autoencoders for any C x H x W: stride-2 3x3 convs, then one conv over
the whole remaining map (7x7 on MNIST, 8x8 on CIFAR), mirrored with ConvTranspose."""

from __future__ import annotations

import torch
from torch import nn

from aerun.models.base import AEOutput, Autoencoder
from aerun.models.layers import activation as make_activation
from aerun.models.variational import VariationalAutoencoder


def downsampled_sizes(height: int, width: int, n_layers: int) -> list[tuple[int, int]]:
    """Spatial sizes after each 3x3 stride-2 padding-1 conv, input size first."""
    sizes = [(height, width)]
    for _ in range(n_layers):
        h, w = sizes[-1]
        sizes.append(((h - 1) // 2 + 1, (w - 1) // 2 + 1))
    return sizes


def conv_encoder(input_shape, channels: list[int], out_features: int, act: str, out_act: str) -> nn.Sequential:
    """[B, C, H, W] -> [B, out_features]."""
    in_ch, height, width = input_shape
    sizes = downsampled_sizes(height, width, len(channels))
    layers = []
    for ch in channels:
        layers += [nn.Conv2d(in_ch, ch, 3, stride=2, padding=1), make_activation(act)]
        in_ch = ch
    layers.append(nn.Conv2d(in_ch, out_features, kernel_size=sizes[-1]))  # [B, ch, h, w] -> [B, F, 1, 1]
    if out_act != "identity":
        layers.append(make_activation(out_act))
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def conv_decoder(input_shape, channels: list[int], in_features: int, act: str) -> nn.Sequential:
    """[B, in_features] -> [B, C, H, W] raw outputs (no output activation)."""
    out_ch, height, width = input_shape
    sizes = downsampled_sizes(height, width, len(channels))
    layers = [nn.Unflatten(1, (in_features, 1, 1)),
              nn.ConvTranspose2d(in_features, channels[-1], kernel_size=sizes[-1]), make_activation(act)]
    for i in range(len(channels) - 1, -1, -1):
        (target_h, target_w), (h, w) = sizes[i], sizes[i + 1]
        padding = (target_h - (2 * h - 1), target_w - (2 * w - 1))  # 0 or 1: hits odd and even sizes
        next_ch = channels[i - 1] if i > 0 else out_ch
        layers.append(nn.ConvTranspose2d(channels[i], next_ch, 3, stride=2, padding=1, output_padding=padding))
        if i > 0:
            layers.append(make_activation(act))
    return nn.Sequential(*layers)


class ConvAutoencoder(Autoencoder):
    """The textbook conv AE (1->16->32->64 on MNIST with latent_dim=64), any image size and latent size.
    downsample=maxpool / upsample=unpool|nearest build the pooling variants (aerun.models.pooling)."""

    def __init__(self, input_shape, latent_dim: int = 64, channels=(16, 32), activation: str = "relu",
                 latent_activation: str = "identity", sparsity=None, downsample: str = "stride",
                 upsample: str = "transpose"):
        super().__init__(input_shape, latent_dim, sparsity=sparsity, output_activation="sigmoid")
        channels = [int(c) for c in channels]
        self.latent_activation = latent_activation
        self.switched = upsample == "unpool"
        if upsample == "unpool" and downsample != "maxpool":
            raise ValueError("upsample=unpool needs downsample=maxpool: unpooling uses the pooling switches")
        if downsample == "stride" and upsample == "transpose":  # the textbook net, as checkpoints know it
            self.encoder = conv_encoder(self.input_shape, channels, latent_dim, activation, latent_activation)
            self.decoder = conv_decoder(self.input_shape, channels, latent_dim, activation)
        else:
            from aerun.models.pooling import PoolingEncoder, UpsamplingDecoder

            self.encoder = PoolingEncoder(self.input_shape, channels, latent_dim, activation, latent_activation,
                                          downsample)
            self.decoder = UpsamplingDecoder(self.input_shape, channels, latent_dim, activation, upsample)

    def encode(self, x, labels=None):
        return self.encoder(x)

    def decode_raw(self, z, labels=None):
        return self.decoder(z)

    def forward(self, x, labels=None):
        if not self.switched:
            return super().forward(x, labels)
        z, switches = self.encoder(x, keep_switches=True)  # unpooled where the encoder's maxima were
        return AEOutput(self.decoder(z, switches), z)

    @torch.no_grad()
    def reconstruct(self, x, labels=None):
        return self.to_image(self.forward(x).recon) if self.switched else super().reconstruct(x, labels)


class ConvVAE(VariationalAutoencoder):
    """The conv trunk to `trunk_dim` features, Gaussian heads, and the mirrored decoder.
    Conditional: the one-hot label joins the trunk's features and the code."""

    def __init__(self, input_shape, latent_dim: int = 16, channels=(32, 64), trunk_dim: int = 256,
                 activation: str = "relu", beta: float = 1.0, kl_warmup_epochs: float = 0.0,
                 conditional: bool = False, num_classes: int | None = None):
        super().__init__(input_shape, latent_dim, beta=beta, kl_warmup_epochs=kl_warmup_epochs,
                         conditional=conditional, num_classes=num_classes)
        channels = [int(c) for c in channels]
        self.encoder = conv_encoder(self.input_shape, channels, trunk_dim, activation, activation)
        self.to_stats = nn.Linear(trunk_dim + self.label_dim, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim + self.label_dim, trunk_dim), make_activation(activation))
        self.decoder = conv_decoder(self.input_shape, channels, trunk_dim, activation)

    def encode_stats(self, x, labels=None):
        mu, raw_logvar = self.to_stats(self.with_label(self.encoder(x), labels)).chunk(2, dim=1)
        return mu, self.safe_logvar(raw_logvar)

    def decode_raw(self, z, labels=None):
        return self.decoder(self.from_latent(self.with_label(z, labels)))

