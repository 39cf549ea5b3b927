"""`aerun <command> [hydra overrides...]`: the dispatcher and nothing else.

It checks the overrides by composing the config once (fast: no torch import), turns
every composition or validation problem into one line and exit status 2, picks a
run directory no other run shares, and hands over to Hydra.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
import time
from pathlib import Path

from aerun.errors import UserError

PROG = "aerun"


def _find_config_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"aerun's configs/ folder is missing (looked in {here} and {here.parent})")


CONFIG_DIR = _find_config_dir()

# command -> (module, one-line description, positional argument key or None)
COMMANDS = {
    "train": ("aerun.train", "train a model; writes checkpoints, metrics, TensorBoard logs, image grids", None),
}
# Flags Hydra takes that are followed by a value.
_HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--info", "--config-path", "-cp",
                      "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_HYDRA_BARE_FLAGS = {"-m", "--multirun", "--resolve", "--hydra-help", "--version", "--shell-completion", "-sc"}


def register_command(name: str, module: str, description: str, positional: str | None = None) -> None:
    COMMANDS[name] = (module, description, positional)


def _register_landed_commands() -> None:
    """Commands whose modules exist in this install (each lands with its own issue)."""
    optional = {
        "evaluate": ("aerun.evaluate", "test-set metrics of a run, against PCA, with probes and clustering", "run"),
        "encode": ("aerun.encode", "latent codes (+ labels) of a split to codes.npz, and a latent-space plot", "run"),
        "generate": ("aerun.generate", "new images from the prior (VAEs) or a density fitted to the codes", "run"),
        "interpolate": ("aerun.interpolate", "decode along a path between two inputs' codes; manifold grids", "run"),
        "summarize": ("aerun.summarize", "one table (summary.csv/.md) from a sweep's run directories", "dir"),
        "finetune": ("aerun.finetune", "train a classifier on a run's encoder vs from scratch", "run"),
    }
    package_dir = Path(__file__).resolve().parent
    for name, (module, description, positional) in optional.items():
        if (package_dir / (module.split(".")[1] + ".py")).is_file() and (CONFIG_DIR / f"{name}.yaml").is_file():
            register_command(name, module, description, positional)


_register_landed_commands()


# ----------------------------------------------------------------------------- help
def _group_choices() -> dict[str, list[str]]:
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups


def usage() -> str:
    lines = [f"usage: {PROG} <command> [key=value ...] [group=choice ...] [-m] [--cfg job]", "", "commands:"]
    width = max(len(c) for c in COMMANDS)
    for name, (_, description, positional) in COMMANDS.items():
        arg = f" {positional}=<dir>" if positional else ""
        lines.append(f"  {name:<{width}}  {description}{' (' + arg.strip() + ')' if arg else ''}")
    lines += ["", "config groups (choose with group=choice):"]
    groups = _group_choices()
    group_width = max([11, *(len(g) + 1 for g in groups)])
    for group, choices in groups.items():
        lines.append(f"  {group:<{group_width}} {', '.join(choices) if choices else '(none yet)'}")
    lines += [
        "",
        "examples:",
        f"  {PROG} train model=cnn_ae data.root=../shared/datasets",
        f"  {PROG} train model=linear_ae model.latent_dim=2 data=fashion_mnist trainer.max_epochs=20",
        f"  {PROG} train -m model.latent_dim=2,16,32 optim.lr=1e-3,3e-4     # a sweep",
        f"  {PROG} train debug=smoke                                          # a tiny run",
        f"  {PROG} train --cfg job                                            # print the composed config",
        "",
        f"'{PROG} <command> --help' shows Hydra's help with the full config of that command.",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- argv
def split_args(args: list[str]) -> tuple[list[str], list[str], bool]:
    """Separate Hydra's flags from key=value overrides; returns (flags, overrides, multirun)."""
    flags, overrides, multirun = [], [], False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _HYDRA_BARE_FLAGS or arg in ("--help", "-h"):
            flags.append(arg)
            multirun |= arg in ("-m", "--multirun")
        elif arg in _HYDRA_VALUE_FLAGS:
            flags.append(arg)
            if i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        elif arg.startswith("-") and "=" in arg and arg.split("=", 1)[0] in _HYDRA_VALUE_FLAGS:
            flags.append(arg)
        elif arg.startswith("-") and not re.match(r"^-?\d", arg) and not arg.startswith(("~", "+")):
            raise UserError(f"unknown option '{arg}'; overrides are key=value, flags are -m, --cfg job, --help")
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides, multirun


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _has_override(overrides: list[str], key: str) -> bool:
    return any(_override_key(o) == key for o in overrides)


