"""A classifier on an autoencoder's encoder: the "pretrain, then fine-tune with few labels" test."""

from __future__ import annotations

import torch
from torch import nn

from aerun.engine.step import to_float


class EncoderClassifier(nn.Module):
    """encoder (an Autoencoder's encode) -> head -> class logits."""

    def __init__(self, autoencoder, num_classes: int, head: str, hidden: int, freeze_encoder: bool):
        super().__init__()
        self.autoencoder = autoencoder
        self.freeze_encoder = freeze_encoder
        autoencoder.requires_grad_(not freeze_encoder)
        d = autoencoder.latent_dim
        # Codes come at any scale (an AE's are unnormalised): standardise them, as a linear probe does.
        self.head = nn.Sequential(nn.BatchNorm1d(d, affine=False), nn.Linear(d, num_classes)) if head == "linear" \
            else nn.Sequential(nn.BatchNorm1d(d, affine=False), nn.Linear(d, hidden), nn.ReLU(),
                               nn.Linear(hidden, num_classes))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.autoencoder.eval()
        return self

    def forward(self, x):
        return self.head(self.autoencoder.encode(x))  # [B, C, H, W] -> [B, D] -> [B, classes]


def labelled_subset(labels: torch.Tensor, per_class: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` random images of each class (fewer if a class has fewer)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen)


def train_classifier(model: EncoderClassifier, images, labels, steps: int, batch_size: int, lr: float,
                     seed: int, device) -> None:
    """`steps` Adam steps on random batches of the labelled images (with replacement)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        x, y = to_float(images[idx].to(device)), labels[idx].to(device)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, images, labels, batch_size: int, device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size].to(device))
        correct += (model(x).argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / len(images)


