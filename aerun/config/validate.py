"""Checks a type cannot express: ranges and combinations, each refused with one line that
names the key, what was wrong and what is allowed. No torch import."""

from __future__ import annotations

import dataclasses
import math
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aerun.config.schema import PRECISIONS, NoiseConfig, SchedulerConfig, SparsityConfig, TrainerConfig
from aerun.errors import UserError


def enum_value(value: Any) -> Any:
    """An Enum's value, anything else as it is (configs hold Enums, plain dicts hold str)."""
    return value.value if isinstance(value, Enum) else value


def to_plain(cfg: DictConfig) -> dict:
    """A resolved config as plain Python (str enums), safe to store in a weights-only checkpoint."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested plain config as {"dotted.key": value}."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"{key}: {message}")


def at_least(node, prefix: str, minimum, *keys: str, none_ok: bool = False, hint: str = "") -> None:
    """Each `prefix.key` must be >= minimum (or null when none_ok)."""
    for key in keys:
        if key not in node:
            continue
        value = node[key]
        if (value is None and none_ok) or OmegaConf.is_list(value):  # lists (layer sizes) are checked elsewhere
            continue
        also = " or null" if none_ok else ""
        check(value is not None and value >= minimum, f"{prefix}{key}", f"must be >= {minimum}{also}{hint}, got {value}")


def unused_unless(used: bool, node, defaults, prefix: str, keys: tuple[str, ...], why: str) -> None:
    """Refuse a value set for an option that has no effect here (no option is ever ignored)."""
    if used:
        return
    for key in keys:
        if node[key] != getattr(defaults, key):
            raise UserError(f"{prefix}{key}={node[key]}: has no effect with {why}")


def added_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Keys that a `+key=value` override added where the schema has no such setting.

    Hydra lets `+` add keys even to structured configs, so without this check a typo such as
    `+trainer.max_epoch=5` would be accepted and silently ignored."""
    from aerun.config.commands import EXTRA_KEYS

    schema = OmegaConf.get_type(cfg)
    fields = {f.name for f in dataclasses.fields(schema)} | set(EXTRA_KEYS.get(schema, {})) \
        if dataclasses.is_dataclass(schema) else None
    found = []
    for key in cfg.keys():
        if fields is not None and key not in fields:
            found.append(f"{prefix}{key}")
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found += added_keys(child, f"{prefix}{key}.")
    return found


# ----------------------------------------------------------------------------- train
def validate_train(cfg: DictConfig) -> None:
    """Ranges and combinations of a composed train config; raises UserError naming the key."""
    _validate_model(cfg.model)
    _validate_data(cfg.data)
    _validate_optim(cfg.optim)
    _validate_trainer(cfg.trainer)
    _validate_combinations(cfg)


