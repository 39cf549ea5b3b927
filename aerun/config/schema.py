"""The typed interface of `aerun train`: data, optimizer, trainer and the whole train config (the
model families are in `aerun.config.models`), the schemas every YAML in `configs/` extends.

OmegaConf checks types and Enum choices while Hydra composes; `aerun.config.validate`
checks ranges and combinations. A model family's schema holds exactly the options that
family uses, so an option it would ignore is an unknown key there. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING

from aerun.config.models import (MODEL_SCHEMAS, Activation, ModelConfig, OutputActivation, SparsityConfig,  # noqa: F401
                                 SparsityKind, StackedAutoencoderConfig)


class NoiseKind(Enum):
    none = "none"
    gaussian = "gaussian"
    salt_pepper = "salt_pepper"
    masking = "masking"
    watermark = "watermark"  # a semi-transparent word on each image; level is its opacity in (0, 1]


class DatasetName(Enum):
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"
    folder = "folder"  # your own image files (data.path: a folder)
    npz = "npz"  # your own arrays (data.path: a .npz or .npy file)


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
    include_classes: Optional[List[Any]] = None  # class names or numbers to keep (null: all), any labelled data
    exclude_classes: Optional[List[Any]] = None  # class names or numbers to drop (null: none)
    path: Optional[str] = None  # data=folder / npz: the image folder, or the .npz / .npy file
    test_size: float = 0.1  # without a test/ folder or test arrays: < 1 a fraction, >= 1 a number of images
    channels: Optional[int] = None  # folder: 1 (grey) or 3 (RGB); null: as the first image
    image_size: Any = None  # folder: null (one size for all), or an int / [h, w] to resize to
    images_key: str = "images"  # npz: the array names (test set: test_<images_key>, test_<labels_key>)
    labels_key: str = "labels"
    class_names_key: str = "class_names"


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


@dataclass
class RMSpropConfig(OptimConfig):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = 0.99  # the smoothing constant of the squared-gradient average
    momentum: float = 0.0
    centered: bool = False  # normalise by the gradient's variance instead of its second moment


OPTIM_KEYS_OF_AERUN = ("l1_weight", "scheduler")  # the optimizer's constructor never sees these
OPTIM_SCHEMAS = {"base_adam": AdamConfig, "base_adamw": AdamWConfig, "base_sgd": SGDConfig,
                 "base_rmsprop": RMSpropConfig}
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


# ----------------------------------------------------------------------------- loggers
class WandbMode(Enum):
    online = "online"
    offline = "offline"  # no network: `wandb sync <run>/wandb/offline-run-*` uploads later
    disabled = "disabled"


@dataclass
class TensorBoardLoggerConfig:
    """Event files under <run>/tensorboard/<run name>/ (no options)."""


@dataclass
class CsvLoggerConfig:
    filename: str = "metrics.csv"  # in the run directory


@dataclass
class MlflowLoggerConfig:
    tracking_uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db here)
    experiment: str = "aerun"
    log_checkpoint: bool = True  # best.pt as an artifact (beside the figures and metrics.json)


@dataclass
class WandbLoggerConfig:
    project: str = "aerun"
    entity: Optional[str] = None
    mode: WandbMode = WandbMode.offline
    log_checkpoint: bool = False  # best.pt as an artifact (an upload of its size)


@dataclass
class LoggerConfig:
    """The trackers a run writes to: a key that is not null is on (logger=[tensorboard,csv])."""

    tensorboard: Optional[TensorBoardLoggerConfig] = None
    csv: Optional[CsvLoggerConfig] = None
    mlflow: Optional[MlflowLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    loss: Optional[LossKind] = None  # None: the model's default (mse for AEs, bce for VAEs)
    resume: Optional[str] = None  # a run directory (single run) or true/a sweep dir (multirun)
    optimized_metric: str = "auto"  # auto: val/loss (the negative ELBO for VAEs) -- lower is better
    experiment: Optional[Any] = None
    debug: Optional[Any] = None
