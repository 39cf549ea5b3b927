"""`aerun anomaly run=<run dir>`: a trained autoencoder as an anomaly detector.

Each test image gets a score (higher = more anomalous) and the scores are read against which
images are anomalies, by protocol (`aerun.analysis.anomaly`):
- one_class: the run was trained with data.include_classes=[k]; the test images of every other
  class are the anomalies (Ruff et al. 2018, Deep SVDD, Table 1);
- held_out: the run was trained with data.exclude_classes=[...]; those classes are the anomalies;
- ood: the run's own test split is normal, `anomaly.ood`'s (another dataset, or a folder / .npz
  of images) is anomalous.
Scores: the reconstruction error (mse, bce), -ELBO and the importance-weighted NLL (models with
a posterior), an RBM's free energy, and the density of the code under a Gaussian mixture fitted
to the training codes. Writes anomaly.json (AUROC / AUPRC per score, per-class means),
scores.npz, roc.png and extremes.png into this command's own run directory; the trained run's
directory is only read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from aerun import runs
from aerun.config import enum_value
from aerun.errors import UserError
from aerun.latent import codes as latent

log = logging.getLogger("aerun.anomaly")

RESULT_FILE = "anomaly.json"
POSTERIOR_SCORES = ("elbo", "iw_nll")


def validate(cfg: DictConfig) -> None:
    from aerun.config.validate import at_least

    run = latent.check_common(cfg)
    opts = cfg.anomaly
    at_least(opts, "anomaly.", 1, "components", "iw_samples", "extremes")
    at_least(opts, "anomaly.", 1, "max_test_samples", none_ok=True)
    info = latent.peek_model(run)
    if info.conditional:
        raise UserError("anomaly: this run's model is conditional: it reconstructs an image from its class, which "
                        "an anomaly detector is not told; score an unconditional run")
    score_names(enum_value(opts.score), info.name, info.is_variational)
    data = runs.upgrade_config(runs.read_run_config(run))["data"]
    if protocol(cfg, data) == "ood":
        _check_ood(cfg, run, data)


def _check_ood(cfg, run: Path, data: dict) -> None:
    """anomaly.ood names a dataset whose files are there, or an existing folder / .npz file."""
    from aerun.data.dataset import BUILTIN_DATASETS, check_available

    name = str(cfg.anomaly.ood)
    if name == data.get("name"):
        raise UserError(f"anomaly.ood={name}: that is the dataset the run was trained on, whose test split is "
                        f"the normal images; name another one, or a folder / .npz of images")
    if name in BUILTIN_DATASETS:
        root = cfg.anomaly.ood_root or runs.data_root(run, data.get("root") or ".", cfg.data.root)
        try:
            check_available(name, root)
        except UserError as exc:
            raise UserError(f"anomaly.ood={name}: {str(exc).split('; ')[0]}; pass anomaly.ood_root=<folder that "
                            f"holds it>") from None
    elif not Path(name).expanduser().exists():
        raise UserError(f"anomaly.ood={name}: not a dataset ({', '.join(BUILTIN_DATASETS)}) nor an existing "
                        f"folder or .npz file")


def score_names(score: str, model_name: str, has_posterior: bool) -> list[str]:
    """The scores `score` asks for on this kind of model, or a one-line UserError."""
    is_rbm = model_name == "RBM"
    if score == "auto":
        return ["free_energy"] if is_rbm else ["elbo"] if has_posterior else ["mse"]
    if score == "all":
        return ["mse", "bce", "density"] + (list(POSTERIOR_SCORES) if has_posterior else []) + \
            (["free_energy"] if is_rbm else [])
    usable = ", ".join(["mse", "bce", "density", *(POSTERIOR_SCORES if has_posterior else [])])
    if score in POSTERIOR_SCORES and not has_posterior:
        raise UserError(f"anomaly.score={score}: needs a model with a posterior q(z|x) (a VAE); this run's "
                        f"{model_name} has none: use {usable}")
    if score == "free_energy" and not is_rbm:
        raise UserError(f"anomaly.score=free_energy: needs an RBM (model=rbm); this run's {model_name} has no free "
                        f"energy: use {usable}")
    return [score]


def protocol(cfg, data: dict) -> str:
    """The protocol the options and the run's class filter name, or a one-line UserError."""
    opts, chosen = cfg.anomaly, enum_value(cfg.anomaly.protocol)
    include, exclude = data.get("include_classes"), data.get("exclude_classes")
    if chosen == "auto":
        chosen = "ood" if opts.ood is not None else "one_class" if include is not None else \
            "held_out" if exclude is not None else None
        if chosen is None:
            labelled = data.get("name") not in ("folder", "npz")  # own data may have no classes at all
            raise UserError("anomaly: this run trained on all of its data (no class filter), so no test image is "
                            "an anomaly: pass anomaly.ood=<dataset, folder or .npz> (out-of-distribution), or "
                            + ("" if labelled else "if its images have classes (class folders, or labels in the "
                                                   ".npz), ") +
                            "train with data.include_classes=[k] (one-class) or data.exclude_classes=[...] (held-out)")
    if chosen != "ood" and opts.ood is not None:
        raise UserError(f"anomaly.ood={opts.ood}: only the ood protocol reads it (protocol is {chosen})")
    needs = {"one_class": ("include_classes", include), "held_out": ("exclude_classes", exclude)}
    if chosen in needs and needs[chosen][1] is None:
        raise UserError(f"anomaly.protocol={chosen}: the run was not trained with data.{needs[chosen][0]} "
                        f"(its data: include_classes={include}, exclude_classes={exclude})")
    if chosen == "ood" and opts.ood is None:
        raise UserError("anomaly.protocol=ood: name the out-of-distribution images with anomaly.ood=<mnist, "
                        "fashion_mnist, cifar10, or a folder / .npz of images>")
    if opts.ood_root is not None and opts.ood is None:
        raise UserError("anomaly.ood_root: has no effect without anomaly.ood")
    return chosen


