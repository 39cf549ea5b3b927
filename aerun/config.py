"""Structured-config schemas: the typed interface every YAML in `configs/` extends.

OmegaConf checks types (and Enum choices) while Hydra composes; `validate()` checks
ranges and combinations that a type cannot express. Neither imports torch, so bad
input is refused before any slow import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from aerun.errors import UserError


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


class OptimizerName(Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class SchedulerName(Enum):
    none = "none"
    cosine = "cosine"
    step = "step"


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
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)


@dataclass
class MLPAutoencoderConfig(ModelConfig):
    _target_: str = "aerun.models.MLPAutoencoder"
    hidden: List[int] = field(default_factory=lambda: [128, 64, 12])
    activation: Activation = Activation.relu
    latent_activation: Activation = Activation.identity
    output_activation: OutputActivation = OutputActivation.auto


@dataclass
class ConvAutoencoderConfig(ModelConfig):
    _target_: str = "aerun.models.ConvAutoencoder"
    latent_dim: int = 64
    channels: List[int] = field(default_factory=lambda: [16, 32])
    activation: Activation = Activation.relu
    latent_activation: Activation = Activation.identity


@dataclass
class VAEConfig(ModelConfig):
    _target_: str = "aerun.models.VAE"
    latent_dim: int = 16
    hidden: List[int] = field(default_factory=lambda: [512, 256])
    activation: Activation = Activation.relu
    beta: float = 1.0
    kl_warmup_epochs: float = 0.0


@dataclass
class ConvVAEConfig(ModelConfig):
    _target_: str = "aerun.models.ConvVAE"
    latent_dim: int = 16
    channels: List[int] = field(default_factory=lambda: [32, 64])
    trunk_dim: int = 256
    activation: Activation = Activation.relu
    beta: float = 1.0
    kl_warmup_epochs: float = 0.0


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
class OptimConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    l1_weight: float = 0.0  # alpha * ||W||_1 added to the loss
    scheduler: SchedulerName = SchedulerName.none
    step_size_epochs: int = 10  # scheduler=step
    gamma: float = 0.1  # scheduler=step
    min_lr: float = 0.0  # scheduler=cosine


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
    kill_at_step: int = 0  # testing crash recovery: SIGKILL this process right after step N (0 = never)


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


MODEL_SCHEMAS = {
    "base_mlp_ae": MLPAutoencoderConfig,
    "base_cnn_ae": ConvAutoencoderConfig,
    "base_vae": VAEConfig,
    "base_conv_vae": ConvVAEConfig,
}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; YAML files extend them by name."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    for name, schema in MODEL_SCHEMAS.items():
        cs.store(group="model", name=name, node=schema)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="optim", name="base_optim", node=OptimConfig)
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
    cs.store(name="base_evaluate", node=EvaluateConfig)
    cs.store(name="base_encode", node=EncodeConfig)
    cs.store(name="base_generate", node=GenerateConfig)
    cs.store(name="base_interpolate", node=InterpolateConfig)
    cs.store(name="base_summarize", node=SummarizeConfig)
    cs.store(name="base_finetune", node=FinetuneConfig)


# ----------------------------------------------------------------------------- validation
def added_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Keys that a `+key=value` override added where the schema has no such setting.

    Hydra lets `+` add keys even to structured configs, so without this check a typo such as
    `+trainer.max_epoch=5` would be accepted and silently ignored."""
    schema = OmegaConf.get_type(cfg)
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    found = []
    for key in cfg.keys():
        if fields is not None and key not in fields:
            found.append(f"{prefix}{key}")
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found += added_keys(child, f"{prefix}{key}.")
    return found


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"{key}: {message}")


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def validate_train(cfg: DictConfig) -> None:
    """Ranges and combinations; raises UserError naming the key."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.trainer
    _check(m.latent_dim >= 1, "model.latent_dim", f"must be >= 1, got {m.latent_dim}")
    for key in ("hidden", "channels"):
        if key in m:
            _check(all(h >= 1 for h in m[key]), f"model.{key}", f"sizes must be >= 1, got {list(m[key])}")
    if "channels" in m:
        _check(len(m.channels) >= 1, "model.channels", "needs at least one stride-2 conv layer")
    _check(m.sparsity.weight >= 0, "model.sparsity.weight", f"must be >= 0, got {m.sparsity.weight}")
    _check(0 < m.sparsity.rho < 1, "model.sparsity.rho", f"must be in (0, 1), got {m.sparsity.rho}")
    if "beta" in m:
        _check(m.beta >= 0, "model.beta", f"must be >= 0, got {m.beta}")
        _check(m.kl_warmup_epochs >= 0, "model.kl_warmup_epochs", f"must be >= 0, got {m.kl_warmup_epochs}")
    if "trunk_dim" in m:
        _check(m.trunk_dim >= 1, "model.trunk_dim", f"must be >= 1, got {m.trunk_dim}")
    _check(d.val_size >= 0, "data.val_size", f"must be >= 0 (a fraction < 1 or a count), got {d.val_size}")
    for key in ("max_train_samples", "max_test_samples"):
        _check(d[key] is None or d[key] >= 1, f"data.{key}", f"must be >= 1 or null, got {d[key]}")
    noise_kind = _enum_value(d.noise.kind)
    _check(d.noise.level >= 0, "data.noise.level", f"must be >= 0, got {d.noise.level}")
    if noise_kind in ("salt_pepper", "masking"):
        _check(d.noise.level <= 1, "data.noise.level", f"is a probability for {noise_kind}: must be <= 1, got {d.noise.level}")
    if noise_kind != "none":
        _check(d.noise.level > 0, "data.noise.level", f"must be > 0 when data.noise.kind={noise_kind}")
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _check(o.l1_weight >= 0, "optim.l1_weight", f"must be >= 0, got {o.l1_weight}")
    _check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    _check(o.step_size_epochs >= 1, "optim.step_size_epochs", f"must be >= 1, got {o.step_size_epochs}")
    _check(0 < o.gamma <= 1, "optim.gamma", f"must be in (0, 1], got {o.gamma}")
    _check(o.min_lr >= 0, "optim.min_lr", f"must be >= 0, got {o.min_lr}")
    _check(t.max_epochs >= 1, "trainer.max_epochs", f"must be >= 1, got {t.max_epochs}")
    _check(t.batch_size >= 1, "trainer.batch_size", f"must be >= 1, got {t.batch_size}")
    _check(t.eval_batch_size >= 1, "trainer.eval_batch_size", f"must be >= 1, got {t.eval_batch_size}")
    _check(t.train_eval_size is None or t.train_eval_size >= 0, "trainer.train_eval_size",
           f"must be >= 0 (0 = no train metrics) or null (the whole training split), got {t.train_eval_size}")
    _check(t.log_every_n_steps >= 1, "trainer.log_every_n_steps", f"must be >= 1, got {t.log_every_n_steps}")
    _check(t.checkpoint_every_n_steps >= 0, "trainer.checkpoint_every_n_steps",
           f"must be >= 0 (0 = at epoch ends only), got {t.checkpoint_every_n_steps}")
    _check(t.images_every_n_epochs >= 0, "trainer.images_every_n_epochs", f"must be >= 0, got {t.images_every_n_epochs}")
    _check(t.grad_clip >= 0, "trainer.grad_clip", f"must be >= 0 (0 = off), got {t.grad_clip}")
    _check(t.kill_at_step >= 0, "trainer.kill_at_step", f"must be >= 0 (0 = never), got {t.kill_at_step}")
    _check(t.num_threads >= 0, "trainer.num_threads", f"must be >= 0, got {t.num_threads}")
    _check(t.precision in PRECISIONS, "trainer.precision",
           f"got '{t.precision}'; choose one of {', '.join(PRECISIONS)}")
    if t.precision == "16-mixed":
        _check(_enum_value(t.device) != "cpu", "trainer.precision",
               "16-mixed needs a CUDA device; on CPU use trainer.precision=bf16")
    if t.deterministic and t.compile:
        raise UserError("trainer.compile: cannot be combined with trainer.deterministic=true; turn one off")
    loss = _enum_value(cfg.loss)
    output = _enum_value(m.get("output_activation", "sigmoid"))
    if loss == "bce" and output == "identity":
        raise UserError("loss: bce needs outputs in (0, 1), but model.output_activation=identity; use loss=mse")
    if output == "auto" and loss == "bce" and _enum_value(m.get("activation")) == "identity":
        raise UserError("loss: bce needs a sigmoid output; a linear (identity) MLP has none: "
                        "use loss=mse or model.output_activation=sigmoid")
    metric = cfg.optimized_metric
    _check(metric == "auto" or metric.startswith(("val/", "test/")), "optimized_metric",
           f"must be 'auto' or a 'val/<name>' / 'test/<name>' metric, got '{metric}'")


def to_plain(cfg: DictConfig) -> dict:
    """A resolved config as plain Python (str enums), safe to store in a weights-only checkpoint."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


