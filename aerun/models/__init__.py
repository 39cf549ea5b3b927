"""The model family; configs name these classes in `_target_`."""

from aerun.models.base import Autoencoder, VariationalAutoencoder, interpolate_codes
from aerun.models.conv import ConvAutoencoder, ConvVAE
from aerun.models.mlp import VAE, MLPAutoencoder

__all__ = ["Autoencoder", "VariationalAutoencoder", "interpolate_codes", "MLPAutoencoder", "VAE",
           "ConvAutoencoder", "ConvVAE"]
