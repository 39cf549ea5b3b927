"""Every override is checked before anything runs: the config is composed once per sweep
value (fast: no torch import), and each composition or validation problem becomes one line
that names the override, what is wrong and what is allowed (`UserError`, exit status 2)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from aerun import overrides as ov
from aerun.errors import UserError


def find_config_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"aerun's configs/ folder is missing (looked in {here} and {here.parent})")


CONFIG_DIR = find_config_dir()
# Keys an earlier aerun had, and where they live now.
MOVED_KEYS = {"optim.min_lr": "optim.scheduler.eta_min (with optim.scheduler=cosine)",
              "optim.step_size_epochs": "optim.scheduler.step_size (with optim.scheduler=step)",
              "optim.gamma": "optim.scheduler.gamma (with optim.scheduler=step)",
              "optim.name": "the optim group: optim=adam, optim=adamw or optim=sgd"}
# Hydra plugins behind hydra/<group>=<choice>, and the aerun extra that installs each.
PLUGIN_EXTRAS = {"joblib": "parallel", "submitit_local": "slurm", "submitit_slurm": "slurm", "optuna": "optuna"}


def group_choices() -> dict[str, list[str]]:
    """Config group -> its choices, nested groups as `optim/scheduler`."""
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.rglob("*") if p.is_dir() and "hydra" not in p.parts):
        groups[folder.relative_to(CONFIG_DIR).as_posix()] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups


def alias_nested_groups(overrides: list[str]) -> list[str]:
    """`optim.scheduler=cosine` is the nested group `optim/scheduler=cosine` (as Hydra spells it)."""
    nested = {group.replace("/", "."): group for group in group_choices() if "/" in group}
    out = []
    for o in overrides:
        key = ov.key_of(o)
        if key in nested and "=" in o and not o.startswith("~"):
            o = o.replace(key, nested[key], 1)
        out.append(o)
    return out


def compose(command: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from aerun.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=command):
        return hydra_compose(config_name=command, overrides=alias_nested_groups(overrides))


def _flat_keys(node, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    keys = []
    for key in node.keys() if isinstance(node, DictConfig) else []:
        full = f"{prefix}{key}"
        keys.append(full)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            keys.extend(_flat_keys(child, full + "."))
    return keys


def _without_dotted(overrides: list[str], key: str = "") -> list[str]:
    return [o for o in overrides if "." not in ov.key_of(o) and ov.key_of(o) != key]


def _suggest(key: str, command: str, overrides: list[str]) -> str:
    """'; did you mean X?' for a misspelt key or group, from the config composed without it."""
    try:
        cfg = compose(command, _without_dotted(overrides, key))
    except Exception:  # noqa: BLE001 - suggestions are best effort
        return ""
    candidates = [c for c in _flat_keys(cfg) + list(group_choices()) if not key.startswith(f"{c}.")]
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _other_families(key: str, command: str, overrides: list[str]) -> str:
    """'; it applies to model=a, model=b' when `key` is an option of other choices of its group."""
    group, _, rest = key.partition(".")
    if command != "train" or group not in ("model", "optim") or not rest:
        return ""
    chosen = ov.last_value(overrides, group)
    owners = []
    for choice in group_choices().get(group, []):
        try:
            cfg = compose(command, [f"{group}={choice}"])
        except Exception:  # noqa: BLE001 - best effort
            continue
        if key in _flat_keys(cfg):
            owners.append(f"{group}={choice}")
    if not owners:
        return ""
    current = f" {group}={chosen}" if chosen else " this one"
    return f"; it is not an option of{current}, it applies to {', '.join(owners)}"


def _unknown_key(key: str, command: str, overrides: list[str]) -> str:
    if key in MOVED_KEYS:
        return f"{key}: unknown key; it moved to {MOVED_KEYS[key]}"
    hint = _other_families(key, command, overrides) or _siblings(key, command, overrides)
    return f"{key}: unknown key{hint}"


def _siblings(key: str, command: str, overrides: list[str]) -> str:
    """'; did you mean X?' or the keys that exist beside an unknown one."""
    hint = _suggest(key, command, overrides)
    if hint or "." not in key:
        return hint
    parent = key.rsplit(".", 1)[0]
    try:
        node = compose(command, _without_dotted(overrides))
        for part in parent.split("."):
            node = node[part]
        return f"; {parent} has: {', '.join(str(k) for k in node.keys() if not str(k).startswith('_'))}"
    except Exception:  # noqa: BLE001 - best effort
        return ""


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _ambiguous(chain, command: str, overrides: list[str]) -> str:
    """`model.hidden=128,64` without -m: a list written without brackets, or a sweep without -m."""
    line = first_line(chain[0])
    for o in overrides:
        key, value = ov.key_of(o), ov.value_of(o) or ""
        if "," in value and not value.lstrip().startswith("["):
            try:
                from omegaconf import OmegaConf

                others = [x for x in overrides if x != o and "," not in (ov.value_of(x) or "")]
                is_list = OmegaConf.is_list(OmegaConf.select(compose(command, others), key))  # model=mlp_ae's hidden
            except Exception:  # noqa: BLE001 - best effort
                is_list = False
            if is_list:
                return f"{key}={value}: {key} is a list; write it in brackets and quotes: '{key}=[{value}]'"
            return f"{key}={value}: a comma-separated value is a sweep; add -m to run one job per value"
    return f"{line} (a comma-separated list is a sweep: add -m)"


def explain_composition_error(exc: BaseException, command: str, overrides: list[str]) -> str:
    """One line that names the override, what is wrong, and what is allowed."""
    chain = _exception_chain(exc)
    text = "\n".join(str(e) for e in chain)
    match = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if match:
        group, choice = match.groups()
        options = group_choices().get(group, group_choices().get(group.split("/")[-1], []))
        allowed = f"; choose one of {', '.join(options)}" if options else ""
        shown = group.replace("/", ".")
        return f"{shown}={choice}: no such {shown} config{allowed}"
    match = re.search(r"Could not load '([^']+)'", text)
    if match:
        return f"no such config '{match.group(1)}'"
    match = re.search(r"Multiple values for ([\w/]+)\. To override a value use 'override [\w/]+: ([^']+)'", text)
    if match:
        group, choice = match.groups()
        return f"+{group}={choice}: {group} is already in the defaults, so there is nothing to add; write {group}={choice}"
    if "Ambiguous value" in text:
        return _ambiguous(chain, command, overrides)
    for error in chain:
        full = re.search(r"full_key: (\S+)", str(error))
        if not full:
            continue
        key, detail = full.group(1), first_line(error)
        if re.match(r"Key '[^']+' (is )?not in", detail):
            return _unknown_key(key, command, overrides)
        detail = re.sub(r" of type '\w+'", "", detail)
        value = ov.last_value(overrides, key)
        return f"{key}={value}: {detail}" if value is not None else f"{key}: {detail}"
    match = re.search(r"Could not override '([^']+)'", text)
    if match:
        return _unknown_key(match.group(1), command, overrides)
    return first_line(chain[-1])


def _missing_plugin(exc: BaseException) -> str | None:
    """'hydra/launcher=joblib: ... pip install aerun[parallel]' when a plugin's config is missing."""
    text = "\n".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    match = re.search(r"Could not find '(hydra/(?:launcher|sweeper))/([^']+)'", text)
    if not match:
        return None
    group, choice = match.groups()
    options = re.findall(r"^\t(\S+)$", text, flags=re.M)
    extra = PLUGIN_EXTRAS.get(choice)
    hint = f"; install it with: pip install 'aerun[{extra}]'" if extra else ""
    known = f" (installed: {', '.join(options)})" if options else ""
    return f"{group}={choice}: no such Hydra plugin config{known}{hint}"


