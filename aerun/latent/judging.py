"""The judge of a run's dataset (aerun.analysis.judge), trained once per dataset and cached, and
the quality of generated images measured in its feature space (aerun.analysis.quality)."""

from __future__ import annotations

import logging

from aerun import runs
from aerun.errors import UserError

log = logging.getLogger("aerun.judge")


def judge_data(d: dict, seed: int, root: str, name: str | None = None):
    """The whole dataset a judge is trained on: every training image (val_size=0), no class
    filter, no size limit (the same judge serves every run on that dataset)."""
    from aerun.data import dataset_from_config

    full = {**d, "val_size": 0, "max_train_samples": None, "max_test_samples": None}
    for key in ("include_classes", "exclude_classes"):
        if key in full:
            full[key] = None
    if name is not None:
        full["name"] = name
    return dataset_from_config(full, seed, root=root, download=False)


def judge_for(d: dict, seed: int, root: str, device, cache_dir=None, force: bool = False, epochs: int = 4):
    """(judge, info, dataset): the cached judge of this dataset, trained first if there is none."""
    from aerun.analysis.judge import load_or_train_judge, cache_key, cache_root

    dataset = judge_data(d, seed, root)
    if not dataset.classes:
        raise UserError(f"{d['name']}: the judge is a classifier of the dataset's classes, and this dataset has no "
                        f"labels")
    if not (cache_root(cache_dir) / "judge" / f"{cache_key(dataset)}.pt").is_file() or force:
        log.info("training the judge for %s (once: it is cached under %s; a few CPU minutes)", dataset.name,
                 cache_root(cache_dir))
    model, info = load_or_train_judge(dataset, device, cache_dir=cache_dir, force=force, epochs=epochs, seed=seed)
    return model, info, dataset


def sample_quality_report(cfg, loaded, images, device) -> dict:
    """quality.json: the samples against the test split in the judge's features."""
    from aerun.analysis.quality import sample_quality
    from aerun.engine.step import to_float

    d = loaded.config["data"]
    root = runs.data_root(loaded.path, d["root"], cfg.data.root)
    judge, info, dataset = judge_for(d, loaded.config.get("seed", 0), root, device, cfg.generate.judge_cache)
    quality = sample_quality(judge, images, to_float(dataset.test.images), cfg.batch_size, len(dataset.classes),
                             k=cfg.generate.quality_k)
    quality["judge"] = info
    quality["reference"] = f"the {dataset.name} test split ({len(dataset.test)} images)"
    return quality