def _override_value(overrides: list[str], key: str) -> str | None:
    for o in reversed(overrides):
        if "=" in o and _override_key(o) == key:
            return o.split("=", 1)[1]
    return None


# ----------------------------------------------------------------------------- composition check
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


def _suggest(key: str, command: str, overrides: list[str]) -> str:
    """'; did you mean X?' for a misspelt key or group, from the config composed without it."""
    try:
        cfg = _compose(command, [o for o in overrides if "." not in _override_key(o) and _override_key(o) != key])
    except Exception:  # noqa: BLE001 - suggestions are best effort
        return ""
    candidates = [c for c in _flat_keys(cfg) + list(_group_choices()) if not key.startswith(f"{c}.")]
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _compose(command: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from aerun.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=command):
        return compose(config_name=command, overrides=overrides)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _siblings(key: str, command: str, overrides: list[str]) -> str:
    """'; did you mean X?' or the keys that exist beside an unknown one."""
    hint = _suggest(key, command, overrides)
    if hint or "." not in key:
        return hint
    parent = key.rsplit(".", 1)[0]
    try:
        cfg = _compose(command, [o for o in overrides if "." not in _override_key(o)])
        node = cfg
        for part in parent.split("."):
            node = node[part]
        return f"; {parent} has: {', '.join(str(k) for k in node.keys())}"
    except Exception:  # noqa: BLE001 - best effort
        return ""


def explain_composition_error(exc: BaseException, command: str, overrides: list[str]) -> str:
    """One line that names the override, what is wrong, and what is allowed."""
    chain = _exception_chain(exc)
    text = "\n".join(str(e) for e in chain)
    match = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if match:
        group, choice = match.groups()
        options = _group_choices().get(group.split("/")[-1], [])
        allowed = f"; choose one of {', '.join(options)}" if options else ""
        return f"{group}={choice}: no such {group} config{allowed}"
    match = re.search(r"Could not load '([^']+)'", text)
    if match:
        return f"no such config '{match.group(1)}'"
    match = re.search(r"Multiple values for ([\w/]+)\. To override a value use 'override [\w/]+: ([^']+)'", text)
    if match:
        group, choice = match.groups()
        return f"+{group}={choice}: {group} is already in the defaults, so there is nothing to add; write {group}={choice}"
    if "Ambiguous value" in text:
        return f"{_first_line(chain[0])} (a comma-separated list is a sweep: add -m)"
    for error in chain:
        full = re.search(r"full_key: (\S+)", str(error))
        if not full:
            continue
        key, detail = full.group(1), _first_line(error)
        if re.match(r"Key '[^']+' (is )?not in", detail):
            return f"{key}: unknown key{_siblings(key, command, overrides)}"
        detail = re.sub(r" of type '\w+'", "", detail)
        value = _override_value(overrides, key)
        return f"{key}={value}: {detail}" if value is not None else f"{key}: {detail}"
    match = re.search(r"Could not override '([^']+)'", text)
    if match:
        key = match.group(1)
        return f"{key}: unknown key{_siblings(key, command, overrides)}"
    return _first_line(chain[-1])


# Hydra plugins behind hydra/<group>=<choice>, and the aerun extra that installs each.
PLUGIN_EXTRAS = {"joblib": "parallel", "submitit_local": "slurm", "submitit_slurm": "slurm", "optuna": "optuna"}


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
        raise UserError(f"cannot parse the overrides: {_first_line(exc)} (write key=value)") from None
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
        variant = [o for o in variant if not _override_key(o).startswith(("hydra.", "hydra="))]
        try:
            cfg = _compose(command, variant)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - every composition problem becomes one line
            raise UserError(_missing_plugin(exc) or explain_composition_error(exc, command, variant)) from None
        from aerun.config import added_keys

        added = added_keys(cfg)
        if added:
            raise UserError(f"{added[0]}: unknown key (a `+` override adds a key, but {command} has no such "
                            f"setting){_siblings(added[0], command, variant)}")
        if validate is not None and not multirun:
            validate(cfg)


