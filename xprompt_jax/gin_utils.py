"""gin plumbing for the CLIs, with t5x/train.py's flags.

`--gin_file` (repeatable), `--gin_bindings` (repeatable), `--gin_search_paths`
(comma-separated), and `--gin.NAME=VALUE` (rewritten to a binding `NAME = VALUE`, as T5X's
`gin_utils.rewrite_gin_args` does). The package's own `gin/` directory is always on the
search path. Errors name the file or binding at fault.

Lookup order: the user's `--gin_search_paths`, then the package's `gin/`, then (last) the
working directory. gin itself tries the working directory first, for `--gin_file` and for
every `include`; gin can call any registered function, so a file planted in a shared
working directory (say `prompts/uniform.gin`) would run inside an ordinary run. With the
working directory last, every `include` of our own files resolves in our folder. A
`--gin_file` written as a location (absolute, `./x.gin`, `../x.gin`) is read as named.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import sys
from typing import Any, List, Optional, Sequence

import gin

from .errors import ConfigError

logger = logging.getLogger("xprompt_jax")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# An installed wheel ships the repository's top-level `gin/` as `xprompt_jax/gin/`
# (setup.py `package_dir`); a checkout (plain or `pip install -e`) has it beside the package.
PACKAGE_GIN_DIR = os.path.join(_PACKAGE_DIR, "gin")
REPO_GIN_DIR = os.path.join(os.path.dirname(_PACKAGE_DIR), "gin")
_MARKER = "prompt_tuning.gin"  # tells our gin folder from others (site-packages/gin is gin-config)


class GinConfigError(ConfigError):
    """A gin file or binding could not be parsed or applied."""


def packaged_gin_dir() -> str:
    """The folder holding the package's gin configs (`prompt_tuning.gin`, `models/`, ...):
    `xprompt_jax/gin/` of an installed wheel, else the checkout's top-level `gin/`."""
    for path in (PACKAGE_GIN_DIR, REPO_GIN_DIR):
        if os.path.isfile(os.path.join(path, _MARKER)):
            return path
    raise GinConfigError(f"the package's gin configs are missing: no {_MARKER} in "
                         f"{PACKAGE_GIN_DIR} (installed wheel) or {REPO_GIN_DIR} (checkout); "
                         "reinstall xprompt_jax")


def default_search_paths() -> List[str]:
    return [packaged_gin_dir()]


def rewrite_gin_args(argv: Sequence[str]) -> List[str]:
    """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE` (other args unchanged)."""
    out = []
    for arg in argv:
        match = re.fullmatch(r"--gin\.([^=]+)=(.*)", arg, flags=re.S)
        if match:
            name, value = match.groups()
            out.append(f"--gin_bindings={name} = {value}")
        else:
            out.append(arg)
    return out


_INCLUDE_LINE = re.compile(r"""^\s*include\s+(['"])(.+?)\1""", re.M)


def _check_include_cycle(path: str, search_paths: Sequence[str]) -> None:
    """Raises GinConfigError naming the files, lines and includes of a circle of `include`s
    reachable from `path` (gin itself would recurse into it until Python's recursion
    limit). Includes that resolve nowhere are left to gin's own error."""
    def visit(current: str, chain: list) -> None:
        try:
            with open(current) as f:
                text = f.read()
        except OSError:
            return
        for match in _INCLUDE_LINE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            try:
                target = _resolve(match.group(2), search_paths)
            except GinConfigError:
                continue
            step = (current, line, f"{match.group(1)}{match.group(2)}{match.group(1)}")
            files = [c[0] for c in chain] + [current]
            if target in files:
                circle = chain[files.index(target):] + [step]
                raise GinConfigError(
                    "gin files include each other in a circle: " + " -> ".join(
                        f"{p}:{n} includes {inc}" for p, n, inc in circle) +
                    " (remove one of these includes)")
            if target not in done:
                visit(target, chain + [step])
        done.add(current)

    done: set = set()
    visit(path, [])