def run(cfg: DictConfig, job):
    """Score, write the files, print the table; returns the first score's AUROC (the objective)."""
    from aerun.io import write_json

    started = time.time()
    validate(cfg)
    out = job.out_dir
    loaded, device = latent.load_model(cfg)
    chosen = protocol(cfg, loaded.config["data"])
    test = test_images(cfg, loaded, chosen)
    names = score_names(enum_value(cfg.anomaly.score), type(loaded.model).__name__, loaded.model.is_variational)
    scores = {name: compute_score(name, cfg, loaded, device, test) for name in names}
    result = summarise(cfg, loaded, chosen, test, scores)
    result["wall_time_s"] = round(time.time() - started, 2)
    write_json(out / RESULT_FILE, result)
    latent.save_npz(out / "scores.npz", is_anomaly=test["is_anomaly"], labels=test["labels"],
                    **{f"score_{name}": values for name, values in scores.items()})
    _figures(out, test, scores, result["title"], cfg.anomaly.extremes)
    write_json(out / "metrics.json", {"objective": {"name": f"anomaly/{names[0]}_auroc",
                                                    "value": result["scores"][names[0]]["auroc"]},
                                      "anomaly": {f"{n}_{k}": result["scores"][n][k] for n in names
                                                  for k in ("auroc", "auprc")}})
    print(format_table(result))
    latent.report([(out / RESULT_FILE, "AUROC / AUPRC per score, per-class mean scores"),
                   (out / "scores.npz", f"per-image scores, is_anomaly, labels ({len(test['labels'])} images)"),
                   (out / "roc.png", "ROC curve of each score"),
                   (out / "extremes.png", f"most / least anomalous test images by {names[0]}")])
    return result["scores"][names[0]]["auroc"]


