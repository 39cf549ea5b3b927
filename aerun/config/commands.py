"""Schemas of the commands that read a trained run (`run=<dir>`) and of `aerun summarize`.

They share one base, `RunCommandConfig`: the run directory, a seed, the device, a batch
size and where the run's data lives now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING

from aerun.config.schema import Device


@dataclass
class RunDataConfig:
    root: Optional[str] = None  # null: the trained run's data.root


@dataclass
class RunCommandConfig:
    run: Optional[str] = None  # the run directory written by `aerun train`
    seed: int = 0
    device: Device = Device.auto
    batch_size: int = 1000  # images per forward pass
    data: RunDataConfig = field(default_factory=RunDataConfig)


# ----------------------------------------------------------------------------- evaluate
@dataclass
class EvaluateOptions:
    iw_samples: int = 1000  # importance samples per test image for the VAE's NLL bound
    iw_chunk: int = 10_000  # at most this many decoded samples (images x importance samples) at once
    max_test_samples: Optional[int] = None  # null: the run's whole test split
    probe_max_train: Optional[int] = 10_000  # training codes for the linear probe; null: all
    kmeans_n_init: int = 4
    sparsity_threshold: float = 0.01  # |code| below this counts as zero
    ais_chains: int = 100  # RBMs: annealed importance sampling runs for log Z (Salakhutdinov & Murray 2008)
    ais_betas: int = 14_500  # RBMs: intermediate temperatures (the paper's schedule)


@dataclass
class EvaluateConfig(RunCommandConfig):
    evaluate: EvaluateOptions = field(default_factory=EvaluateOptions)


# ----------------------------------------------------------------------------- encode / generate / interpolate
class SplitName(Enum):
    train = "train"
    val = "val"
    test = "test"


class Projection(Enum):
    auto = "auto"  # hammer for codes on the sphere S^2 (an S-VAE with latent_dim=3), else pca
    pca = "pca"
    tsne = "tsne"
    hammer = "hammer"  # the Hammer equal-area map of codes on S^2


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
class EncodeOptions:
    projection: Projection = Projection.auto  # how latent.png shows codes of more than 2 dimensions
    kmeans: Optional[int] = None  # k: k-means clusters of the codes (codes.npz `clusters`, kmeans.json, confusion)
    plot_max_points: int = 10_000  # at most this many codes in latent.png (a seeded subset)
    embedding: bool = True  # add a TensorBoard projector entry under the run's tensorboard/
    embedding_max_points: int = 2000  # at most this many codes (with thumbnails) in that entry


@dataclass
class EncodeConfig(RunCommandConfig):
    split: SplitName = SplitName.test
    encode: EncodeOptions = field(default_factory=EncodeOptions)


@dataclass
class GenerateOptions:
    components: int = 10  # sampler=gmm: Gaussian mixture components
    nrow: Optional[int] = None  # images per row of samples.png; null: a square grid
    grid_max: int = 256  # samples.png shows the first grid_max samples; samples.npy holds all n
    gibbs_steps: int = 1000  # RBMs and DBNs: Gibbs steps of each chain from random visible units
    quality: bool = True  # quality.json: Frechet distance, precision/recall, class histogram in a judge's features
    quality_k: int = 3  # the k of the k-NN precision/recall (Kynkaanniemi et al. 2019)
    judge_cache: Optional[str] = None  # null: $AERUN_CACHE, else ~/.cache/aerun


@dataclass
class GenerateConfig(RunCommandConfig):
    n: int = 64
    sampler: SamplerName = SamplerName.auto
    generate: GenerateOptions = field(default_factory=GenerateOptions)


@dataclass
class InterpolateOptions:
    grid: int = 20  # mode=manifold: grid x grid decoded images
    quantile: float = 0.05  # mode=manifold, VAEs: the grid spans prior quantiles [q, 1 - q]


@dataclass
class InterpolateConfig(RunCommandConfig):
    split: SplitName = SplitName.test  # where from_/to_index and from_/to_class pick images
    from_index: Optional[int] = None  # null (and no from_class): image 0
    to_index: Optional[int] = None  # null (and no to_class): image 1
    from_class: Optional[str] = None  # a class name (MNIST: 0..9) or number: its first image in the split
    to_class: Optional[str] = None
    steps: int = 10
    method: InterpolationMethod = InterpolationMethod.linear
    mode: InterpolationMode = InterpolationMode.pair
    interpolate: InterpolateOptions = field(default_factory=InterpolateOptions)


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
class FinetuneConfig(RunCommandConfig):
    labels_per_class: Any = 100  # a number, or a list such as [10, 100, 1000] for a curve
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)


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


# ----------------------------------------------------------------------------- judge / compress
@dataclass
class JudgeOptions:
    epochs: int = 4
    force: bool = False  # train again even when a cached judge exists
    cache_dir: Optional[str] = None  # null: $AERUN_CACHE, else ~/.cache/aerun


@dataclass
class JudgeConfig:
    data: Any = MISSING  # the data group, as for train: data=mnist data.root=...
    seed: int = 0
    device: Device = Device.auto
    judge: JudgeOptions = field(default_factory=JudgeOptions)


@dataclass
class CompressOptions:
    bits: List[int] = field(default_factory=lambda: [2, 4, 6, 8])  # bits per code dimension
    baselines: List[str] = field(default_factory=lambda: ["pca", "jpeg"])  # pca, jpeg, or []
    max_test_samples: Optional[int] = None  # null: the whole test split


@dataclass
class CompressConfig(RunCommandConfig):
    compress: CompressOptions = field(default_factory=CompressOptions)


# ----------------------------------------------------------------------------- anomaly
class AnomalyScore(Enum):
    auto = "auto"  # mse for autoencoders, elbo for VAEs, free_energy for RBMs
    mse = "mse"  # the reconstruction's squared error per pixel
    bce = "bce"  # its Bernoulli cross-entropy per pixel
    elbo = "elbo"  # -ELBO per image (models with a posterior)
    iw_nll = "iw_nll"  # the importance-weighted NLL bound (models with a posterior)
    free_energy = "free_energy"  # an RBM's free energy
    density = "density"  # -log density of the code under a GMM fitted to the training codes
    all = "all"  # every score the model has


class AnomalyProtocol(Enum):
    auto = "auto"  # one_class if the run kept data.include_classes, held_out if data.exclude_classes, ood with anomaly.ood
    one_class = "one_class"  # test images of the trained classes are normal, all others anomalies (Ruff et al. 2018)
    held_out = "held_out"  # test images of the classes the run left out are the anomalies
    ood = "ood"  # the run's test split is normal, another dataset's test split the anomalies


@dataclass
class AnomalyOptions:
    score: AnomalyScore = AnomalyScore.auto
    protocol: AnomalyProtocol = AnomalyProtocol.auto
    ood: Optional[str] = None  # protocol=ood: the other dataset (mnist, fashion_mnist, cifar10)
    ood_root: Optional[str] = None  # where it is (null: the run's data root)
    components: int = 10  # score=density: Gaussian mixture components
    iw_samples: int = 100  # score=iw_nll: importance samples per image
    max_test_samples: Optional[int] = None  # null: the whole test split(s)
    extremes: int = 16  # images in each row of extremes.png (most / least anomalous)


@dataclass
class AnomalyConfig(RunCommandConfig):
    anomaly: AnomalyOptions = field(default_factory=AnomalyOptions)


# Keys a schema cannot hold as a dataclass field (a Python keyword): added to its node when
# registered, typed Any, and checked by the command (`class=` of generate).
EXTRA_KEYS = {GenerateConfig: {"class": None}}

COMMAND_SCHEMAS = {
    "base_evaluate": EvaluateConfig,
    "base_encode": EncodeConfig,
    "base_generate": GenerateConfig,
    "base_interpolate": InterpolateConfig,
    "base_summarize": SummarizeConfig,
    "base_finetune": FinetuneConfig,
    "base_judge": JudgeConfig,
    "base_compress": CompressConfig,
    "base_anomaly": AnomalyConfig,
}
