"""Objects from a run's plain config: the model, its optimizers and their schedulers.

Configs are the registry: each names its class in `_target_`, and everything else in the
node is an argument of that class (Hydra's `instantiate`). No name-to-class table here.
"""

from __future__ import annotations

from aerun.config.schema import OPTIM_KEYS_OF_AERUN
from aerun.errors import UserError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_model(model_cfg: dict, input_shape, num_classes: int | None = None):
    """Instantiate the model class named by `_target_` with the config's arguments; a
    conditional model also gets the dataset's number of classes (what the checkpoint records)."""
    from hydra.utils import instantiate

    extra = {"num_classes": num_classes} if model_cfg.get("conditional") else {}
    try:
        return instantiate(dict(model_cfg), input_shape=tuple(input_shape), _convert_="all", **extra)
    except Exception as exc:  # noqa: BLE001 - a bad _target_ or argument is a config problem
        raise UserError(f"model: cannot build {model_cfg.get('_target_')}: {_first_line(exc)}") from None


def build_optimizer(params, optim: dict):
    """The optimizer `optim["_target_"]` over `params`, fused where torch has a fused kernel
    for their device: one kernel for the whole update instead of a chain of foreach ops
    (measured faster on CPU too: benchmarks/cpu_options.py)."""
    from hydra.utils import get_class

    kwargs = {k: v for k, v in optim.items() if k not in OPTIM_KEYS_OF_AERUN and not k.startswith("_")}
    optimizer_class = get_class(optim["_target_"])
    params = list(params)
    try:
        return optimizer_class(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # an older torch, a class or device without the kernel
        return optimizer_class(params, **kwargs)


def build_optimizers(model, optim: dict) -> dict:
    """One optimizer per entry of the model's `parameter_groups()`, all from the same config; a
    parameter group may carry `lr_scale` (its learning rate is optim.lr times that)."""
    optimizers = {}
    for name, params in model.parameter_groups().items():
        groups = []
        for group in params:
            if isinstance(group, dict) and "lr_scale" in group:
                group = {k: v for k, v in group.items() if k != "lr_scale"} | {"lr": optim["lr"] * group["lr_scale"]}
            groups.append(group)
        optimizers[name] = build_optimizer(groups, optim)
    return optimizers


def build_schedulers(optimizers: dict, optim: dict, max_epochs: int, steps_per_epoch: int) -> dict:
    """{name: Scheduled} for each optimizer, or {} when optim.scheduler names none. A null
    T_max (cosine) spans the whole run in the scheduler's own interval."""
    from hydra.utils import get_class

    from aerun.engine.state import Scheduled

    scheduler_cfg = dict(optim["scheduler"])
    target = scheduler_cfg.get("_target_")
    if not target:
        return {}
    per_step = scheduler_cfg.get("interval", "epoch") == "step"
    kwargs = {k: v for k, v in scheduler_cfg.items() if not k.startswith("_") and k != "interval"}
    if "T_max" in kwargs and kwargs["T_max"] is None:
        kwargs["T_max"] = max(1, max_epochs * (steps_per_epoch if per_step else 1))
    scheduler_class = get_class(target)
    return {name: Scheduled(scheduler_class(opt, **kwargs), per_step) for name, opt in optimizers.items()}
