"""The judge: a small CNN classifier trained once per dataset, whose penultimate features and
predicted labels score generated images (`aerun.analysis.quality`).

A Frechet distance means something only against a fixed feature extractor, so the judge is
trained on the real training split (train + val of the dataset handed in: load it with
`val_size=0`), tested on the real test split, and cached under `$AERUN_CACHE` (default
`~/.cache/aerun`; the data folders may be read-only) in `judge/<key>.pt`. The key is the
dataset name, a sha256 of the decoded uint8 images and int64 labels of every split, in order
(decoded content, not source files: a .gz and a raw copy of the same data share one judge),
and JUDGE_VERSION, which changes whenever the architecture or its training does. Nothing here
loads or downloads data: it takes an `ImageDataset`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from aerun.errors import StorageError, UserError

log = logging.getLogger("aerun.analysis")

JUDGE_VERSION = 1
FEATURE_DIM = 128


class JudgeCNN(nn.Module):
    """[B, C, H, W] in [0, 1] -> logits; `features` gives the FEATURE_DIM penultimate units.
    Two 5x5 conv blocks (LeNet-like, ~3M multiply-adds per 28x28 image: minutes on a CPU)."""

    def __init__(self, image_shape, n_classes: int, feature_dim: int = FEATURE_DIM):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        self.image_shape = (c, h, w)
        self.n_classes = int(n_classes)
        self.feature_dim = int(feature_dim)
        self.test_accuracy: float | None = None  # set once tested (quality.json reports it)

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 5, padding=2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

        self.conv = nn.Sequential(*block(c, 16), *block(16, 32))
        flat = 32 * (h // 4) * (w // 4)
        self.feature_head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(flat, feature_dim), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(feature_dim, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_head(self.conv(x * 2 - 1))  # [B, C, H, W] -> [B, F]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # [B, F] -> [B, classes]


def check_shape(model: JudgeCNN, images) -> None:
    """Refuse images of another (C, H, W) than the judge was trained on: its features would be
    meaningless (or the network would fail with a shape error deep inside)."""
    shape = tuple(int(s) for s in images.shape[1:])
    if shape != model.image_shape:
        raise UserError(f"the judge was trained on {model.image_shape} images, these are {shape}: score samples "
                        f"with the judge of the dataset they imitate")


def _as_float(images) -> torch.Tensor:
    """uint8 or float, numpy or torch, [N, C, H, W] -> float32 tensor in [0, 1]."""
    x = torch.as_tensor(images)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def judge_outputs(model: JudgeCNN, images, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, F] float32, predicted labels [N] int64), both on the CPU."""
    check_shape(model, images)
    model.eval()
    device = next(model.parameters()).device
    feats, preds = [torch.zeros(0, model.feature_dim)], [torch.zeros(0, dtype=torch.long)]
    for start in range(0, len(images), batch_size):
        f = model.features(_as_float(images[start:start + batch_size]).to(device))
        feats.append(f.float().cpu())
        preds.append(model.classifier(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def judge_features(model: JudgeCNN, images_float, batch_size: int = 512) -> torch.Tensor:
    """Penultimate activations [N, F] of float images [N, C, H, W] in [0, 1]."""
    return judge_outputs(model, images_float, batch_size)[0]


def judge_predict(model: JudgeCNN, images_float, batch_size: int = 512) -> torch.Tensor:
    """Predicted class labels [N] of float images [N, C, H, W] in [0, 1]."""
    return judge_outputs(model, images_float, batch_size)[1]


def _shifted(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image of the batch translated by up to `max_shift` pixels (zero fill): cheap
    augmentation that takes the judge past 99% on MNIST in a few epochs."""
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)  # [B, C, H + 2s, W + 2s]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b, 1), generator=generator).to(x.device)
    rows, cols = dy + torch.arange(h, device=x.device), dx + torch.arange(w, device=x.device)  # [B, H], [B, W]
    # one gather: [B, H, W, C] (the advanced indices come first), back to [B, C, H, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_judge(dataset, device, epochs: int = 4, seed: int = 0, batch_size: int = 128,
                lr: float = 2e-3) -> tuple[JudgeCNN, float]:
    """Train a JudgeCNN with Adam (one-cycle learning rate) on train + val, return it with
    its accuracy on the test split. Seeded; the global torch RNG is left as it was."""
    device = torch.device(device)
    images = torch.cat([dataset.train.images, dataset.val.images]).to(device)  # uint8 [N, C, H, W]
    labels = torch.cat([dataset.train.labels, dataset.val.labels]).to(device)
    n_classes = max(len(dataset.classes), int(labels.max()) + 1)
    generator = torch.Generator().manual_seed(seed)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        model = JudgeCNN(dataset.image_shape, n_classes).to(device)
        steps_per_epoch = -(-len(images) // batch_size)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
        started = time.time()
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), batch_size):
                idx = order[start:start + batch_size].to(device)
                x = _shifted(_as_float(images[idx]), generator)  # [B, C, H, W] on the device
                loss = nn.functional.cross_entropy(model(x), labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            log.info("judge epoch %d/%d: loss %.4f (%.0f s)", epoch + 1, epochs, loss.item(), time.time() - started)
    predicted = judge_predict(model, dataset.test.images)  # on the CPU
    accuracy = float((predicted == dataset.test.labels.cpu()).float().mean()) if len(dataset.test) else float("nan")
    model.test_accuracy = accuracy
    return model, accuracy


def dataset_checksum(dataset) -> str:
    """sha256 of every split's uint8 image bytes and int64 labels (with their shapes), in order:
    ~0.2 s for MNIST. Another split of the same files changes it (load with val_size=0)."""
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.val, dataset.test):
        for tensor, dtype in ((split.images, torch.uint8), (split.labels, torch.int64)):
            array = tensor.to("cpu", dtype).contiguous().numpy()
            digest.update(str(array.shape).encode())
            digest.update(array.reshape(-1).view("uint8"))  # the bytes themselves, no copy
    return digest.hexdigest()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where cached judges live: `cache_dir`, else $AERUN_CACHE, else ~/.cache/aerun."""
    root = cache_dir if cache_dir is not None else os.environ.get("AERUN_CACHE") or Path.home() / ".cache" / "aerun"
    return Path(root).expanduser()


def cache_key(dataset) -> str:
    return f"{dataset.name}-{dataset_checksum(dataset)[:20]}-v{JUDGE_VERSION}"


def save_judge(model: JudgeCNN, path: Path, meta: dict) -> None:
    """state_dict + plain metadata (weights_only-loadable), to a temp file, then os.replace."""
    from aerun.io import atomic_path

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)


def load_judge(path: Path, device) -> tuple[JudgeCNN, dict]:
    """The judge saved at `path`, rebuilt from its own metadata on `device`."""
    saved = torch.load(path, map_location=device, weights_only=True)
    meta = saved["meta"]
    if meta.get("version") != JUDGE_VERSION:
        raise ValueError(f"judge version {meta.get('version')} is not {JUDGE_VERSION}")
    model = JudgeCNN(meta["image_shape"], meta["n_classes"]).to(device)
    model.load_state_dict(saved["state_dict"])
    model.test_accuracy = meta["test_accuracy"]
    return model.eval(), meta


def load_or_train_judge(dataset, device, cache_dir=None, force: bool = False, epochs: int = 4,
                        seed: int = 0) -> tuple[JudgeCNN, dict]:
    """The cached judge of `dataset` (trained and cached first when there is none, when the
    cached file cannot be read, or with `force`; `epochs` and `seed` matter only then). A cache
    that cannot be written is a warning: the judge is still returned.
    info: test_accuracy, cache_path, trained_now, image_shape, key."""
    key = cache_key(dataset)
    path = cache_root(cache_dir) / "judge" / f"{key}.pt"
    info = {"key": key, "cache_path": str(path), "image_shape": list(dataset.image_shape)}
    if path.is_file() and not force:
        try:
            model, meta = load_judge(path, device)
            log.info("judge for %s loaded from %s (test accuracy %.4f)", dataset.name, path, meta["test_accuracy"])
            return model, {**info, "test_accuracy": meta["test_accuracy"], "trained_now": False}
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: train a new one over it
            log.warning("the cached judge %s cannot be read (%s): training a new one", path, exc)
    started = time.time()
    model, accuracy = train_judge(dataset, device, epochs=epochs, seed=seed)
    meta = {"version": JUDGE_VERSION, "dataset": dataset.name, "key": key, "image_shape": list(model.image_shape),
            "n_classes": model.n_classes, "test_accuracy": accuracy, "epochs": epochs, "seed": seed,
            "train_seconds": time.time() - started}
    try:
        save_judge(model, path, meta)
    except StorageError as exc:
        log.warning("the judge could not be cached (%s); set AERUN_CACHE to a writable folder", exc)
    log.info("judge for %s trained in %.0f s: test accuracy %.4f", dataset.name, meta["train_seconds"], accuracy)
    return model.eval(), {**info, "test_accuracy": accuracy, "trained_now": True}
