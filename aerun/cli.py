"""`aerun <command> [hydra overrides...]`: the dispatcher.

It reads argv, checks the overrides (`aerun.precheck`: one line and exit status 2 for a bad
one, before any slow import), lets the command refuse what it can see is wrong before a
run directory exists, and hands over to `aerun.launch`. Every way the process ends goes
through `aerun.exits`: one line, the right exit status.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys

from aerun import exits
from aerun import overrides as ov
from aerun.errors import UserError
from aerun.precheck import alias_nested_groups, check_config, group_choices

PROG = "aerun"

# command -> (module, one-line description, positional argument key or None)
COMMANDS = {
    "train": ("aerun.commands.train", "train a model; writes checkpoints, metrics, TensorBoard logs, image grids", None),
    "evaluate": ("aerun.commands.evaluate", "test-set metrics of a run, against PCA, with probes and clustering", "run"),
    "encode": ("aerun.commands.encode", "latent codes (+ labels) of a split to codes.npz, and a latent-space plot", "run"),
    "generate": ("aerun.commands.generate", "new images from the prior (VAEs) or a density fitted to the codes", "run"),
    "interpolate": ("aerun.commands.interpolate", "decode along a path between two inputs' codes; manifold grids", "run"),
    "summarize": ("aerun.commands.summarize", "one table (summary.csv/.md) from a sweep's run directories", "dir"),
    "finetune": ("aerun.commands.finetune", "train a classifier on a run's encoder vs from scratch", "run"),
    "judge": ("aerun.commands.judge", "train (once) and cache the classifier that scores generated samples", None),
    "anomaly": ("aerun.commands.anomaly", "anomaly scores of test images, AUROC / AUPRC: one-class, held-out, OOD", "run"),
    "compress": ("aerun.commands.compress", "rate-distortion of a run's quantised codes against PCA and JPEG", "run"),
}
# Flags Hydra takes that are followed by a value.
_HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--info", "--config-path", "-cp",
                      "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_HYDRA_BARE_FLAGS = {"-m", "--multirun", "--resolve", "--hydra-help", "--version", "--shell-completion", "-sc"}
HELP_FLAGS = ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c")


def usage() -> str:
    lines = [f"usage: {PROG} <command> [key=value ...] [group=choice ...] [-m] [--cfg job]", "", "commands:"]
    width = max(len(c) for c in COMMANDS)
    for name, (_, description, positional) in COMMANDS.items():
        arg = f" ({positional}=<dir>)" if positional else ""
        lines.append(f"  {name:<{width}}  {description}{arg}")
    lines += ["", "config groups of train (choose with group=choice):"]
    groups = group_choices()
    group_width = max([11, *(len(g) + 1 for g in groups)])
    for group, choices in groups.items():
        lines.append(f"  {group.replace('/', '.'):<{group_width}} {', '.join(choices) if choices else '(none yet)'}")
    lines += [
        "",
        "examples:",
        f"  {PROG} train model=cnn_ae data.root=../shared/datasets",
        f"  {PROG} train model=linear_ae model.latent_dim=2 data=fashion_mnist trainer.max_epochs=20",
        f"  {PROG} train -m model.latent_dim=2,16,32 optim.lr=1e-3,3e-4     # a sweep",
        f"  {PROG} train debug=smoke                                          # a tiny run",
        f"  {PROG} train --cfg job                                            # print the composed config",
        "",
        f"'{PROG} <command> --help' shows that command's options, with what each one does.",
    ]
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> int:
    """The CLI as a function: returns the exit status; every failure is one line on stderr."""
    from aerun.signals import POLICY

    POLICY.install()
    POLICY.pending = None  # a new command (tests call main() again in one process)
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
        exits.say(f"unknown command '{command}'{hint} Commands: {', '.join(COMMANDS)}")
        return 2
    try:
        return _run_command(command, args)
    except BaseException as exc:  # noqa: BLE001 - the exit policy tells every kind apart
        if isinstance(exc, SystemExit):
            raise
        return exits.report(exc)
    finally:
        POLICY.pending = None  # reported (or swallowed for good): not for the next command in this process


def _run_command(command: str, args: list[str]) -> int:
    from aerun.launch import choose_run_dir, launch

    module_name, _, positional = COMMANDS[command]
    if positional and args and "=" not in args[0] and not args[0].startswith("-"):
        args = [f"{positional}={args[0]}"] + args[1:]
    flags, overrides, multirun = split_args(args)
    if not multirun and ov.last_value(overrides, "hparams_search") not in (None, "null"):
        flags, multirun = [*flags, "-m"], True  # a search (hparams_search=optuna) is always a sweep
    wants_help = any(f.split("=", 1)[0] in HELP_FLAGS for f in flags)  # --cfg job and --cfg=job alike
    from aerun.signals import POLICY

    with POLICY.deferred():  # the command's module imports torch (a C extension: see aerun.signals)
        module = importlib.import_module(module_name)
    if wants_help and any(f in ("--help", "-h") for f in flags):
        from aerun.help import command_help

        print(command_help(command, overrides))
        return 0
    prepare = getattr(module, "prepare_overrides", None)
    if prepare is not None:
        overrides = prepare(overrides, multirun)
    overrides = alias_nested_groups(overrides)  # what the user typed and what a resumed run saved
    if os.environ.get("RANK", "0") not in ("", "0") and "WORLD_SIZE" in os.environ:
        # A DDP worker under torchrun: rank 0 owns the run directory; this one writes nothing there.
        import tempfile

        scratch = tempfile.mkdtemp(prefix="aerun-rank{}-".format(os.environ["RANK"]))
        return launch(command, module, flags, overrides + [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"])
    if not wants_help:
        check_config(command, overrides, multirun, getattr(module, "validate", None))
        overrides = choose_run_dir(overrides, multirun, keep_runs=getattr(module, "WRITES_A_RUN", False))
    return launch(command, module, flags, overrides)


def console_main() -> None:
    """The `aerun` command (and `python -m aerun`): `main()`, then a prompt exit."""
    try:
        code = main()
    except SystemExit as exc:  # Hydra's own exits (--help, --cfg)
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


