"""Model-family schemas: each family's options, and nothing a family would ignore.

A schema may list generic options its family cannot honour in REFUSES (option -> why); the
checks in `aerun.config.validate` refuse those by name. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, List, Optional

from omegaconf import II, MISSING


class Activation(Enum):
    relu = "relu"
    leaky_relu = "leaky_relu"
    elu = "elu"
    gelu = "gelu"
    tanh = "tanh"
    sigmoid = "sigmoid"
    identity = "identity"


class OutputActivation(Enum):
    auto = "auto"  # sigmoid, or identity for an all-identity (linear) MLP
    sigmoid = "sigmoid"
    identity = "identity"


class SparsityKind(Enum):
    none = "none"
    l1 = "l1"
    kl = "kl"


@dataclass
class SparsityConfig:
    kind: SparsityKind = SparsityKind.none
    weight: float = 1e-3
    rho: float = 0.05  # target mean activation for kind=kl


@dataclass
class ModelConfig:
    _target_: str = MISSING
    latent_dim: int = 2


@dataclass
class DeterministicModelConfig(ModelConfig):
    """Plain autoencoders: a code penalty makes sense on their deterministic codes."""

    sparsity: SparsityConfig = field(default_factory=SparsityConfig)


@dataclass
class MLPAutoencoderConfig(DeterministicModelConfig):
    _target_: str = "aerun.models.MLPAutoencoder"
    hidden: List[int] = field(default_factory=lambda: [128, 64, 12])
    activation: Activation = Activation.relu
    latent_activation: Activation = Activation.identity
    output_activation: OutputActivation = OutputActivation.auto


class Downsample(Enum):
    stride = "stride"  # 3x3 convs with stride 2 (the textbook net)
    maxpool = "maxpool"  # 3x3 convs, then 2x2 max-pooling (switches kept for unpool)


class Upsample(Enum):
    transpose = "transpose"  # stride-2 transposed convs (the textbook net)
    unpool = "unpool"  # MaxUnpool2d with the encoder's switches, then a 3x3 conv (needs downsample=maxpool)
    nearest = "nearest"  # nearest-neighbour resize, then a 3x3 conv


@dataclass
class ConvAutoencoderConfig(DeterministicModelConfig):
    _target_: str = "aerun.models.ConvAutoencoder"
    latent_dim: int = 64
    channels: List[int] = field(default_factory=lambda: [16, 32])
    activation: Activation = Activation.relu
    latent_activation: Activation = Activation.identity
    downsample: Downsample = Downsample.stride
    upsample: Upsample = Upsample.transpose


@dataclass
class VariationalModelConfig(ModelConfig):
    """Gaussian-posterior models: beta weighs the KL term, warmed up over kl_warmup_epochs."""

    latent_dim: int = 16
    beta: float = 1.0
    kl_warmup_epochs: float = 0.0


@dataclass
class VAEConfig(VariationalModelConfig):
    _target_: str = "aerun.models.VAE"
    hidden: List[int] = field(default_factory=lambda: [512, 256])
    activation: Activation = Activation.relu
    conditional: bool = False  # a conditional VAE: encoder and decoder read the one-hot class label


@dataclass
class ConvVAEConfig(VariationalModelConfig):
    _target_: str = "aerun.models.ConvVAE"
    channels: List[int] = field(default_factory=lambda: [32, 64])
    trunk_dim: int = 256
    activation: Activation = Activation.relu
    conditional: bool = False


@dataclass
class VAEGANConfig(VariationalModelConfig):
    """Options a family cannot honour are refused by name (REFUSES: option -> why)."""

    REFUSES: ClassVar[dict] = {
        "trainer.compile": "its training step runs three networks in turn, outside the compiled forward",
        "trainer.strategy": "three optimizers stepped in turn: DDP would synchronise only one backward",
        "loss": "its reconstruction is measured in the discriminator's features (model.gamma), plus an optional "
                "BCE pixel term (model.pixel_weight)",
    }
    _target_: str = "aerun.models.VAEGAN"
    latent_dim: int = 32
    channels: List[int] = field(default_factory=lambda: [32, 64])
    trunk_dim: int = 256
    activation: Activation = Activation.relu
    gamma: float = 0.1
    pixel_weight: float = 0.0
    discriminator_channels: List[int] = field(default_factory=lambda: [32, 64])
    discriminator_features: int = 256
    discriminator_lr_scale: float = 1.0
    equilibrium_margin: Optional[float] = 0.35  # rest the winning side while the discriminator's loss leaves 0.68 +- this; null: never


class Pretrain(Enum):
    none = "none"  # train the whole network from the start
    greedy = "greedy"  # one shallow AE per layer on the codes of the layers below, then fine-tune
    rbm = "rbm"  # one RBM per layer (CD-1), unrolled into the AE, then fine-tune (Hinton & Salakhutdinov 2006)


@dataclass
class StackedAutoencoderConfig(DeterministicModelConfig):
    _target_: str = "aerun.models.StackedAutoencoder"
    latent_dim: int = 30
    layers: List[int] = field(default_factory=lambda: [1000, 500, 250])  # hidden sizes, input side first
    activation: Activation = Activation.sigmoid
    tied_weights: bool = False
    pretrain: Pretrain = Pretrain.none
    pretrain_epochs: int = 1  # epochs per layer stage (pretrain=greedy|rbm); trainer.max_epochs counts them too


class SVAENetwork(Enum):
    mlp = "mlp"
    conv = "conv"


@dataclass
class SVAEConfig(VariationalModelConfig):
    _target_: str = "aerun.models.SVAE"
    latent_dim: int = 3  # the code lives on S^(latent_dim - 1)
    network: SVAENetwork = SVAENetwork.mlp
    hidden: List[int] = field(default_factory=lambda: [512, 256])  # network=mlp
    channels: List[int] = field(default_factory=lambda: [32, 64])  # network=conv
    trunk_dim: int = 256  # network=conv
    activation: Activation = Activation.relu
    conditional: bool = False


class SequenceCell(Enum):
    lstm = "lstm"
    gru = "gru"
    transformer = "transformer"


@dataclass
class SequenceAEConfig(DeterministicModelConfig):
    _target_: str = "aerun.models.SequenceAutoencoder"
    latent_dim: int = 32
    cell: SequenceCell = SequenceCell.lstm
    hidden: int = 256  # the RNN's hidden size, or the transformer's d_model
    layers: int = 1
    heads: int = 4  # cell=transformer: attention heads (hidden must be divisible by it)
    dropout: float = 0.0  # between RNN layers (layers > 1) or inside the transformer
    latent_activation: Activation = Activation.identity


@dataclass
class SequenceVAEConfig(VariationalModelConfig):
    _target_: str = "aerun.models.SequenceVAE"
    cell: SequenceCell = SequenceCell.lstm
    hidden: int = 256
    layers: int = 1
    heads: int = 4
    dropout: float = 0.0


CD_REFUSES = {  # what RBMs and DBNs cannot honour: contrastive divergence writes the gradients itself
    "loss": "contrastive divergence does not minimise a reconstruction loss (the squared error of one mean-field "
            "pass is what it reports)",
    "trainer.precision": "its updates are computed in float32 by hand, outside autocast and the grad scaler",
    "trainer.compile": "its training step never runs the compiled forward",
    "optim.l1_weight": "the L1 weight penalty is added to a backpropagated loss, and CD has none",
    "data.noise.kind": "CD learns the density of the clean images: there is no corrupted input to reconstruct from",
}


class CDReconstruction(Enum):
    auto = "auto"  # probabilities for CD, binary for PCD (each the better: benchmarks/paper_tables/rbm.md)
    probabilities = "probabilities"  # p(v | h) itself (Hinton's practical guide, section 3.3; his rbm.m)
    binary = "binary"  # a binary sample of p(v | h): the textbook Gibbs step (Tieleman's PCD)


@dataclass
class RBMConfig(ModelConfig):
    REFUSES: ClassVar[dict] = CD_REFUSES
    _target_: str = "aerun.models.RBM"
    latent_dim: int = II(".hidden_units")  # the code is the hidden layer: set model.hidden_units
    hidden_units: int = 500
    cd_k: int = 1  # Gibbs steps of the negative phase (CD-k)
    persistent: bool = False  # persistent CD: the negative chains carry on from batch to batch
    binarize: bool = False  # sample binary images from the grey levels afresh each batch
    reconstruction: CDReconstruction = CDReconstruction.auto  # the negative phase's last visible state


@dataclass
class DBNConfig(ModelConfig):
    REFUSES: ClassVar[dict] = CD_REFUSES
    _target_: str = "aerun.models.DBN"
    latent_dim: int = 2000  # the top layer's size: must be layers[-1]
    layers: List[int] = field(default_factory=lambda: [500, 500, 2000])  # hidden sizes, bottom first
    cd_k: int = 1
    epochs_per_layer: int = 10  # layer i trains for epochs [i, i + 1) x this; the top one after that
    persistent: bool = False
    binarize: bool = False
    reconstruction: CDReconstruction = CDReconstruction.auto


MODEL_SCHEMAS = {
    "base_mlp_ae": MLPAutoencoderConfig,
    "base_cnn_ae": ConvAutoencoderConfig,
    "base_vae": VAEConfig,
    "base_conv_vae": ConvVAEConfig,
    "base_vaegan": VAEGANConfig,
    "base_stacked_ae": StackedAutoencoderConfig,
    "base_svae": SVAEConfig,
    "base_seq_ae": SequenceAEConfig,
    "base_seq_vae": SequenceVAEConfig,
    "base_rbm": RBMConfig,
    "base_dbn": DBNConfig,
}