# ----------------------------------------------------------------------------- evaluate
@dataclass
class EvaluateDataConfig:
    root: Optional[str] = None  # null: the trained run's data.root


@dataclass
class EvaluateOptions:
    iw_samples: int = 1000  # importance samples per test image for the VAE's NLL bound
    iw_chunk: int = 10_000  # at most this many decoded samples (images x importance samples) at once
    max_test_samples: Optional[int] = None  # null: the run's whole test split
    probe_max_train: Optional[int] = 10_000  # training codes for the linear probe; null: all
    kmeans_n_init: int = 4
    sparsity_threshold: float = 0.01  # |code| below this counts as zero


@dataclass
class EvaluateConfig:
    run: Optional[str] = None  # the run directory of `aerun train`
    seed: int = 0
    device: Device = Device.auto
    batch_size: int = 1000
    data: EvaluateDataConfig = field(default_factory=EvaluateDataConfig)
    evaluate: EvaluateOptions = field(default_factory=EvaluateOptions)


# ----------------------------------------------------------------------------- encode / generate / interpolate
class SplitName(Enum):
    train = "train"
    val = "val"
    test = "test"


class Projection(Enum):
    pca = "pca"
    tsne = "tsne"


class SamplerName(Enum):
    auto = "auto"  # prior for VAEs, gmm otherwise
    prior = "prior"
    normal = "normal"
    uniform = "uniform"
    gmm = "gmm"


