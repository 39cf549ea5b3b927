"""aerun: an autoencoder experiment runner (Hydra configs, one CLI)."""

__version__ = "0.1.0"