def test_images(cfg, loaded, chosen: str) -> dict:
    """{"images" uint8 [N, C, H, W], "labels" [N] (-1 for other-dataset images), "is_anomaly"
    [N] bool, "classes", "train" (the run's training split, for the density fit), "what"}."""
    import torch

    from aerun.data.splits import kept_classes

    d, limit = loaded.config["data"], cfg.anomaly.max_test_samples
    dataset = latent.load_data(cfg, loaded, max_test_samples=limit, filter_test=chosen == "ood")
    images, labels = dataset.test.images, dataset.test.labels.numpy()
    if chosen == "ood":
        other, what = ood_images(cfg, loaded, limit)
        is_anomaly = np.concatenate([np.zeros(len(images), bool), np.ones(len(other), bool)])
        images = torch.cat([images, other])
        labels = np.concatenate([labels, np.full(len(other), -1, dtype=labels.dtype)])
        return {"images": images, "labels": labels, "is_anomaly": is_anomaly, "classes": dataset.classes,
                "train": dataset.train, "normal": f"{d['name']} test", "anomalous": what}
    keep = kept_classes(dataset.classes, d.get("include_classes"), d.get("exclude_classes"), f"data={d['name']}")
    is_anomaly = ~np.isin(labels, keep)
    named = lambda ks: ", ".join(dataset.classes[k] for k in ks)  # noqa: E731
    others = [k for k in range(len(dataset.classes)) if k not in keep]
    return {"images": images, "labels": labels, "is_anomaly": is_anomaly, "classes": dataset.classes,
            "train": dataset.train, "normal": f"{d['name']} test of {named(keep)}",
            "anomalous": f"{d['name']} test of {named(others)}"}


def ood_images(cfg, loaded, limit: int | None):
    """The other images (uint8 [M, C, H, W] in the run's shape) and what they are: a built-in
    dataset's test split, or every image of a folder / .npz file (a folder is resized to fit)."""
    import torch

    from aerun.data.dataset import BUILTIN_DATASETS, load_dataset
    from aerun.data.own import read_source

    name, shape = str(cfg.anomaly.ood), tuple(loaded.input_shape)
    if name in BUILTIN_DATASETS:
        root = cfg.anomaly.ood_root or runs.data_root(loaded.path, loaded.config["data"]["root"], cfg.data.root)
        images, what = load_dataset(name, root, val_size=0, max_test_samples=limit).test.images, f"{name} test"
    else:
        path = Path(cfg.anomaly.ood).expanduser()
        kind = "npz" if path.is_file() else "folder"
        source, test = read_source(kind, path, **({"channels": shape[0], "image_size": list(shape[1:])}
                                                  if kind == "folder" else {}))
        parts = [source.images] + ([test.images] if test is not None else [])
        images = torch.from_numpy(np.concatenate([np.asarray(p) for p in parts])[:limit])
        what = f"{len(images)} images of {path}"
    if tuple(images.shape[1:]) != shape:
        raise UserError(f"anomaly.ood={name}: its images are {tuple(images.shape[1:])}, the run's model takes "
                        f"{shape}; give a folder of images instead (resized to the run's size)")
    return images, what


def compute_score(name: str, cfg, loaded, device, test: dict) -> np.ndarray:
    """One score [N] of every test image, higher = more anomalous."""
    from aerun.analysis import anomaly

    model, images, size = loaded.model, test["images"], cfg.batch_size
    started = time.time()
    if name in ("mse", "bce"):
        values = anomaly.reconstruction_scores(model, images, name, size)
    elif name == "elbo":
        values = anomaly.elbo_scores(model, images, loaded.recon_loss, size, seed=cfg.seed)
    elif name == "iw_nll":
        values = _iw_nll(model, images, loaded.recon_loss, cfg, device)
    elif name == "free_energy":
        values = anomaly.free_energy_scores(model, images, size)
    else:
        train = latent.encode_images(model, test["train"].images, size, device)["codes"]
        codes = latent.encode_images(model, images, size, device)["codes"]
        values = anomaly.code_density_scores(train, codes, cfg.anomaly.components, cfg.seed)
    log.info("score %s: %d images in %.1f s", name, len(values), time.time() - started)
    return np.asarray(values, dtype=np.float64)


def _iw_nll(model, images, recon_loss: str, cfg, device) -> np.ndarray:
    """-log p(x) per image, the importance-weighted bound with anomaly.iw_samples samples."""
    import torch

    from aerun.analysis.likelihood import importance_weighted_bound
    from aerun.engine.step import to_float

    model.eval()
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    out = []
    for start in range(0, len(images), cfg.batch_size):
        x = to_float(images[start:start + cfg.batch_size].to(device))
        bound = importance_weighted_bound(model, x, cfg.anomaly.iw_samples, chunk=4096, recon_loss=recon_loss,
                                          generator=generator)
        out.append(-bound["iw_log_likelihood"].double().cpu())
    return torch.cat(out).numpy()


