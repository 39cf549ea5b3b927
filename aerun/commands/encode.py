"""`aerun encode run=<dir> split=test`: the latent codes of one split of the run's data.

Writes, into this command's own run directory:
- codes.npz: `codes` [N, latent_dim] (the mean code for VAEs), `labels` [N], and for VAEs
  `mu` and `logvar` [N, latent_dim];
- latent.png: the codes coloured by class, with a legend (above 2 dimensions, a PCA or
  t-SNE projection: encode.projection); in one colour for unlabelled data (labels all -1);
and one TensorBoard embedding-projector entry (codes, class names, thumbnails) under the
trained run's tensorboard/, so `tensorboard --logdir <run>/tensorboard` shows it beside
the training curves. Nothing else in the run directory changes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from aerun.config import enum_value

from aerun.errors import UserError
from aerun.figures import project_2d, scatter_plot
from aerun.latent import codes as latent
from aerun.latent.projector import add_projector_entry

log = logging.getLogger("aerun.encode")


def validate(cfg: DictConfig) -> None:
    latent.check_common(cfg)
    for key in ("plot_max_points", "embedding_max_points"):
        if cfg.encode[key] < 1:
            raise UserError(f"encode.{key}: must be >= 1, got {cfg.encode[key]}")
    if cfg.encode.kmeans is not None and cfg.encode.kmeans < 2:
        raise UserError(f"encode.kmeans: the number of clusters must be >= 2 (or null), got {cfg.encode.kmeans}")


def _write_clusters(out_dir: Path, clusters, labels, dataset, split_name: str) -> tuple[Path, str]:
    """kmeans.json: the clusters against the classes (confusion, NMI, ARI, matched accuracy)."""
    from aerun.analysis.features import cluster_report, format_confusion
    from aerun.io import write_json

    k = int(clusters.max()) + 1
    if not dataset.has_labels:  # no classes to compare with: the cluster sizes alone
        sizes = [int((clusters == c).sum()) for c in range(k)]
        write_json(out_dir / "kmeans.json", {"k": k, "n": len(clusters), "sizes": sizes})
        return out_dir / "kmeans.json", f"{k} k-means clusters (sizes; the data has no labels to compare with)"
    report = cluster_report(clusters, labels, dataset.classes)
    write_json(out_dir / "kmeans.json", report)
    print(f"k-means (k={k}) on the {split_name} codes: NMI {report['nmi']:.3f}, ARI {report['ari']:.3f}, "
          f"matched accuracy {report['matched_accuracy']:.3f}")
    print(format_confusion(report))
    return out_dir / "kmeans.json", f"k={k} clusters against the classes: confusion, NMI, ARI, matched accuracy"


def run(cfg: DictConfig, job):
    encode(cfg, job.out_dir)


def encode(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Encode `cfg.split` of the run's data; returns the paths written and the codes' shape."""
    started = time.time()
    validate(cfg)
    out_dir = Path(out_dir)
    split_name = enum_value(cfg.split)
    loaded, device = latent.load_model(cfg)
    model = loaded.model
    dataset = latent.load_data(cfg, loaded)
    split = latent.get_split(dataset, split_name)

    arrays = latent.encode_images(model, split.images, cfg.batch_size, device, split.labels)
    codes, labels = arrays["codes"], split.labels.numpy()
    clusters = None
    if cfg.encode.kmeans is not None:
        from aerun.analysis.features import kmeans_clusters

        clusters, _ = kmeans_clusters(codes, cfg.encode.kmeans, cfg.seed)
        arrays["clusters"] = clusters
    latent.save_npz(out_dir / "codes.npz", labels=labels, **arrays)

    shown = latent.subset(len(codes), cfg.encode.plot_max_points, cfg.seed)
    projection = enum_value(cfg.encode.projection)
    points, xlabel, ylabel, what = project_2d(codes[shown], projection, cfg.seed,
                                              on_sphere=model.latent_geometry == "sphere")
    if model.is_variational:
        what += " (posterior means)"
    title = f"{dataset.name} {split_name} split: {what} ({len(shown)} images)"
    scatter_plot(out_dir / "latent.png", points, labels[shown], dataset.classes, title, xlabel, ylabel,
                 hammer_outline=what.startswith("Hammer"))

    written = [(out_dir / "codes.npz", f"codes {codes.shape[0]} x {codes.shape[1]}, labels"
                + (", mu, logvar" if model.is_variational else "") + f"; {split_name} split"),
               (out_dir / "latent.png", f"{what}, " + ("coloured by class" if dataset.has_labels else
                                                        "one colour (the data has no labels)"))]
    result = {"codes": out_dir / "codes.npz", "plot": out_dir / "latent.png", "shape": codes.shape}
    if clusters is not None:
        written.append(_write_clusters(out_dir, clusters, labels, dataset, split_name))
        result["kmeans"] = out_dir / "kmeans.json"
    if cfg.encode.embedding:
        chosen = latent.subset(len(codes), cfg.encode.embedding_max_points, cfg.seed)
        step = int(loaded.checkpoint.get("global_step") or 0)
        thumbnails = split.images[chosen].float() / 255.0  # [M, C, H, W] in [0, 1]
        # the projector's label per point: its class, or for unlabelled data its index in the split
        names = ([dataset.classes[i] for i in labels[chosen]] if dataset.has_labels
                 else [f"{split_name} {i}" for i in chosen])
        entry = add_projector_entry(loaded.path, f"latent_{split_name}", step, codes[chosen], names, thumbnails)
        written.append((entry, f"TensorBoard projector entry, {len(chosen)} codes with thumbnails"))
        result["embedding"] = entry
    latent.report(written)
    log.info("encoded %d %s images in %.1f s", len(codes), split_name, time.time() - started)
    return result
