"""Writes the world's tasks as official-format SuperGLUE JSONL files.

Layout (the official one, read by `xprompt_jax.tasks`' local source):
`<dir>/<Task>/{train,val,test}.jsonl` for Task in BoolQ, RTE, COPA, WiC, plus
`<dir>/world.json` (version, seed, sizes, rules). Test files carry no labels, like the
official ones.

Deterministic: each (task, split) has its own `random.Random` seeded from a string
(`"<seed>/<task>/<split>"`, hashed with SHA-512 by Python, independent of
PYTHONHASHSEED). Labels are exactly balanced within each split (shuffled), and no input
text occurs twice across the splits of a task.

`ensure_world_data(dir)` writes the files when `world.json` is missing or describes
another world, atomically (a temporary directory renamed into place), so concurrent
readers never see half-written files. A stale world is refreshed file by file: only the
files this module writes are replaced, by name (`world.json` last); nothing else in the
folder is deleted, and nothing is written through a symlinked task folder.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from ..errors import ConfigError
from . import tasks as tasks_lib

WORLD_VERSION = 1
DEFAULT_SEED = 0
DEFAULT_SIZES: Dict[str, int] = {"train": 2000, "validation": 400, "test": 400}
SPLIT_FILES: Dict[str, str] = {"train": "train.jsonl", "validation": "val.jsonl",
                               "test": "test.jsonl"}
DIR_ENV_VAR = "XPROMPT_WORLD_DIR"
METADATA_FILE = "world.json"
# Generation order: dev/test first, so train (and pretraining) can avoid their inputs.
_ORDER = ("validation", "test", "train")


def balanced_labels(rng: random.Random, n: int, num_classes: int = 2) -> List[int]:
    labels = [i % num_classes for i in range(n)]
    rng.shuffle(labels)
    return labels


def generate_split(task: str, split: str, size: int, seed: int = DEFAULT_SEED,
                   exclude: Optional[Set[str]] = None) -> List[Tuple[Dict, int]]:
    """`size` (fields, label) pairs of `task`, none of whose rendered inputs is in
    `exclude` or repeated (the new inputs are added to `exclude`)."""
    world_task = tasks_lib.TASKS[task]
    rng = random.Random(f"{seed}/{task}/{split}")
    seen = exclude if exclude is not None else set()
    out = []
    for label in balanced_labels(rng, size):
        for _ in range(1000):
            fields = world_task.sample(rng, label)
            text = world_task.render(fields)
            if text not in seen:
                break
        else:
            raise RuntimeError(f"world task {task}: could not draw a new example for split "
                               f"{split} (the world is too small for {size} examples)")
        seen.add(text)
        out.append((fields, label))
    return out


def generate_task(task: str, sizes: Mapping[str, int] = DEFAULT_SIZES,
                  seed: int = DEFAULT_SEED) -> Dict[str, List[Tuple[Dict, int]]]:
    seen: Set[str] = set()
    return {split: generate_split(task, split, sizes[split], seed, seen)
            for split in _ORDER if split in sizes}


def held_out_inputs(task: str, sizes: Mapping[str, int] = DEFAULT_SIZES,
                    seed: int = DEFAULT_SEED) -> Set[str]:
    """Rendered (prefix-less) inputs of the validation and test splits."""
    seen: Set[str] = set()
    for split in ("validation", "test"):
        if split in sizes:
            generate_split(task, split, sizes[split], seed, seen)
    return seen


def metadata(seed: int, sizes: Mapping[str, int],
             task_names: Iterable[str] = tasks_lib.TASK_NAMES) -> Dict:
    return {
        "world_version": WORLD_VERSION,
        "seed": int(seed),
        "sizes": {k: int(v) for k, v in sizes.items()},
        "tasks": {t: {"directory": tasks_lib.TASKS[t].directory,
                      "rule": tasks_lib.TASKS[t].rule,
                      "labels": list(tasks_lib.TASKS[t].labels)} for t in task_names},
    }


def write_world(directory: str, seed: int = DEFAULT_SEED,
                sizes: Mapping[str, int] = DEFAULT_SIZES,
                task_names: Iterable[str] = tasks_lib.TASK_NAMES) -> str:
    """Writes every task's files under `directory` (overwriting); returns it."""
    task_names = tuple(task_names)
    os.makedirs(directory, exist_ok=True)
    for task in task_names:
        world_task = tasks_lib.TASKS[task]
        task_dir = os.path.join(directory, world_task.directory)
        os.makedirs(task_dir, exist_ok=True)
        for split, examples in generate_task(task, sizes, seed).items():
            path = os.path.join(task_dir, SPLIT_FILES[split])
            with open(path, "w") as f:
                for idx, (fields, label) in enumerate(examples):
                    row = world_task.to_json(fields, None if split == "test" else label, idx)
                    f.write(json.dumps(row) + "\n")
    with open(os.path.join(directory, METADATA_FILE), "w") as f:
        json.dump(metadata(seed, sizes, task_names), f, indent=2)
    return directory