def summarise(cfg, loaded, chosen: str, test: dict, scores: dict) -> dict:
    """anomaly.json: the protocol, each score's report and the per-class mean scores."""
    from aerun.analysis.anomaly import anomaly_report, auroc

    y, labels, classes = test["is_anomaly"], test["labels"], test["classes"]
    reports = {name: anomaly_report(values, y) for name, values in scores.items()}
    per_class = {}
    for k in sorted(set(labels.tolist())):
        rows = labels == k
        name = classes[k] if 0 <= k < len(classes) else test["anomalous"]
        entry = {"n": int(rows.sum()), "anomaly": bool(y[rows].all())}
        for score, values in scores.items():
            entry[f"mean_{score}"] = float(values[rows].mean())
            if entry["anomaly"]:  # how well this class alone is told from the normal images
                both = rows | ~y
                entry[f"auroc_{score}"] = auroc(values[both], y[both])
        per_class[name] = entry
    model = loaded.model
    title = f"{type(model).__name__} (latent {model.latent_dim}): {test['normal']} vs {test['anomalous']}"
    return {"run": str(loaded.path.resolve()), "protocol": chosen, "title": title, "normal": test["normal"],
            "anomalous": test["anomalous"], "n_images": int(len(y)), "scores": reports, "per_class": per_class,
            "settings": {"components": cfg.anomaly.components, "iw_samples": cfg.anomaly.iw_samples,
                         "seed": cfg.seed, "max_test_samples": cfg.anomaly.max_test_samples}}


def format_table(result: dict) -> str:
    lines = [f"{result['title']} ({result['protocol']}, {result['n_images']} images)", "",
             "| score | AUROC | AUPRC | chance AUPRC | mean normal | mean anomalous |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in result["scores"].items():
        lines.append(f"| {name} | {r['auroc']:.4f} | {r['auprc']:.4f} | {r['anomaly_fraction']:.4f} | "
                     f"{r['mean_score_normal']:.4g} | {r['mean_score_anomalous']:.4g} |")
    anomalous = {k: v for k, v in result["per_class"].items() if v["anomaly"]}
    first = next(iter(result["scores"]))
    if len(anomalous) > 1:
        lines += ["", f"AUROC ({first}) of each anomalous class against the normal images:",
                  "  " + ", ".join(f"{k} {v[f'auroc_{first}']:.3f}" for k, v in anomalous.items())]
    return "\n".join(lines)


def _figures(out: Path, test: dict, scores: dict, title: str, per_row: int) -> None:
    """roc.png (every score) and extremes.png (by the first score): the most anomalous images,
    the least anomalous ones, the normal images scored highest (false alarms) and the anomalies
    scored lowest (misses)."""
    import torch

    from aerun.analysis.anomaly import anomaly_report, roc_curve_points, roc_figure
    from aerun.engine.step import to_float
    from aerun.figures import save_image_grid

    y = test["is_anomaly"]
    curves = {}
    for name, values in scores.items():
        fpr, tpr, _ = roc_curve_points(values, y)
        curves[name] = (fpr, tpr, anomaly_report(values, y)["auroc"])
    roc_figure(out / "roc.png", curves, title if len(title) < 60 else title.split(": ")[-1][:60])
    first = next(iter(scores))
    order = np.argsort(scores[first], kind="stable")
    normal, anomalous = order[~y[order]], order[y[order]]
    rows = [("most anomalous", order[::-1][:per_row]), ("least anomalous", order[:per_row]),
            ("false alarms", normal[::-1][:per_row]), ("missed anomalies", anomalous[:per_row])]
    rows = [(label, idx) for label, idx in rows if len(idx)]
    tiles = []
    for _, idx in rows:  # a short row (fewer normal images than per_row) is padded with blank tiles
        images = to_float(test["images"][torch.as_tensor(idx.copy())])
        tiles += [images, torch.ones(per_row - len(idx), *images.shape[1:])]
    save_image_grid(torch.cat(tiles), out / "extremes.png", nrow=per_row, row_labels=[label for label, _ in rows])
