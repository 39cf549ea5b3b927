"""The one reader of Hydra override strings (`key=value`, `+key=value`, `~key`, `group=choice`)."""

from __future__ import annotations


def key_of(override: str) -> str:
    """`+model.beta=4` -> `model.beta`; `~data.noise` -> `data.noise`."""
    return override.split("=", 1)[0].lstrip("+~")


def value_of(override: str) -> str | None:
    return override.split("=", 1)[1] if "=" in override else None


def last_value(overrides: list[str], key: str) -> str | None:
    """The value the last override of `key` gives it (None when none sets it)."""
    for override in reversed(overrides):
        if "=" in override and key_of(override) == key:
            return value_of(override)
    return None


def last_override(overrides: list[str], key: str) -> str | None:
    """The whole last override of `key` (`resume=outputs/x`), or None."""
    for override in reversed(overrides):
        if "=" in override and key_of(override) == key:
            return override
    return None


def has(overrides: list[str], key: str) -> bool:
    return any(key_of(o) == key for o in overrides)


def without(overrides: list[str], *prefixes: str) -> list[str]:
    """The overrides whose key starts with none of `prefixes`."""
    return [o for o in overrides if not key_of(o).startswith(prefixes)]


def parsed_value(override: str):
    """The value of one `key=value` override as Hydra parses it (quotes removed, true -> True)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).value()
    except Exception:  # noqa: BLE001 - the CLI reports unparsable overrides itself
        return value_of(override)


def is_true(value) -> bool:
    return value is True or str(value).strip().lower() == "true"


def is_off(value) -> bool:
    return value is None or value is False or str(value).strip().lower() in ("", "null", "none", "false")