_INCLUDE_FRAME = re.compile(r'In file "([^"]+)", line (\d+)\s+include\s+(\S[^\n]*)')


def _include_cycle(message: str) -> str:
    """'a.gin:1 includes 'b.gin' -> b.gin:1 includes 'a.gin'' when gin's message (one
    'In file ..., line N / include ...' pair per level, thousands for a cycle that ran into
    Python's recursion limit) shows a file including itself through others; '' if not."""
    frames, seen = [], set()
    for path, line, include in _INCLUDE_FRAME.findall(message):
        if path in seen:
            return " -> ".join(f"{p}:{n} includes {inc.strip()}" for p, n, inc in frames)
        seen.add(path)
        frames.append((path, line, include))
    return ""


def _unquoted_string_hint(binding: str) -> str:
    """For `NAME = /data/run` (a shell ate the quotes, or none were typed): how to write a
    string value, which gin parses as a Python literal and so needs quotes of its own, as
    T5X users write it: --gin.MODEL_DIR="'/data/run'"."""
    name, sep, value = binding.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not re.fullmatch(r"[\w./~:+-]+", value) or value[0] in "'\"@%" or \
            re.fullmatch(r"[-+.\d eE]+", value):  # not a bare word or path
        return ""
    return (f"; a string needs quotes inside the shell's quotes: write "
            f"--gin.{name}=\"{value!r}\"")


def _names_location(path: str) -> bool:
    """Whether a `--gin_file` value names a location (absolute, `./x`, `../x`) rather than
    a name to look up in the search paths."""
    return os.path.isabs(path) or path.split(os.sep)[0] in (os.curdir, os.pardir) or (
        os.altsep is not None and path.split(os.altsep)[0] in (os.curdir, os.pardir))


def _resolve(path: str, search_paths: Sequence[str]) -> str:
    """The file a `--gin_file` value means: a location as named; else the first search
    path holding it, the working directory last."""
    if _names_location(path):
        if os.path.exists(path):
            return os.path.abspath(path)
    else:
        for base in search_paths:
            candidate = os.path.join(base, path)
            if os.path.exists(candidate):
                return os.path.abspath(candidate)
        if os.path.exists(path):
            return os.path.abspath(path)
    raise GinConfigError(f"gin file {path!r} not found (searched: "
                         f"{', '.join(search_paths) or 'no search paths'}, then the current "
                         "directory)")


def search_working_dir_last(search_paths: Sequence[str] = ()) -> List[str]:
    """Makes gin look up `include`d files in `search_paths` first (in order), then in the
    search paths added before, and in the working directory last; returns the order.

    gin keeps one process-wide list whose first entry, '', is the working directory.
    Also makes gin's package-resource lookup tolerate folders that are not packages (see
    `tolerate_plain_folders`)."""
    from gin import config as gin_config

    tolerate_plain_folders()
    prefixes = gin_config._LOCATION_PREFIXES  # pylint: disable=protected-access
    first = [os.path.abspath(p) for p in search_paths if p]
    rest = [p for p in prefixes if p and os.path.abspath(p) not in first]
    prefixes[:] = list(dict.fromkeys(first)) + rest + [""]
    return list(prefixes)


def _resource_exists(original):
    def exists(config_path: str) -> bool:
        try:
            return original(config_path)
        except TypeError:  # a namespace package: no origin, so no file inside it
            return False

    exists.tolerates_plain_folders = True
    exists.__wrapped__ = original
    return exists


def tolerate_plain_folders() -> None:
    """gin's second file reader looks `models/t5_1_1_base.gin` up as the file
    `t5_1_1_base.gin` of the Python package `models`; a plain folder named `models` (or
    `runs`) in the working directory is a namespace package without a location, and gin's
    check fails with `TypeError: expected str, ... not NoneType` instead of trying the
    next search path (or saying the file was not found). Wraps that check so such a
    folder only means "not here". Idempotent."""
    from gin import config as gin_config

    readers = gin_config._FILE_READERS  # pylint: disable=protected-access
    for i, (reader, exists) in enumerate(readers):
        if getattr(reader, "__module__", "") == "gin.resource_reader" and \
                not getattr(exists, "tolerates_plain_folders", False):
            readers[i] = (reader, _resource_exists(exists))


