"""The model families; configs name these classes in `_target_`. `base` holds the contract."""

from aerun.models.base import AEOutput, Autoencoder, Batch, interpolate_codes
from aerun.models.conv import ConvAutoencoder, ConvVAE
from aerun.models.mlp import VAE, MLPAutoencoder
from aerun.models.dbn import DBN
from aerun.models.rbm import RBM
from aerun.models.sequence import SequenceAutoencoder, SequenceVAE
from aerun.models.stacked import StackedAutoencoder
from aerun.models.svae import SVAE
from aerun.models.vaegan import VAEGAN
from aerun.models.variational import VariationalAutoencoder, kl_warmup

__all__ = ["AEOutput", "Autoencoder", "Batch", "ConvAutoencoder", "ConvVAE", "MLPAutoencoder", "VAE", "VAEGAN", "StackedAutoencoder", "SVAE", "SequenceAutoencoder", "SequenceVAE", "RBM", "DBN",
           "VariationalAutoencoder", "interpolate_codes", "kl_warmup"]
