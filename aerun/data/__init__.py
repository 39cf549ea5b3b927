"""Datasets as in-memory uint8 tensors: `dataset` (load_dataset), `splits`, `noise`, and one
reader module per on-disk format (`idx`, `cifar`)."""

from aerun.data.dataset import DATASET_NAMES, check_available, check_config_available, dataset_from_config, load_dataset
from aerun.data.noise import NOISE_KINDS, apply_noise, noise_generator
from aerun.data.splits import ImageDataset, Split

__all__ = ["DATASET_NAMES", "NOISE_KINDS", "ImageDataset", "Split", "apply_noise", "check_available",
           "check_config_available", "dataset_from_config", "load_dataset", "noise_generator"]