def _validate_model(m) -> None:
    at_least(m, "model.", 1, "latent_dim", "trunk_dim")
    for key in ("hidden", "channels", "discriminator_channels"):
        if key in m and OmegaConf.is_list(m[key]):
            check(all(h >= 1 for h in m[key]), f"model.{key}", f"sizes must be >= 1, got {list(m[key])}")
    at_least(m, "model.", 1, "hidden", "layers", "heads", "discriminator_features")
    if "heads" in m:
        check(m.hidden % m.heads == 0, "model.heads", f"must divide model.hidden ({m.hidden}), got {m.heads}")
        unused_unless(enum_value(m.cell) == "transformer", m, type(OmegaConf.to_object(m))(), "model.",
                      ("heads",), f"model.cell={enum_value(m.cell)} (heads are the transformer's)")
    if "dropout" in m:
        check(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
        unused_unless(enum_value(m.cell) == "transformer" or m.layers > 1, m, type(OmegaConf.to_object(m))(),
                      "model.", ("dropout",), f"model.cell={enum_value(m.cell)} and model.layers=1 (an RNN's dropout "
                      f"acts between its layers)")
    if "network" in m:
        _check_network_keys(m)
    at_least(m, "model.", 0, "gamma", "pixel_weight")
    if "discriminator_lr_scale" in m:
        check(m.discriminator_lr_scale > 0, "model.discriminator_lr_scale", f"must be > 0, got {m.discriminator_lr_scale}")
    if m.get("equilibrium_margin") is not None:
        check(0 < m.equilibrium_margin, "model.equilibrium_margin",
              f"must be > 0 (or null: no balance), got {m.equilibrium_margin}")
    if "latent_geometry" in m or OmegaConf.get_type(m).__name__ == "SVAEConfig":
        check(m.latent_dim >= 2, "model.latent_dim", f"an S-VAE's code lives on S^(d-1): must be >= 2, got {m.latent_dim}")
    if "channels" in m:
        check(len(m.channels) >= 1, "model.channels", "needs at least one stride-2 conv layer")
    if "sparsity" in m:
        check(m.sparsity.weight >= 0, "model.sparsity.weight", f"must be >= 0, got {m.sparsity.weight}")
        check(0 < m.sparsity.rho < 1, "model.sparsity.rho", f"must be in (0, 1), got {m.sparsity.rho}")
        kind = enum_value(m.sparsity.kind)
        unused_unless(kind != "none", m.sparsity, SparsityConfig(), "model.sparsity.", ("weight",),
                      "model.sparsity.kind=none (no penalty); set model.sparsity.kind=l1 or kl")
        unused_unless(kind == "kl", m.sparsity, SparsityConfig(), "model.sparsity.", ("rho",),
                      f"model.sparsity.kind={kind} (rho is the target activation of kind=kl)")
    at_least(m, "model.", 0, "beta", "kl_warmup_epochs")
    if "pretrain" in m:
        _validate_pretraining(m)
    if "cd_k" in m:
        _validate_cd(m)
    if enum_value(m.get("upsample")) == "unpool" and enum_value(m.get("downsample")) != "maxpool":
        raise UserError("model.upsample=unpool: unpooling puts values back where the encoder's max-pooling found "
                        "them, so it needs model.downsample=maxpool")
    if "hidden" in m and not m.hidden and "latent_activation" in m:
        _check_activation_without_hidden(m)
    elif "hidden" in m and not m.hidden:
        raise UserError("model.hidden=[]: a VAE needs at least one hidden layer here (without one, "
                        "model.activation would have nothing to act on); e.g. 'model.hidden=[256]'")


def _check_network_keys(m) -> None:
    """The S-VAE's network=mlp reads model.hidden, network=conv model.channels and model.trunk_dim."""
    defaults = type(OmegaConf.to_object(m))()
    conv = enum_value(m.network) == "conv"
    unused_unless(not conv, m, defaults, "model.", ("hidden",), "model.network=conv (hidden is the MLP's)")
    unused_unless(conv, m, defaults, "model.", ("channels", "trunk_dim"), "model.network=mlp (they are the conv net's)")


def _check_activation_without_hidden(m) -> None:
    """With model.hidden=[] there is no layer for model.activation to follow; it still counts for a
    plain AE where it makes the model linear (activation=identity drops the sigmoid with
    output_activation=auto)."""
    activation = enum_value(m.activation)
    makes_linear = (activation == "identity" and enum_value(m.get("output_activation")) == "auto"
                    and enum_value(m.get("latent_activation")) == "identity")
    if activation != "relu" and not makes_linear:
        raise UserError(f"model.activation={activation}: has no effect with model.hidden=[] (one Linear layer each "
                        f"side, no hidden layer to follow; the code's activation is model.latent_activation)")


def _validate_cd(m) -> None:
    at_least(m, "model.", 1, "cd_k", "hidden_units", "epochs_per_layer")
    if "hidden_units" in m:
        check(m.latent_dim == m.hidden_units, "model.latent_dim",
              f"an RBM's code is its hidden layer: set model.hidden_units (now {m.hidden_units}), not latent_dim")
    if "layers" in m:
        check(len(m.layers) >= 1 and all(h >= 1 for h in m.layers), "model.layers",
              f"needs at least one hidden size >= 1, got {list(m.layers)}")
        check(m.latent_dim == m.layers[-1], "model.latent_dim",
              f"a DBN's code is its top layer: must equal model.layers[-1] ({m.layers[-1]}), got {m.latent_dim}")


def _validate_pretraining(m) -> None:
    pretrain = enum_value(m.pretrain)
    check(len(m.layers) >= 1, "model.layers", "needs at least one hidden layer, e.g. [1000, 500, 250]")
    check(all(h >= 1 for h in m.layers), "model.layers", f"sizes must be >= 1, got {list(m.layers)}")
    at_least(m, "model.", 1, "pretrain_epochs")
    unused_unless(pretrain != "none", m, _stacked_defaults(), "model.", ("pretrain_epochs",),
                  "model.pretrain=none (no pretraining stages)")
    if pretrain == "rbm":
        check(enum_value(m.activation) == "sigmoid", "model.activation",
              "pretrain=rbm trains each layer as an RBM, whose units are sigmoid: use model.activation=sigmoid")


def check_stage_epochs(cfg) -> None:
    """Pretraining stages come first in trainer.max_epochs: at least one epoch must be left to fine-tune
    (a DBN: every layer must get its epochs)."""
    m = cfg.model
    if "epochs_per_layer" in m:
        stages = len(m.layers) * m.epochs_per_layer
        check(cfg.trainer.max_epochs >= stages, "trainer.max_epochs",
              f"must be >= {stages} ({len(m.layers)} layers x model.epochs_per_layer={m.epochs_per_layer}), or the "
              f"upper layers never train; got {cfg.trainer.max_epochs}")
    if "pretrain" not in m or enum_value(m.pretrain) == "none":
        return
    stages = (len(m.layers) + 1) * m.pretrain_epochs
    check(cfg.trainer.max_epochs > stages, "trainer.max_epochs",
          f"must be > the {stages} pretraining epochs ({len(m.layers) + 1} layers x model.pretrain_epochs="
          f"{m.pretrain_epochs}), so that the whole network is fine-tuned; got {cfg.trainer.max_epochs}")


def _stacked_defaults():
    from aerun.config.schema import StackedAutoencoderConfig

    return StackedAutoencoderConfig()


def _validate_data(d) -> None:
    check(d.val_size >= 0, "data.val_size", f"must be >= 0 (a fraction < 1 or a count), got {d.val_size}")
    at_least(d, "data.", 1, "max_train_samples", "max_test_samples", none_ok=True)
    # data.path and the options of your own data (data=folder / npz) against the dataset they apply
    # to, the class filter, and data.root / data.download where they do nothing
    from aerun.config.schema import DataConfig

    name, defaults = enum_value(d.name), DataConfig()
    own = name in ("folder", "npz")
    unused_unless(own, d, defaults, "data.", ("path", "test_size", "channels", "image_size", "images_key",
                                              "labels_key", "class_names_key"),
                  f"data={name}, which reads data.root; for your own images use data=folder, for arrays data=npz")
    if own:
        check(bool(d.path), "data.path", f"is required with data={name}: the "
              + ("folder of images" if name == "folder" else ".npz or .npy file"))
        check(d.root == d.path, "data.root", f"has no effect with data={name}, which reads data.path; "
              f"give the {'folder' if name == 'folder' else 'file'} as data.path=...")
        unused_unless(False, d, defaults, "data.", ("download",), f"data={name} (only the built-in datasets download)")
        check(d.test_size > 0, "data.test_size", f"must be > 0 (a fraction < 1 or a count >= 1), got {d.test_size}")
    if name == "folder":
        unused_unless(False, d, defaults, "data.", ("images_key", "labels_key", "class_names_key"),
                      "data=folder (they name the arrays of a .npz file: data=npz)")
        check(d.channels in (None, 1, 3), "data.channels", f"must be 1 (grey), 3 (RGB) or null, got {d.channels}")
        size = list(d.image_size) if OmegaConf.is_list(d.image_size) else d.image_size
        def positive(s):
            return isinstance(s, int) and not isinstance(s, bool) and s >= 1
        check(size is None or positive(size) or (isinstance(size, list) and len(size) == 2 and all(map(positive, size))),
              "data.image_size", f"must be null, a size >= 1 or [h, w], got {size}")
    if name == "npz":
        unused_unless(False, d, defaults, "data.", ("channels", "image_size"),
                      "data=npz (the arrays keep their own shape; convert them before saving)")
        if str(d.path).endswith(".npy"):
            unused_unless(False, d, defaults, "data.", ("images_key", "labels_key", "class_names_key"),
                          "a .npy file, which holds one array of images (save a .npz for labels)")
    include, exclude = d.include_classes, d.exclude_classes
    if include is not None and exclude is not None:
        raise UserError("data.include_classes and data.exclude_classes: give one of them, not both")
    check(include is None or len(include) > 0, "data.include_classes", "[] keeps no class; null keeps them all")
    noise_kind = enum_value(d.noise.kind)
    unused_unless(noise_kind != "none", d.noise, NoiseConfig(), "data.noise.", ("level",),
                  "data.noise.kind=none; choose data.noise.kind=gaussian, salt_pepper or masking")
    check(math.isfinite(d.noise.level) and d.noise.level >= 0, "data.noise.level",
          f"must be a finite number >= 0, got {d.noise.level}")
    if noise_kind in ("salt_pepper", "masking", "watermark"):
        what = "an opacity" if noise_kind == "watermark" else "a probability"
        check(d.noise.level <= 1, "data.noise.level", f"is {what} for {noise_kind}: must be <= 1, got {d.noise.level}")
    if noise_kind != "none":
        check(d.noise.level > 0, "data.noise.level", f"must be > 0 when data.noise.kind={noise_kind}")


def _validate_optim(o) -> None:
    check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    at_least(o, "optim.", 0, "weight_decay", "l1_weight")
    if "momentum" in o:
        check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    if "alpha" in o:
        check(0 < o.alpha < 1, "optim.alpha", f"must be in (0, 1), got {o.alpha}")
    s = o.scheduler
    unused_unless(s._target_ is not None, s, SchedulerConfig(), "optim.scheduler.", ("interval",),
                  "optim.scheduler=none (a constant learning rate)")
    at_least(s, "optim.scheduler.", 1, "step_size", "T_max", none_ok=True)
    at_least(s, "optim.scheduler.", 0, "eta_min")
    if "gamma" in s:
        check(0 < s.gamma <= 1, "optim.scheduler.gamma", f"must be in (0, 1], got {s.gamma}")


def _validate_trainer(t) -> None:
    at_least(t, "trainer.", 1, "max_epochs", "batch_size", "eval_batch_size", "log_every_n_steps")
    at_least(t, "trainer.", 0, "train_eval_size", none_ok=True, hint=" (0 = no train metrics, null = all)")
    at_least(t, "trainer.", 0, "checkpoint_every_n_steps", hint=" (0 = at epoch ends only)")
    at_least(t, "trainer.", 0, "images_every_n_epochs", "num_threads")
    at_least(t, "trainer.", 0, "grad_clip", hint=" (0 = off)")
    check(t.precision in PRECISIONS, "trainer.precision", f"got '{t.precision}'; choose one of {', '.join(PRECISIONS)}")
    if t.precision == "16-mixed":
        check(enum_value(t.device) != "cpu", "trainer.precision",
              "16-mixed needs a CUDA device; on CPU use trainer.precision=bf16")
    check(t.ddp_timeout_s > 0, "trainer.ddp_timeout_s", f"must be > 0, got {t.ddp_timeout_s}")
    unused_unless(enum_value(t.strategy) == "ddp", t, TrainerConfig(), "trainer.", ("ddp_timeout_s",),
                  "trainer.strategy=single (it is the DDP process group's timeout)")
    if t.deterministic and t.compile:
        raise UserError("trainer.compile: cannot be combined with trainer.deterministic=true; turn one off")


def _refused_by_the_family(cfg) -> None:
    """A model schema's REFUSES: generic options its family cannot honour, refused (when set to
    anything but their default) with the family's reason."""
    from aerun.config import schema as s

    refuses = getattr(OmegaConf.get_type(cfg.model), "REFUSES", {})
    roots = {"trainer": s.TrainerConfig(), "optim": s.OptimConfig(), "data": s.DataConfig()}
    for key, why in refuses.items():
        first, *rest = key.split(".")
        default = roots[first] if rest else getattr(s.TrainConfig(), first)
        for name in rest:
            default = getattr(default, name)
        value = OmegaConf.select(cfg, key)
        if enum_value(value) != enum_value(default):
            target = cfg.model._target_.rsplit(".", 1)[-1]
            raise UserError(f"{key}={enum_value(value)}: not for {target}: {why}")


def _validate_combinations(cfg) -> None:
    _refused_by_the_family(cfg)
    check_stage_epochs(cfg)
    m = cfg.model
    loss = enum_value(cfg.loss)
    output = enum_value(m.get("output_activation", "sigmoid"))
    if loss == "bce" and output == "identity":
        raise UserError("loss: bce needs outputs in (0, 1), but model.output_activation=identity; use loss=mse")
    if output == "auto" and loss == "bce" and enum_value(m.get("activation")) == "identity":
        raise UserError("loss: bce needs a sigmoid output; a linear (identity) MLP has none: "
                        "use loss=mse or model.output_activation=sigmoid")
    metric = cfg.optimized_metric
    check(metric == "auto" or metric.startswith(("val/", "test/")), "optimized_metric",
          f"must be 'auto' or a 'val/<name>' / 'test/<name>' metric, got '{metric}'")