def _replace_written_files(new: str, directory: str) -> None:
    """Moves each file of the fresh world `new` over its namesake in `directory` (world.json
    last); refuses a symlinked folder on the way rather than write through it."""
    from ..fileio import symlink_below

    files = sorted(os.path.relpath(os.path.join(root, name), new)
                   for root, _, names in os.walk(new) for name in names)
    files.sort(key=lambda rel: rel == METADATA_FILE)
    for rel in files:
        dest = os.path.join(directory, rel)
        link = symlink_below(directory, os.path.dirname(dest))
        if link is not None:
            raise FileExistsError(f"{link} is a symlink; refusing to refresh the world data "
                                  f"in {directory} through it")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(os.path.join(new, rel), dest)  # replaces a symlink itself, not its target


def default_world_dir(seed: int = DEFAULT_SEED) -> str:
    """`$XPROMPT_WORLD_DIR`, else `$XDG_CACHE_HOME` (or ~/.cache)
    `/xprompt_jax/world/v<version>-seed<seed>`."""
    env = os.environ.get(DIR_ENV_VAR)
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "xprompt_jax", "world", f"v{WORLD_VERSION}-seed{seed}")


def is_current(directory: str, seed: int = DEFAULT_SEED,
               sizes: Mapping[str, int] = DEFAULT_SIZES) -> bool:
    path = os.path.join(directory, METADATA_FILE)
    try:
        with open(path) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return False
    return found == json.loads(json.dumps(metadata(seed, sizes)))


def ensure_world_data(directory: Optional[str] = None, seed: int = DEFAULT_SEED,
                      sizes: Mapping[str, int] = DEFAULT_SIZES) -> str:
    """The world data directory, generated (atomically) if absent or stale."""
    directory = os.path.abspath(directory or default_world_dir(seed))
    if is_current(directory, seed, sizes):
        return directory
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"world data directory {directory} (WORLD_DIR, or ${DIR_ENV_VAR}) "
                          "is a file, not a folder; name a folder (it is created if missing)")
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".world-", dir=parent)
    try:
        write_world(tmp, seed, sizes)
        if os.path.isdir(directory):
            if is_current(directory, seed, sizes):  # another process won the race
                return directory
            if os.path.exists(os.path.join(directory, METADATA_FILE)):  # a stale world
                _replace_written_files(tmp, directory)
                return directory
            if os.listdir(directory):
                raise ConfigError(f"world data directory {directory} (WORLD_DIR, or "
                                  f"${DIR_ENV_VAR}) holds other files and no {METADATA_FILE}: "
                                  "not world data; refusing to write into it (name an empty "
                                  "or new folder)")
            os.rmdir(directory)
        try:
            os.replace(tmp, directory)
        except OSError:
            if not is_current(directory, seed, sizes):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return directory