class InterpolationMethod(Enum):
    linear = "linear"
    slerp = "slerp"


class InterpolationMode(Enum):
    pair = "pair"
    manifold = "manifold"


@dataclass
class LatentDataConfig:
    root: Optional[str] = None  # null: the trained run's data.root


@dataclass
class EncodeOptions:
    projection: Projection = Projection.pca  # how latent.png shows codes of more than 2 dimensions
    plot_max_points: int = 10_000  # at most this many codes in latent.png (a seeded subset)
    embedding: bool = True  # add a TensorBoard projector entry under the run's tensorboard/
    embedding_max_points: int = 2000  # at most this many codes (with thumbnails) in that entry


@dataclass
class EncodeConfig:
    run: Optional[str] = None  # the run directory of `aerun train`
    split: SplitName = SplitName.test
    seed: int = 0
    device: Device = Device.auto
    batch_size: int = 1000
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    encode: EncodeOptions = field(default_factory=EncodeOptions)


@dataclass
class GenerateOptions:
    components: int = 10  # sampler=gmm: Gaussian mixture components
    nrow: Optional[int] = None  # images per row of samples.png; null: a square grid
    grid_max: int = 256  # samples.png shows the first grid_max samples; samples.npy holds all n


@dataclass
class GenerateConfig:
    run: Optional[str] = None
    n: int = 64
    sampler: SamplerName = SamplerName.auto
    seed: int = 0
    device: Device = Device.auto
    batch_size: int = 1000
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    generate: GenerateOptions = field(default_factory=GenerateOptions)


@dataclass
class InterpolateOptions:
    grid: int = 20  # mode=manifold: grid x grid decoded images
    quantile: float = 0.05  # mode=manifold, VAEs: the grid spans prior quantiles [q, 1 - q]


@dataclass
class InterpolateConfig:
    run: Optional[str] = None
    split: SplitName = SplitName.test  # where from_/to_index and from_/to_class pick images
    from_index: Optional[int] = None  # null (and no from_class): image 0
    to_index: Optional[int] = None  # null (and no to_class): image 1
    from_class: Optional[str] = None  # a class name (MNIST: 0..9) or number: its first image in the split
    to_class: Optional[str] = None
    steps: int = 10
    method: InterpolationMethod = InterpolationMethod.linear
    mode: InterpolationMode = InterpolationMode.pair
    seed: int = 0
    device: Device = Device.auto
    batch_size: int = 1000
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    interpolate: InterpolateOptions = field(default_factory=InterpolateOptions)


# ----------------------------------------------------------------------------- summarize
class ObjectiveDirection(Enum):
    auto = "auto"  # maximize psnr/elbo objectives, minimize everything else
    minimize = "minimize"
    maximize = "maximize"


@dataclass
class SummarizeOptions:
    sort_by: str = "objective"  # a column: objective (best first), job, status, an override key, val/mse, ...
    descending: bool = False
    metrics: Optional[List[str]] = None  # null: val/loss, val/mse, test/loss, test/mse, test/psnr (+ elbo, kl)
    direction: ObjectiveDirection = ObjectiveDirection.auto


@dataclass
class SummarizeConfig:
    dir: Optional[str] = None  # the sweep directory (aerun summarize <dir>)
    summarize: SummarizeOptions = field(default_factory=SummarizeOptions)


# ----------------------------------------------------------------------------- finetune
class HeadKind(Enum):
    linear = "linear"
    mlp = "mlp"


@dataclass
class FinetuneOptions:
    head: HeadKind = HeadKind.linear
    hidden: int = 256  # head=mlp: hidden units
    freeze_encoder: bool = True  # train only the head on the pretrained encoder
    steps: int = 2000  # optimizer steps for each classifier
    batch_size: int = 64
    lr: float = 1e-3


@dataclass
class FinetuneConfig:
    run: Optional[str] = None
    labels_per_class: Any = 100  # a number, or a list such as [10, 100, 1000] for a curve
    seed: int = 0
    device: Device = Device.auto
    batch_size: int = 1000  # images per forward pass when scoring
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