# ----------------------------------------------------------------------------- run dirs
def claim_run_dir(base: str = "outputs", multirun: bool = False) -> str:
    """A new directory that no other run can share: mkdir fails if another run took the name."""
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    parent = Path(base) / ("multirun" if multirun else "") / stamp
    for attempt in range(1000):
        path = parent if attempt == 0 else Path(f"{parent}-{attempt}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return str(path)
        except FileExistsError:
            continue
    raise UserError(f"could not create a fresh run directory under {parent.parent}")


def _command_module(command: str):
    return importlib.import_module(COMMANDS[command][0])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from aerun import __version__

        print(f"{PROG} {__version__}")
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        match = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"; did you mean '{match[0]}'?" if match else ""
        _error(f"unknown command '{command}'{hint} Commands: {', '.join(COMMANDS)}")
        return 2
    try:
        return _run_command(command, args)
    except UserError as exc:
        _error(str(exc))
        return 2


def console_main() -> None:
    """The `aerun` command (and `python -m aerun`): `main()`, then a prompt exit."""
    try:
        code = main()
    except SystemExit as exc:  # a signal stop (143/130), or Hydra's own exits
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    exit_promptly(code)


def exit_promptly(code: int) -> None:
    """Exit without the interpreter's module teardown, which takes 0.5-1 s once torch and
    torch._dynamo are loaded (an eighth of a one-epoch run). What a normal exit does that
    matters still happens: atexit handlers run (logging's flushes and closes Hydra's log file;
    multiprocessing's reaps children) and stdout/stderr are flushed. Files aerun writes are
    closed where they are written. While other non-daemon threads run, it exits normally."""
    import atexit
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        # e.g. the joblib launcher's process-pool manager: it is told to stop by hooks that only
        # the interpreter's own shutdown runs, so leave the exit to the interpreter.
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def _run_command(command: str, args: list[str]) -> int:
    module_name, _, positional = COMMANDS[command]
    if positional and args and "=" not in args[0] and not args[0].startswith("-"):
        args = [f"{positional}={args[0]}"] + args[1:]
    flags, overrides, multirun = split_args(args)
    if not multirun and _override_value(overrides, "hparams_search") not in (None, "null"):
        flags, multirun = [*flags, "-m"], True  # a search (hparams_search=optuna) is always a sweep
    wants_help = any(f in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") for f in flags)
    module = _command_module(command)
    prepare = getattr(module, "prepare_overrides", None)
    if prepare is not None:
        overrides = prepare(overrides, multirun)
    if os.environ.get("RANK", "0") not in ("", "0") and "WORLD_SIZE" in os.environ:
        # A DDP worker under torchrun: rank 0 owns the run directory; this one writes nothing there.
        import tempfile

        scratch = tempfile.mkdtemp(prefix="aerun-rank{}-".format(os.environ["RANK"]))
        return _launch_hydra(command, module, flags, overrides + [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"])
    if not wants_help:
        check_config(command, overrides, multirun, getattr(module, "validate", None))
        if multirun and not _has_override(overrides, "hydra.sweep.dir"):
            overrides.append(f"hydra.sweep.dir={claim_run_dir(multirun=True)}")
        elif not multirun and not _has_override(overrides, "hydra.run.dir"):
            overrides.append(f"hydra.run.dir={claim_run_dir()}")
    return _launch_hydra(command, module, flags, overrides)


def _launch_hydra(command: str, module, flags: list[str], overrides: list[str]) -> int:
    import hydra

    from aerun.config import register_configs

    register_configs()
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    result = {}

    def task(cfg):
        result["value"] = run_task(module, cfg)
        return result["value"]

    task.__module__ = "aerun"  # Hydra names the job (and its log file) after the function
    task.__name__ = command
    saved_argv = sys.argv
    sys.argv = [f"{PROG} {command}", *flags, *overrides]
    from aerun import sweep

    sweep.last_sweep_problems = None
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=command, version_base="1.3")(task)()
    finally:
        sys.argv = saved_argv
    # A sweep runs every job even when some fail; its exit status still says whether all succeeded.
    return 1 if sweep.last_sweep_problems else 0


def run_task(module, cfg):
    """One job: validate, run, and turn a UserError into one line (a failed job in a sweep)."""
    from hydra.core.hydra_config import HydraConfig

    multirun = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    try:
        return module.run(cfg)
    except UserError as exc:
        if not multirun:
            _error(str(exc))
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        on_failure = getattr(module, "on_job_failure", None)
        if on_failure is not None:
            on_failure(cfg, exc)
        _error(f"job {HydraConfig.get().job.num} failed: {exc}")
        return None
    except Exception as exc:  # noqa: BLE001 - in a sweep, one job's crash is that job's failure
        if not multirun:
            raise
        from aerun.sweep import record_crash

        hydra_cfg = HydraConfig.get()
        job_dir = Path(hydra_cfg.runtime.output_dir)
        record_crash(job_dir, exc, hydra_cfg.job.num)  # the traceback goes to the job's aerun.log
        _error(f"job {hydra_cfg.job.num} crashed: {type(exc).__name__}: {_first_line(exc)} "
               f"(traceback in {job_dir / 'aerun.log'}); the other jobs go on")
        return None


if __name__ == "__main__":
    sys.exit(main())
