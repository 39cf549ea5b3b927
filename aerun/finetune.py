"""`aerun finetune run=<AE run>`: does unsupervised pretraining help a classifier with few labels?

A classifier made of the run's encoder and a new head (linear or a small MLP) is trained
on `labels_per_class` labelled training images per class, beside the same classifier
trained from scratch (fresh encoder, every layer trained) on the same images for the
same number of steps. Both are scored on the whole test split. Writes finetune.json,
finetune.md and finetune.png into this command's own run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from aerun import latent, runs
from aerun.errors import UserError
from aerun.io import atomic_path, write_json, write_text

log = logging.getLogger("aerun.finetune")


def _labels_per_class(cfg) -> list[int]:
    value = cfg.labels_per_class
    values = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else [value]
    try:
        values = [int(v) for v in values]
    except (TypeError, ValueError):
        raise UserError(f"labels_per_class={value}: must be a number or a list of numbers, e.g. "
                        f"labels_per_class=100 or 'labels_per_class=[10,100,1000]'") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"labels_per_class={value}: every value must be >= 1")
    return sorted(set(values))


def validate(cfg: DictConfig) -> None:
    latent.check_common(cfg)
    _labels_per_class(cfg)
    f = cfg.finetune
    if f.steps < 1:
        raise UserError(f"finetune.steps: must be >= 1, got {f.steps}")
    if f.lr <= 0:
        raise UserError(f"finetune.lr: must be > 0, got {f.lr}")
    if f.batch_size < 1:
        raise UserError(f"finetune.batch_size: must be >= 1, got {f.batch_size}")
    if f.hidden < 1:
        raise UserError(f"finetune.hidden: must be >= 1, got {f.hidden}")


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
    from aerun.engine import to_float

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
    from aerun.engine import to_float

    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size].to(device))
        correct += (model(x).argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / len(images)


def run(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    validate(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    loaded, device = latent.load_model(cfg)
    dataset = latent.load_data(cfg, loaded)
    f = cfg.finetune
    num_classes = len(dataset.classes)
    train_labels = dataset.train.labels
    rows = []
    for per_class in _labels_per_class(cfg):
        subset = labelled_subset(train_labels, per_class, num_classes, cfg.seed)
        images, labels = dataset.train.images[subset], train_labels[subset]
        row = {"labels_per_class": per_class, "labelled_images": len(subset)}
        for variant in ("pretrained", "scratch"):
            torch.manual_seed(cfg.seed)
            if variant == "pretrained":
                encoder = runs.load_run(loaded.path, device=device).model  # a fresh copy for every subset
                freeze = bool(f.freeze_encoder)
            else:
                encoder = runs.build_model(loaded.config["model"], loaded.input_shape).to(device)
                freeze = False  # from scratch, every layer learns
            model = EncoderClassifier(encoder, num_classes, latent.enum_value(f.head), f.hidden, freeze).to(device)
            train_classifier(model, images, labels, f.steps, f.batch_size, f.lr, cfg.seed, device)
            row[f"{variant}_accuracy"] = accuracy(model, dataset.test.images, dataset.test.labels,
                                                  cfg.batch_size, device)
        row["gain"] = row["pretrained_accuracy"] - row["scratch_accuracy"]
        log.info("%d labels per class: pretrained %.4f, from scratch %.4f", per_class,
                 row["pretrained_accuracy"], row["scratch_accuracy"])
        rows.append(row)

    report = {"run": str(loaded.path), "model": type(loaded.model).__name__, "data": dataset.name,
              "head": latent.enum_value(f.head), "freeze_encoder": bool(f.freeze_encoder), "steps": f.steps,
              "test_images": len(dataset.test), "results": rows}
    write_json(out_dir / "finetune.json", report)
    table = format_table(report)
    write_text(out_dir / "finetune.md", table + "\n")
    _plot(out_dir / "finetune.png", rows, report)
    print(table)
    print(f"\nwrote {out_dir / 'finetune.json'}, finetune.md, finetune.png")
    return rows[-1]["pretrained_accuracy"]


def format_table(report: dict) -> str:
    frozen = "frozen" if report["freeze_encoder"] else "fine-tuned"
    lines = [f"{report['model']} encoder ({frozen}) + {report['head']} head vs the same classifier from scratch; "
             f"{report['steps']} steps; accuracy on {report['test_images']} test images",
             "", "| labels per class | pretrained | from scratch | gain |", "|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['labels_per_class']} | {r['pretrained_accuracy']:.4f} | {r['scratch_accuracy']:.4f} "
                     f"| {r['gain']:+.4f} |")
    return "\n".join(lines)


def _plot(path: Path, rows: list[dict], report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    xs = [r["labels_per_class"] for r in rows]
    ax.plot(xs, [r["pretrained_accuracy"] for r in rows], "o-", label="pretrained encoder")
    ax.plot(xs, [r["scratch_accuracy"] for r in rows], "s--", label="from scratch")
    if len(xs) > 1:
        ax.set_xscale("log")
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{report['model']} on {report['data']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
