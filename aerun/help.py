"""`aerun <command> --help`: the composed config of that command, every key with the comment
its YAML file gives it, so the options explain themselves where a user looks for them."""

from __future__ import annotations

import re
from pathlib import Path

from aerun import overrides as ov
from aerun.precheck import CONFIG_DIR, compose

_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w]*):(.*?)(?:\s+#\s*(.*))?$")


def yaml_comments(path: Path, prefix: str = "") -> dict[str, str]:
    """{dotted key: its inline comment} of one YAML file, keys under `prefix` (its package)."""
    comments, stack = {}, []  # stack: (indent, key)
    package = prefix
    for line in path.read_text().splitlines():
        if line.startswith("# @package _global_"):
            package = ""
        match = _KEY_LINE.match(line)
        if not match or line.lstrip().startswith(("#", "-")):
            continue
        indent, key, _, comment = len(match.group(1)), match.group(2), match.group(3), match.group(4)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment and key != "defaults":
            comments[package + ".".join(k for _, k in stack)] = comment.strip()
    return comments


def _sources(command: str, cfg) -> list[tuple[Path, str]]:
    """The YAML files the composed config came from, with the package of each."""
    choices = cfg.hydra.runtime.choices if "hydra" in cfg else {}
    sources = [(CONFIG_DIR / f"{command}.yaml", "")]
    for group, choice in choices.items():
        if choice is None or str(group).startswith("hydra") or group.startswith("hydra/"):
            continue
        path = CONFIG_DIR / group / f"{choice}.yaml"
        if path.is_file():
            sources.append((path, group.replace("/", ".") + "."))
    return sources


def command_help(command: str, overrides: list[str]) -> str:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from aerun.config import register_configs

    register_configs()
    kept = [o for o in overrides if not ov.key_of(o).startswith(("hydra.", "hydra="))]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=command):
            cfg = hydra_compose(config_name=command, overrides=kept, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - a bad override: the plain composition explains it
        cfg = compose(command, kept)
    comments = {}
    for path, package in _sources(command, cfg):
        comments.update(yaml_comments(path, package))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    body = _annotate(OmegaConf.to_yaml(cfg), comments)
    return (f"aerun {command}: the composed config; change any value with key=value"
            f"{' (and groups with group=choice, e.g. model=vae)' if command == 'train' else ''}\n\n{body}\n"
            f"Commands, config groups and their choices: aerun --help")


def _annotate(text: str, comments: dict[str, str]) -> str:
    """Append each key's comment to its line of the YAML dump; drop Hydra's internal _partial_."""
    out, stack = [], []
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if not match or line.lstrip().startswith("-"):
            out.append(line)
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if key == "_partial_":
            continue
        comment = comments.get(".".join(k for _, k in stack))
        out.append(f"{line:<40}  # {comment}" if comment else line)
    return "\n".join(out)
