"""Configs are the interface: typed schemas (`schema`, `commands`), their checks (`validate`),
and `register_configs`, which puts the schemas in Hydra's ConfigStore under `base_*` names
that the YAML files in `configs/` extend."""

from aerun.config.validate import added_keys, enum_value, flatten, to_plain, validate_train


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; YAML files extend them by name."""
    from hydra.core.config_store import ConfigStore

    from aerun.config.commands import COMMAND_SCHEMAS
    from aerun.config.schema import (MODEL_SCHEMAS, OPTIM_SCHEMAS, SCHEDULER_SCHEMAS, DataConfig, TrainConfig,
                                     TrainerConfig)

    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    for group, schemas in (("model", MODEL_SCHEMAS), ("optim", OPTIM_SCHEMAS), ("optim/scheduler", SCHEDULER_SCHEMAS)):
        for name, schema in schemas.items():
            cs.store(group=group, name=name, node=schema)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
    for name, schema in COMMAND_SCHEMAS.items():
        cs.store(name=name, node=_with_extra_keys(schema))


def _with_extra_keys(schema):
    """The schema as a node, with the keys a dataclass cannot name (config.commands.EXTRA_KEYS)."""
    from omegaconf import OmegaConf

    from aerun.config.commands import EXTRA_KEYS

    if schema not in EXTRA_KEYS:
        return schema
    node = OmegaConf.structured(schema)
    OmegaConf.set_struct(node, False)  # left open: Hydra closes the composed config itself
    for key, default in EXTRA_KEYS[schema].items():
        node[key] = default
    return node


__all__ = ["added_keys", "enum_value", "flatten", "register_configs", "to_plain", "validate_train"]
