"""Command-line flags of every CLI, as `t5x/train.py` has them, and the gin they select.

`--gin_file` (repeatable), `--gin_bindings` (repeatable), `--gin.NAME=VALUE`,
`--gin_search_paths`, `--tfds_data_dir`, and the multi-process flags of
`training/distributed.py`; on the CLIs that train a sweep, `--sweep` (the SWEEP macro as a
Python literal, bound as `SWEEP = ...`). `configure_from_argv` parses them, starts
`jax.distributed` where asked, imports our task registry and parses the gin files (not
finalized: task modules named by MIXTURE_OR_TASK_MODULE are imported when a run starts).
"""

from __future__ import annotations

import ast
import importlib
import re
from typing import Callable, Optional, Sequence, Union

from .. import gin_utils
from ..training import distributed


def define_gin_flags(flags) -> None:
    """--gin_file, --gin_bindings, --gin_search_paths, --tfds_data_dir (once)."""
    if "gin_file" in flags.FLAGS:
        return
    flags.DEFINE_multi_string("gin_file", [], "gin files (searched in --gin_search_paths "
                              "and the package gin/ directory)")
    flags.DEFINE_multi_string("gin_bindings", [], "individual gin bindings")
    flags.DEFINE_list("gin_search_paths", [], "comma-separated gin search paths")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory override")


def define_checkpoint_flag(flags, default: str = "best") -> None:
    """--checkpoint: 'best', 'latest' or a step (once)."""
    if "checkpoint" not in flags.FLAGS:
        flags.DEFINE_string("checkpoint", default, "'best', 'latest' or a step")


def checkpoint_step(value: str) -> Union[str, int]:
    """A --checkpoint / EVAL_CHECKPOINT value: 'best', 'latest' or an int step."""
    if value in ("best", "latest"):
        return value
    from ..errors import ConfigError

    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--checkpoint={value!r}: expected 'best', 'latest' or a step "
                          "number") from None


SWEEP_FLAG_HELP = ("a sweep trained as one run (training/sweep.py): the SWEEP macro as a "
                   "Python literal, e.g. \"{'seed': [0, 1], 'learning_rate': [0.1, 0.3]}\"")
_SWEEP_BINDING = re.compile(r"^\s*SWEEP\s*=", re.M)


def define_sweep_flag(flags) -> None:
    """--sweep (once): SWEEP as a Python literal, for the CLIs that train sweeps."""
    if "sweep" not in flags.FLAGS:
        flags.DEFINE_string("sweep", None, SWEEP_FLAG_HELP)


def sweep_binding(value: str, bindings: Sequence[str] = ()) -> str:
    """A --sweep value (a grid dict or a list of dicts, as the SWEEP macro) -> the gin
    binding `SWEEP = <literal>`; a value that is no Python literal or no sweep, or other
    gin `bindings` of the command that also bind SWEEP, is a ConfigError naming --sweep."""
    from ..errors import ConfigError
    from ..training.sweep import sweep_configurations

    if any(_SWEEP_BINDING.search(binding) for binding in bindings):
        raise ConfigError("--sweep and --gin.SWEEP (or a gin binding SWEEP = ...) both set "
                          "SWEEP; give one of them")

    try:
        literal = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        reason = getattr(e, "msg", None) or str(e).splitlines()[0]
        raise ConfigError(f"--sweep={value!r} is not a Python literal ({reason}); write e.g. "
                          "--sweep=\"{'seed': [0, 1], 'learning_rate': [0.1, 0.3]}\"") from None
    try:
        sweep_configurations(literal)
    except ConfigError as e:
        raise ConfigError(f"--sweep: {e}") from None
    return f"SWEEP = {literal!r}"


def _names_flag(arg: str, name: str) -> bool:
    return arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] == name


HELP_ARGS = ("--help", "-h", "--helpshort", "--helpfull", "-?")


def print_help(FLAGS) -> None:
    """The CLI's usage (its module docstring) and its flags, for `--help`: absl's flag
    parser alone (without `absl.app`) knows no help flag."""
    import __main__

    usage = (getattr(__main__, "__doc__", None) or "").strip()
    if usage:
        print(usage, end="\n\n")
    parts = [FLAGS.main_module_help()]
    for module in (__name__, distributed.__name__):  # --gin_* and the multi-process flags
        parts.append(FLAGS.module_help(module))
    print("\n\n".join(part for part in parts if part.strip()))


def configure_from_argv(argv: Sequence[str],
                        extra_flags: Optional[Callable] = None, sweep: bool = False):
    """Parses t5x/train.py-style flags (plus `extra_flags(flags)`, plus `--sweep` where
    `sweep`: a CLI that trains through `runs.train`) and the gin they name; returns the
    absl FLAGS object."""
    from absl import flags

    from ..errors import ConfigError

    define_gin_flags(flags)
    distributed.define_flags(flags)
    if sweep:
        define_sweep_flag(flags)
    if extra_flags:
        extra_flags(flags)
    FLAGS = flags.FLAGS
    argv = list(argv)
    if any(arg in HELP_ARGS for arg in argv[1:]):
        print_help(FLAGS)
        raise SystemExit(0)
    if not sweep and any(_names_flag(arg, "sweep") for arg in argv[1:]):
        raise ConfigError("--sweep: this CLI does not train sweeps; a sweep (SWEEP) trains "
                          "with python -m xprompt_jax.train --sweep=...")
    if "sweep" in FLAGS:  # absl keeps a value across parses in one process: this argv's only
        FLAGS["sweep"].unparse()
    try:
        FLAGS(gin_utils.rewrite_gin_args(argv))
    except flags.Error as e:  # an unknown flag, a bad value: one line naming it
        raise ConfigError(f"{e} (--help lists the flags)") from None
    if sweep and FLAGS.sweep is not None:
        FLAGS.gin_bindings = list(FLAGS.gin_bindings) + [sweep_binding(FLAGS.sweep,
                                                                       FLAGS.gin_bindings)]
    distributed.initialize_from_flags(FLAGS)
    if FLAGS.tfds_data_dir:
        import seqio

        seqio.set_tfds_data_dir_override(FLAGS.tfds_data_dir)
    # Task modules may register gin configurables (e.g. SUPERGLUE_DIR): import ours first.
    importlib.import_module("xprompt_jax.tasks")
    gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings,
                        gin_utils.split_search_paths(FLAGS.gin_search_paths), finalize=False)
    return FLAGS


def import_task_module(module: Optional[str], task_name: Optional[str] = None) -> None:
    """Imports the module that registers the run's task (T5X's MIXTURE_OR_TASK_MODULE),
    then checks that `task_name` (MIXTURE_OR_TASK_NAME; None: a job without a task) is
    registered: a mistyped name is one line with the closest names, before any work."""
    if module:
        importlib.import_module(module)
    if task_name:
        from ..tasks import registry

        registry.require_task(task_name, module)