def check_config(command: str, overrides: list[str], multirun: bool, validate) -> None:
    """Compose once per sweep value (first values elsewhere); raise UserError on a bad override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # noqa: BLE001 - hydra raises its own parse errors
        raise UserError(f"cannot parse the overrides: {first_line(exc)} (write key=value)") from None
    variants = [[]]
    if multirun:
        fixed, sweeps = [], []
        for text, override in zip(overrides, parsed):
            if override.is_sweep_override() and not override.is_hydra_override():
                try:
                    values = list(override.sweep_string_iterator())
                except Exception:  # noqa: BLE001 - interval()/range sweeps for optimisers
                    continue
                sweeps.append((override.get_key_element(), values))
            else:
                fixed.append(text)
        first = [f"{key}={values[0]}" for key, values in sweeps]
        variants = [fixed + first]
        for i, (key, values) in enumerate(sweeps):
            for value in values[1:]:
                variants.append(fixed + first[:i] + [f"{key}={value}"] + first[i + 1:])
    else:
        variants = [overrides]
    for variant in variants:
        # hydra.* settings are Hydra's to check; hydra/<group> choices (launcher, sweeper) compose here
        variant = [o for o in variant if not ov.key_of(o).startswith(("hydra.", "hydra="))]
        try:
            cfg = compose(command, variant)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - every composition problem becomes one line
            raise UserError(_missing_plugin(exc) or explain_composition_error(exc, command, variant)) from None
        from aerun.config import added_keys

        added = added_keys(cfg)
        if added:
            hint = _other_families(added[0], command, variant) or _siblings(added[0], command, variant)
            raise UserError(f"{added[0]}: unknown key (a `+` override adds a key, but {command} has no such "
                            f"setting){hint}")
        if validate is not None and not multirun:
            validate(cfg)


