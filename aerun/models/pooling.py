"""Conv encoders that downsample by max-pooling (keeping the switches, Zeiler & Fergus 2014) and
decoders that upsample by unpooling with those switches, by nearest-neighbour resizing, or by
transposed convolutions. `model=cnn_ae model.downsample=maxpool model.upsample=unpool|nearest|transpose`.

Every stage keeps the sizes of the textbook stride-2 net (ceil(h / 2) per stage), so any image
size works. A code decoded on its own (generate, interpolate) has no input to take switches
from; it is unpooled with fixed switches, the top-left cell of every window.
"""

from __future__ import annotations

import torch
from torch import nn

from aerun.models.layers import activation as make_activation


def stage_sizes(height: int, width: int, n_layers: int) -> list[tuple[int, int]]:
    """Spatial sizes after each halving (ceil), input size first: 28 -> 14 -> 7, 29 -> 15 -> 8."""
    sizes = [(height, width)]
    for _ in range(n_layers):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class PoolingEncoder(nn.Module):
    """[B, C, H, W] -> [B, F]: (3x3 conv, activation, 2x2 max-pool) per stage, then one conv over
    the whole remaining map. `forward(x, keep_switches=True)` also returns the pooling indices."""

    def __init__(self, input_shape, channels: list[int], out_features: int, act: str, out_act: str,
                 downsample: str = "maxpool"):
        super().__init__()
        in_ch, height, width = input_shape
        self.sizes = stage_sizes(height, width, len(channels))
        self.downsample = downsample
        blocks = []
        for ch in channels:
            stride = 2 if downsample == "stride" else 1
            blocks.append(nn.Sequential(nn.Conv2d(in_ch, ch, 3, stride=stride, padding=1), make_activation(act)))
            in_ch = ch
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, ceil_mode=True, return_indices=True)
        head = [nn.Conv2d(in_ch, out_features, kernel_size=self.sizes[-1])]  # [B, ch, h, w] -> [B, F, 1, 1]
        if out_act != "identity":
            head.append(make_activation(out_act))
        self.head = nn.Sequential(*head, nn.Flatten())

    def forward(self, x: torch.Tensor, keep_switches: bool = False):
        switches = []
        for block in self.blocks:
            x = block(x)
            if self.downsample == "maxpool":
                x, indices = self.pool(x)  # [B, ch, h, w] -> [B, ch, ceil(h/2), ceil(w/2)]
                switches.append(indices)
        z = self.head(x)
        return (z, switches) if keep_switches else z


class UpsamplingDecoder(nn.Module):
    """[B, F] -> [B, C, H, W] raw outputs, mirroring the encoder's stages with `upsample`:
    transpose (stride-2 ConvTranspose), unpool (MaxUnpool2d with switches, then a 3x3 conv) or
    nearest (nearest-neighbour resize, then a 3x3 conv)."""

    def __init__(self, input_shape, channels: list[int], in_features: int, act: str, upsample: str):
        super().__init__()
        out_ch, height, width = input_shape
        self.sizes = stage_sizes(height, width, len(channels))
        self.upsample = upsample
        self.head = nn.Sequential(nn.Unflatten(1, (in_features, 1, 1)),
                                  nn.ConvTranspose2d(in_features, channels[-1], kernel_size=self.sizes[-1]),
                                  make_activation(act))
        stages = []
        for i in range(len(channels) - 1, -1, -1):
            (th, tw), (h, w) = self.sizes[i], self.sizes[i + 1]
            next_ch = channels[i - 1] if i > 0 else out_ch
            if upsample == "transpose":
                conv = nn.ConvTranspose2d(channels[i], next_ch, 3, stride=2, padding=1,
                                          output_padding=(th - (2 * h - 1), tw - (2 * w - 1)))
            else:
                conv = nn.Conv2d(channels[i], next_ch, 3, padding=1)
            stages.append(nn.Sequential(conv, make_activation(act)) if i > 0 else nn.Sequential(conv))
        self.stages = nn.ModuleList(stages)
        self.unpool = nn.MaxUnpool2d(2)

    def forward(self, z: torch.Tensor, switches: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.head(z)
        n = len(self.stages)
        for k, stage in enumerate(self.stages):
            i = n - 1 - k  # the encoder stage this one mirrors
            size = self.sizes[i]
            if self.upsample == "unpool":
                indices = switches[i] if switches is not None else fixed_switches(x, size)
                x = self.unpool(x, indices, output_size=size)
            elif self.upsample == "nearest":
                x = nn.functional.interpolate(x, size=size, mode="nearest")
            x = stage(x)
        return x


def fixed_switches(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pooling indices that pick the top-left cell of every 2x2 window of a `size` map, for x [B, C, h, w]."""
    b, c, h, w = x.shape
    rows = (2 * torch.arange(h, device=x.device)).clamp_max(size[0] - 1)
    cols = (2 * torch.arange(w, device=x.device)).clamp_max(size[1] - 1)
    flat = rows[:, None] * size[1] + cols[None, :]  # [h, w] into the flattened [H * W] map
    return flat.expand(b, c, h, w).contiguous()