class _QuietSearchMisses(logging.Filter):
    """gin logs an ERROR for every search path that lacks an included file, even when a
    later path has it; those are noise (a file found nowhere still raises)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # also gin's INFO line for every file it opens (`system_path_file_exists:<path>`)
        return not str(record.getMessage()).startswith(("Path not found:",
                                                        "system_path_file_exists:"))


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              gin_search_paths: Sequence[str] = (), finalize: bool = True) -> None:
    """Parses files then bindings; raises GinConfigError naming the culprit."""
    quiet = _QuietSearchMisses()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        _parse_gin(gin_files, gin_bindings, gin_search_paths, finalize)
    finally:
        root.removeFilter(quiet)


def _parse_gin(gin_files, gin_bindings, gin_search_paths, finalize) -> None:
    search_paths = [p for p in gin_search_paths if p] + default_search_paths()
    search_working_dir_last(search_paths)
    for gin_file in gin_files:
        resolved = _resolve(gin_file, search_paths)
        _check_include_cycle(resolved, search_paths)  # before gin recurses into one
        try:
            gin.parse_config_file(resolved, skip_unknown=False)
        except Exception as e:  # gin raises many types; keep the message, add the file
            cycle = _include_cycle(str(e))
            if cycle:
                raise GinConfigError(f"gin files include each other in a circle: {cycle} "
                                     "(remove one of these includes)") from None
            raise GinConfigError(f"error in gin file {resolved}: {type(e).__name__}: {e}") from e
    file_macros = macro_values()
    for binding in gin_bindings:
        try:
            gin.parse_config(binding)
        except Exception as e:
            hint = _unquoted_string_hint(binding)
            what = f"{type(e).__name__}: {e}" if not hint else \
                f"{binding.partition('=')[2].strip()} is no value gin can parse"
            raise GinConfigError(f"error in gin binding {binding!r}: {what}{hint}") from e
    check_macro_bindings(gin_bindings, file_macros)
    check_file_macros([_resolve(f, search_paths) for f in gin_files], file_macros)
    check_macro_values()
    warn_about_macro_values()
    if finalize:
        gin.finalize()


# ----------------------------------------------------------------------------- macros
# Macros read by code (`tasks.sources.gin_macro`) rather than by a gin file; modules that
# read one may add its name here (the data-dir macros and WORLD_DIR are found by themselves).
CODE_MACROS = set()
# A binding of a bare name (no '.' or '/'): a macro, whatever its case (gin makes
# `prompt_length = 10` a new macro that nothing reads).
_MACRO_BINDING = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")
_FILE_MACRO = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=")


def macro_values() -> dict:
    """{macro name: value} of the current gin config."""
    from gin import config as gin_config

    return {scope: binding.get("value") for (scope, selector), binding
            in gin_config._CONFIG.items() if selector == "gin.macro"}  # pylint: disable=protected-access


def macro_name(value) -> Optional[str]:
    """NAME when `value` is a `%NAME` reference of the gin config, else None."""
    selector = getattr(value, "scoped_selector", None)
    if isinstance(selector, str) and selector.endswith("/gin.macro"):
        return selector[: -len("/gin.macro")]
    return None


def bound_values(function_name: str, param: str) -> List[Any]:
    """The values bound to `param` of every configurable named `function_name` (any module
    or scope) in the current gin config, `%MACRO`s (also chained) resolved to their values."""
    from gin import config as gin_config

    macros = macro_values()
    out = []
    for (_, selector), binding in gin_config._CONFIG.items():  # pylint: disable=protected-access
        if selector.split(".")[-1] != function_name or param not in binding:
            continue
        value, seen = binding[param], set()
        while macro_name(value) is not None and macro_name(value) not in seen:
            seen.add(macro_name(value))
            value = macros.get(macro_name(value))
        out.append(value)
    return out


def _references(value, out: set) -> None:
    """Adds the macro names `value` refers to (`%NAME`, nested in containers) to `out`."""
    if macro_name(value) is not None:
        out.add(macro_name(value))
    elif isinstance(value, dict):
        for item in value.values():
            _references(item, out)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            _references(item, out)


def referenced_macros() -> set:
    """Macro names used (`%NAME`) anywhere in the current gin config."""
    from gin import config as gin_config

    out: set = set()
    for binding in gin_config._CONFIG.values():  # pylint: disable=protected-access
        for value in binding.values():
            _references(value, out)
    return out


def _code_macros() -> set:
    names = set(CODE_MACROS)
    sources = sys.modules.get("xprompt_jax.tasks.sources")
    for setting in getattr(sources, "DATA_DIR_SETTINGS", {}).values():
        names.add(setting[0])
    world = sys.modules.get("xprompt_jax.world.seqio_tasks")
    if getattr(world, "WORLD_DIR_MACRO", None):
        names.add(world.WORLD_DIR_MACRO)
    return names


def _is_reference(value) -> bool:
    return hasattr(value, "scoped_selector")


def _type_name(value) -> str:
    return {bool: "a bool", int: "an int", float: "a float", str: "a string",
            tuple: "a tuple", list: "a list", dict: "a dict"}.get(type(value),
                                                                   type(value).__name__)


# Macros whose files' value has one type but that take another too (the code checks them):
# EVAL_CHECKPOINT is 'best' | 'latest' | a step number.
EITHER_TYPE = frozenset({"EVAL_CHECKPOINT"})


def _type_ok(default, value) -> bool:
    """Whether `value` fits the type of the file's `default` (None always fits)."""
    if default is None or value is None or _is_reference(default) or _is_reference(value):
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def check_macro_bindings(gin_bindings: Sequence[str], file_macros: dict) -> None:
    """Command-line macro bindings (`--gin.NAME=...`, `--gin_bindings='NAME = ...'`) must
    name a macro the gin files define or use (or one read by code, e.g. SUPERGLUE_DIR), and
    fit the type of the files' value when that is a bool, number, string or container.
    Raises GinConfigError with a did-you-mean."""
    known = set(file_macros) | referenced_macros() | _code_macros()
    values = macro_values()
    for binding in gin_bindings:
        match = _MACRO_BINDING.match(binding)
        if not match:
            continue
        name = match.group(1)
        if name not in known:
            raise GinConfigError(f"--gin.{name}: {name} is not a macro of the included gin "
                                 f"files{_did_you_mean(name, known)}")
        default, value = file_macros.get(name), values.get(name)
        if name not in EITHER_TYPE and not _type_ok(default, value):
            raise GinConfigError(f"--gin.{name}={value!r}: {name} expects "
                                 f"{_type_name(default)} (the gin files set {default!r}), "
                                 f"got {_type_name(value)}")


