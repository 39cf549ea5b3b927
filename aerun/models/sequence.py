"""Sequence autoencoders: an image read as a sequence of its rows (MNIST: 28 steps of 28 values,
CIFAR: 32 steps of 3 x 32), encoded to a fixed code and decoded back to the rows.

cell=lstm | gru  the encoder's last hidden state -> the code; the decoder is the same kind of
                 RNN, started from the code and fed the code at every step.
cell=transformer rows -> d_model with sinusoidal positional encodings -> a transformer encoder
                 -> mean over steps -> the code; the decoder's queries are the positional
                 encodings plus the code, through a second (non-causal) transformer encoder.
`seq_ae` is the plain autoencoder, `seq_vae` the same networks with a Gaussian posterior.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aerun.models.base import Autoencoder
from aerun.models.layers import activation as make_activation
from aerun.models.variational import VariationalAutoencoder


def positional_encoding(steps: int, dim: int) -> torch.Tensor:
    """The sinusoidal encodings of Vaswani et al. 2017: [steps, dim]."""
    position = torch.arange(steps, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(steps, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class SequenceNetworks(nn.Module):
    """The encoder [B, C, H, W] -> [B, out_features] and decoder [B, code] -> [B, C, H, W] (raw)."""

    def __init__(self, input_shape, out_features: int, code_dim: int, cell: str, hidden: int, layers: int,
                 heads: int, dropout: float):
        super().__init__()
        c, h, w = input_shape
        self.shape, self.steps, self.row = (c, h, w), h, c * w
        self.cell = cell
        if cell == "transformer":
            self.embed = nn.Linear(self.row, hidden)
            self.register_buffer("positions", positional_encoding(h, hidden), persistent=False)

            def block():
                layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout,
                                                   batch_first=True)
                return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

            self.encoder, self.decoder = block(), block()
            self.from_code = nn.Linear(code_dim, hidden)
        else:
            rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
            self.encoder = rnn(self.row, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
            self.decoder = rnn(code_dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
            self.from_code = nn.Linear(code_dim, layers * hidden)
        self.hidden, self.layers = hidden, layers
        self.to_code = nn.Linear(hidden, out_features)
        self.to_row = nn.Linear(hidden, self.row)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, H, C * W]: one step per image row, all channels of the row together."""
        return x.permute(0, 2, 1, 3).reshape(x.shape[0], self.steps, self.row)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.rows(x)
        if self.cell == "transformer":
            summary = self.encoder(self.embed(seq) + self.positions).mean(1)  # [B, H, d] -> [B, d]
        else:
            _, state = recurrent(self.encoder, seq)
            summary = (state[0] if self.cell == "lstm" else state)[-1]  # the last layer's last hidden state
        return self.to_code(summary)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        if self.cell == "transformer":
            queries = self.positions.expand(b, -1, -1) + self.from_code(z)[:, None]  # [B, H, d]
            out = self.decoder(queries)
        else:
            h0 = torch.tanh(self.from_code(z)).view(b, self.layers, self.hidden).transpose(0, 1).contiguous()
            state = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
            out, _ = recurrent(self.decoder, z[:, None].expand(b, self.steps, z.shape[1]).contiguous(), state)
        rows = self.to_row(out)  # [B, H, C * W]
        c, h, w = self.shape
        return rows.view(b, h, c, w).permute(0, 2, 1, 3)  # -> [B, C, H, W]


def recurrent(rnn: nn.Module, seq: torch.Tensor, state=None):
    """An LSTM / GRU over `seq`. Under bf16 autocast on a CPU, oneDNN may have no recurrent kernel
    for that CPU ("could not create a primitive descriptor for the LSTM forward propagation
    primitive"): the recurrence then runs in float32, the layers around it still in bf16."""
    if seq.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            if state is not None:
                state = tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()
            return rnn(seq.float(), state)
    return rnn(seq, state)


class SequenceAutoencoder(Autoencoder):
    def __init__(self, input_shape, latent_dim: int = 32, cell: str = "lstm", hidden: int = 256, layers: int = 1,
                 heads: int = 4, dropout: float = 0.0, latent_activation: str = "identity", sparsity=None):
        super().__init__(input_shape, latent_dim, sparsity=sparsity, output_activation="sigmoid")
        self.latent_activation = latent_activation
        self.net = SequenceNetworks(self.input_shape, latent_dim, latent_dim, cell, hidden, layers, heads, dropout)
        self.code_activation = make_activation(latent_activation)

    def encode(self, x, labels=None):
        return self.code_activation(self.net.encode(x))

    def decode_raw(self, z, labels=None):
        return self.net.decode(z)


class SequenceVAE(VariationalAutoencoder):
    def __init__(self, input_shape, latent_dim: int = 16, cell: str = "lstm", hidden: int = 256, layers: int = 1,
                 heads: int = 4, dropout: float = 0.0, beta: float = 1.0, kl_warmup_epochs: float = 0.0):
        super().__init__(input_shape, latent_dim, beta=beta, kl_warmup_epochs=kl_warmup_epochs)
        self.net = SequenceNetworks(self.input_shape, 2 * latent_dim, latent_dim, cell, hidden, layers, heads, dropout)

    def encode_stats(self, x, labels=None):
        mu, raw_logvar = self.net.encode(x).chunk(2, dim=1)
        return mu, self.safe_logvar(raw_logvar)

    def decode_raw(self, z, labels=None):
        return self.net.decode(z)
