"""Datasets as uint8 tensors: `dataset` (dataset_from_config, load_dataset), `splits`, `noise`,
one reader module per on-disk format (`idx`, `cifar`, `folder`, `arrays`), `own` (your own
data split like the built-in datasets) and `cache` (decoded images, memory-mapped)."""

from aerun.data.dataset import (DATASET_NAMES, OWN_DATASETS, check_available, check_config_available,
                                dataset_from_config, load_dataset)
from aerun.data.noise import NOISE_KINDS, apply_noise, noise_generator
from aerun.data.splits import ImageDataset, Split

__all__ = ["DATASET_NAMES", "NOISE_KINDS", "OWN_DATASETS", "ImageDataset", "Split", "apply_noise", "check_available",
           "check_config_available", "dataset_from_config", "load_dataset", "noise_generator"]