def _did_you_mean(name: str, known) -> str:
    """'; did you mean X?' for the closest known macro (case first: `prompt_length` ->
    PROMPT_LENGTH), '' when none is close."""
    same_case = [k for k in sorted(known) if k.upper() == name.upper()]
    close = same_case or difflib.get_close_matches(name.upper(), sorted(known), n=1,
                                                   cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _is_package_file(path: str) -> bool:
    try:
        package = os.path.realpath(packaged_gin_dir())
    except GinConfigError:
        return False
    return os.path.realpath(path).startswith(package + os.sep)


def check_file_macros(gin_files: Sequence[str], file_macros: dict) -> None:
    """A macro set in one of the user's own gin files (any file outside the package's
    gin folder) must be one that something reads: a `%NAME` of any gin file, a macro of
    the package's files, or one read by code. A typo (`LEARNING_RAT = 0.1`) would otherwise
    set nothing. Raises GinConfigError naming file:line and the close name."""
    del file_macros  # (they include the user's own: a typo would count as known)
    referenced = referenced_macros()
    if not referenced:
        return  # macros only (no run config reads them): nothing to check against
    known = referenced | _code_macros()
    for path in gin_files:
        if _is_package_file(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue  # gin read it already; nothing more to check here
        for number, line in enumerate(lines, 1):
            match = _FILE_MACRO.match(line)  # at column 0: a top-level binding
            if match and match.group(1) not in known:
                name = match.group(1)
                raise GinConfigError(f"{path}:{number}: {name} is not a macro that any gin "
                                     f"file or setting reads{_did_you_mean(name, known)}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _regex(value) -> bool:
    try:
        re.compile(value)
    except (re.error, TypeError):
        return False
    return isinstance(value, str)


def _mesh(value) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(_int(v) and (v >= 1 or v == -1) for v in value)
            and list(value).count(-1) <= 1)


# What a macro must hold to mean anything ({name: (test, what is expected)}); checked on
# every parse, whichever file or flag set it. References (`%OTHER`, `@fn()`) are not checked.
MACRO_RULES = {
    "LEARNING_RATE": (lambda v: _number(v) and math.isfinite(v) and v > 0,
                      "a finite number > 0 (a negative rate climbs the loss)"),
    "DROPOUT_RATE": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "KEEP_CHECKPOINTS": (lambda v: v is None or (_int(v) and v >= 1),
                         "an int >= 1, or None to keep all"),
    "PROMPT_LENGTH": (lambda v: _int(v) and v >= 1, "an int >= 1"),
    "BATCH_SIZE": (lambda v: _int(v) and v >= 1, "an int >= 1"),
    "MAX_EVAL_EXAMPLES": (lambda v: v is None or (_int(v) and v >= 1),
                          "an int >= 1, or None for the whole split"),
    "EVAL_MODE": (lambda v: v in ("generation", "rank_classification"),
                  "'generation' or 'rank_classification'"),
    "FROZEN_DTYPE": (lambda v: v in (None, "float32", "bfloat16", "float16"),
                     "None, 'float32', 'bfloat16' or 'float16'"),
    "MESH_SHAPE": (_mesh, "a pair of ints (data, model), each >= 1 or one of them -1"),
    "TRAINABLE_REGEX": (_regex, "a valid regular expression (a string)"),
    "NUM_MICROBATCHES": (lambda v: _int(v) and v >= 1, "an int >= 1"),
    "EVAL_BATCH_SIZE": (lambda v: _int(v) and v >= 1, "an int >= 1"),
    # T5X's label smoothing is a probability mass moved off the target; z-loss a weight
    "LABEL_SMOOTHING": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "Z_LOSS": (lambda v: _number(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "TRAIN_EPOCHS": (lambda v: v is None or (_number(v) and math.isfinite(v) and v > 0),
                     "a finite number > 0, or None to count TRAIN_STEPS"),
    "LOSS_NORMALIZATION": (lambda v: v in ("mean_tokens", "sum", "mean_examples") or
                           (_number(v) and math.isfinite(v) and v > 0),
                           "'mean_tokens', 'sum', 'mean_examples' or a divisor > 0"),
    "LABEL_PARSING": (lambda v: v in ("t5", "lenient"), "'t5' or 'lenient'"),
}


def check_macro_values() -> None:
    """Raises GinConfigError naming the macro when a value of `MACRO_RULES` is out of range
    or of the wrong kind (e.g. LEARNING_RATE = -0.3, DROPOUT_RATE = 1.5)."""
    for name, value in macro_values().items():
        rule = MACRO_RULES.get(name)
        if rule is None or _is_reference(value) or hasattr(value, "selector"):
            continue
        test, expected = rule
        try:
            ok = bool(test(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            numeric = expected.startswith(("a finite", "a number", "an int"))
            got = f" (got {_type_name(value)})" if numeric and not _number(value) \
                and value is not None else ""
            raise GinConfigError(f"{name} = {value!r}: {name} expects {expected}{got}")


# Values that are legal but almost surely a slip (a wrong exponent, a wrong unit): one
# warning naming the macro and the papers' value, before any work ({name: (test, text)}).
# LEARNING_RATE above 1e3: the papers train soft prompts at 0.3 (Lester et al. 2021 and
# XPrompt: "a constant learning rate of 0.3"; EPT's grid ends at 0.3). Adafactor's and Adam's
# steps scale with the rate, so at > 1e3 (3,000x the papers') one step moves a prompt
# coordinate by about the rate itself, orders of magnitude beyond T5's embedding scale: the
# prompt diverges at once. Rates up to 1e3 (10, 100) are left to experiments.
MACRO_WARNINGS = {
    "LEARNING_RATE": (lambda v: _number(v) and v > 1e3,
                      "far above the rate soft prompts are trained with (0.3 for prompt "
                      "tuning: Lester et al. 2021, XPrompt; EPT's grid ends at 0.3); the "
                      "prompt will diverge. Warned above 1e3"),
}


def warn_about_macro_values() -> List[str]:
    """Logs (and returns) one warning per value of `MACRO_WARNINGS` that is legal but
    almost surely a slip (e.g. LEARNING_RATE = 1e12)."""
    warnings = []
    for name, value in macro_values().items():
        rule = MACRO_WARNINGS.get(name)
        if rule is None or _is_reference(value) or hasattr(value, "selector"):
            continue
        test, text = rule
        try:
            slip = bool(test(value))
        except (TypeError, ValueError):
            slip = False
        if slip:
            warnings.append(f"{name} = {value!r}: {text}")
            logger.warning("warning: %s", warnings[-1])
    return warnings


def required_macros_unset() -> List[str]:
    """Macros still bound to `%gin.REQUIRED` (set by no file or flag)."""
    return sorted(name for name, value in macro_values().items()
                  if getattr(value, "scoped_selector", "") == "gin.REQUIRED/gin.constant")


def unset_required_macros(names: Sequence[str]) -> None:
    """Binds each of `names` that is still `%gin.REQUIRED` to None (a job that does not
    use it, e.g. the task for `export`)."""
    for name in sorted(set(names) & set(required_macros_unset())):
        with gin.unlock_config():
            gin.parse_config(f"{name} = None")


def split_search_paths(value: Optional[str | Sequence[str]]) -> List[str]:
    if not value:
        return []
    if isinstance(value, str):
        value = [value]
    paths = []
    for item in value:
        paths.extend(p for p in item.split(",") if p)
    return paths


def call_configured(fn, what: str, not_needed: Sequence[str] = ()):
    """Calls a gin-configured function, turning missing REQUIRED values into clear errors.
    `not_needed`: REQUIRED macros of the included files that `fn` does not use (e.g. the
    task for `export`), which may stay unset."""
    missing = [m for m in required_macros_unset() if m not in set(not_needed)]
    if missing:
        flags = ", ".join(f"--gin.{name}=..." for name in missing)
        raise GinConfigError(f"{what}: required gin macros not given: {', '.join(missing)} "
                             f"(pass {flags})")
    try:
        return fn()
    except (ValueError, TypeError, RuntimeError) as e:
        text = str(e)
        if "REQUIRED" in text or "missing" in text and "argument" in text:
            raise GinConfigError(f"{what}: a required gin binding or macro is missing: {text}") \
                from e
        raise


def check_required(function_name: str, values) -> None:
    """Raises GinConfigError for arguments still bound to `gin.REQUIRED` (a macro such as
    `MODEL_DIR = %gin.REQUIRED` that no flag overrode), naming the macro to set."""
    missing = [name for name, value in values.items() if value is gin.REQUIRED]
    if missing:
        flags = ", ".join(f"--gin.{name.upper()}=..." for name in missing)
        raise GinConfigError(f"{function_name}: required gin settings not given: "
                             f"{', '.join(name.upper() for name in missing)} (pass {flags})")


def configured(fn):
    """The gin-configured version of `fn` if gin knows it (bindings apply, explicit call
    arguments win), else `fn` itself."""
    try:
        return gin.get_configurable(fn)
    except ValueError:
        return fn
