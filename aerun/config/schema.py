"""The typed interface of `aerun train`: schemas every YAML in `configs/` extends.

OmegaConf checks types and Enum choices while Hydra composes; `aerun.config.validate`
checks ranges and combinations. A model family's schema holds exactly the options that
family uses, so an option it would ignore is an unknown key there. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING


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


class NoiseKind(Enum):
    none = "none"
    gaussian = "gaussian"
    salt_pepper = "salt_pepper"
    masking = "masking"


class DatasetName(Enum):
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"


class LossKind(Enum):
    mse = "mse"
    bce = "bce"


class SchedulerInterval(Enum):
    step = "step"  # the scheduler steps after every optimizer step
    epoch = "epoch"  # ... after every epoch


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Strategy(Enum):
    single = "single"
    ddp = "ddp"


PRECISIONS = ("32", "bf16", "16-mixed")


# ----------------------------------------------------------------------------- model
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


@dataclass
class ConvAutoencoderConfig(DeterministicModelConfig):
    _target_: str = "aerun.models.ConvAutoencoder"
    latent_dim: int = 64
    channels: List[int] = field(default_factory=lambda: [16, 32])
    activation: Activation = Activation.relu
    latent_activation: Activation = Activation.identity


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


@dataclass
class ConvVAEConfig(VariationalModelConfig):
    _target_: str = "aerun.models.ConvVAE"
    channels: List[int] = field(default_factory=lambda: [32, 64])
    trunk_dim: int = 256
    activation: Activation = Activation.relu


MODEL_SCHEMAS = {
    "base_mlp_ae": MLPAutoencoderConfig,
    "base_cnn_ae": ConvAutoencoderConfig,
    "base_vae": VAEConfig,
    "base_conv_vae": ConvVAEConfig,
}


# ----------------------------------------------------------------------------- data
@dataclass
class NoiseConfig:
    kind: NoiseKind = NoiseKind.none
    level: float = 0.0


@dataclass
class DataConfig:
    name: DatasetName = DatasetName.mnist
    root: str = "data"
    download: bool = False
    val_size: float = 0.1  # < 1: a fraction of train; >= 1: a number of images
    max_train_samples: Optional[int] = None
    max_test_samples: Optional[int] = None
    noise: NoiseConfig = field(default_factory=NoiseConfig)


# ----------------------------------------------------------------------------- optim
@dataclass
class SchedulerConfig:
    """`_target_` names the torch scheduler class (null: none); `interval` when it steps."""

    _target_: Optional[str] = None
    _partial_: bool = True
    interval: SchedulerInterval = SchedulerInterval.epoch


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    _target_: Optional[str] = "torch.optim.lr_scheduler.CosineAnnealingLR"
    interval: SchedulerInterval = SchedulerInterval.step
    T_max: Optional[int] = None  # null: the whole run, in steps of `interval`
    eta_min: float = 0.0


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    _target_: Optional[str] = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 10  # in epochs (interval=epoch)
    gamma: float = 0.1


@dataclass
class OptimConfig:
    """`_target_` names the torch optimizer; every key but l1_weight and scheduler is its argument."""

    _target_: str = MISSING
    lr: float = 1e-3
    weight_decay: float = 0.0
    l1_weight: float = 0.0  # alpha * ||W||_1 added to the loss
    scheduler: Any = field(default_factory=SchedulerConfig)


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"


@dataclass
class AdamWConfig(OptimConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 1e-2


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 1e-4
    momentum: float = 0.9


OPTIM_KEYS_OF_AERUN = ("l1_weight", "scheduler")  # the optimizer's constructor never sees these
OPTIM_SCHEMAS = {"base_adam": AdamConfig, "base_adamw": AdamWConfig, "base_sgd": SGDConfig}
SCHEDULER_SCHEMAS = {"base_none": SchedulerConfig, "base_cosine": CosineSchedulerConfig,
                     "base_step": StepSchedulerConfig}


# ----------------------------------------------------------------------------- trainer
@dataclass
class TrainerConfig:
    max_epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 500
    train_eval_size: Optional[int] = 10000  # final train metrics on the first N training images; None = all
    device: Device = Device.auto
    precision: str = "32"
    compile: bool = False
    channels_last: bool = True
    deterministic: bool = False
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int = 0  # 0 = only at epoch ends
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    progress: bool = True
    images_every_n_epochs: int = 1
    strategy: Strategy = Strategy.single
    ddp_timeout_s: float = 600.0  # strategy=ddp: a collective waiting longer for a peer fails instead of hanging


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = 0
    loss: Optional[LossKind] = None  # None: the model's default (mse for AEs, bce for VAEs)
    resume: Optional[str] = None  # a run directory (single run) or true/a sweep dir (multirun)
    optimized_metric: str = "auto"  # auto: val/loss (the negative ELBO for VAEs) -- lower is better
    experiment: Optional[Any] = None
    debug: Optional[Any] = None
