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

from omegaconf import DictConfig, OmegaConf

from aerun.config import enum_value
from aerun.errors import UserError

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
    from aerun.config.validate import at_least
    from aerun.latent.codes import check_common

    from aerun.latent.codes import peek_model

    run = check_common(cfg)
    if peek_model(run).conditional:
        raise UserError("finetune: this run's model is conditional: its encoder reads the class label, the very thing "
                        "the classifier is to predict; fine-tune an unconditional run")
    _labels_per_class(cfg)
    at_least(cfg.finetune, "finetune.", 1, "steps", "batch_size", "hidden")
    if cfg.finetune.lr <= 0:
        raise UserError(f"finetune.lr: must be > 0, got {cfg.finetune.lr}")


def run(cfg: DictConfig, job):
    from aerun.io import write_json, write_text
    from aerun.latent.codes import load_data, load_model

    validate(cfg)
    out_dir = job.out_dir
    loaded, device = load_model(cfg)
    dataset = load_data(cfg, loaded)
    if not dataset.has_labels:  # refused before any classifier is trained
        raise UserError(f"finetune: run={loaded.path} was trained on data without labels ({dataset.name} "
                        f"{loaded.config['data'].get('path')}), and a classifier needs labels; train on class folders "
                        f"or an array file with labels")
    f = cfg.finetune
    rows = [_compare(cfg, loaded, dataset, per_class, device) for per_class in _labels_per_class(cfg)]
    report = {"run": str(loaded.path), "model": type(loaded.model).__name__, "data": dataset.name,
              "head": enum_value(f.head), "freeze_encoder": bool(f.freeze_encoder), "steps": f.steps,
              "test_images": len(dataset.test), "results": rows}
    write_json(out_dir / "finetune.json", report)
    table = format_table(report)
    write_text(out_dir / "finetune.md", table + "\n")
    _plot(out_dir / "finetune.png", rows, report)
    print(table)
    print(f"\nwrote {out_dir / 'finetune.json'}, finetune.md, finetune.png")
    return rows[-1]["pretrained_accuracy"]


def _compare(cfg, loaded, dataset, per_class: int, device) -> dict:
    """The pretrained and the from-scratch classifier on the same labelled images."""
    import torch

    from aerun import runs
    from aerun.analysis.classifier import EncoderClassifier, accuracy, labelled_subset, train_classifier
    from aerun.build import build_model

    f, num_classes = cfg.finetune, len(dataset.classes)
    subset = labelled_subset(dataset.train.labels, per_class, num_classes, cfg.seed)
    images, labels = dataset.train.images[subset], dataset.train.labels[subset]
    row = {"labels_per_class": per_class, "labelled_images": len(subset)}
    for variant in ("pretrained", "scratch"):
        torch.manual_seed(cfg.seed)
        if variant == "pretrained":
            encoder = runs.load_run(loaded.path, device=device).model  # a fresh copy for every subset
            freeze = bool(f.freeze_encoder)
        else:
            encoder = build_model(loaded.config["model"], loaded.input_shape,
                                  num_classes=loaded.checkpoint.get("num_classes")).to(device)
            freeze = False  # from scratch, every layer learns
        model = EncoderClassifier(encoder, num_classes, enum_value(f.head), f.hidden, freeze).to(device)
        train_classifier(model, images, labels, f.steps, f.batch_size, f.lr, cfg.seed, device)
        row[f"{variant}_accuracy"] = accuracy(model, dataset.test.images, dataset.test.labels, cfg.batch_size, device)
    row["gain"] = row["pretrained_accuracy"] - row["scratch_accuracy"]
    log.info("%d labels per class: pretrained %.4f, from scratch %.4f", per_class,
             row["pretrained_accuracy"], row["scratch_accuracy"])
    return row


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
    """Accuracy against labels per class: a curve for several sizes, a bar pair for one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from aerun.io import atomic_path

    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [r["labels_per_class"] for r in rows]
    pretrained, scratch = [r["pretrained_accuracy"] for r in rows], [r["scratch_accuracy"] for r in rows]
    if len(xs) > 1:
        ax.plot(xs, pretrained, "o-", label="pretrained encoder")
        ax.plot(xs, scratch, "s--", label="from scratch")
        ax.set_xscale("log")
        ax.set_xlabel("labels per class")
        ax.legend()
    else:
        bars = ax.bar(["pretrained encoder", "from scratch"], [pretrained[0], scratch[0]], color=["C0", "C1"])
        ax.bar_label(bars, fmt="%.3f")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(f"{xs[0]} labels per class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{report['model']} on {report['data']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
