"""seqio tasks of the synthetic world, read from official-format SuperGLUE JSONL files.

Importing this module registers, for each world task T in boolq, rte, copa, wic:

* `world_T` - T5's format **without** the task name (`xprompt_jax.tasks`' `lester`
  family), e.g. `passage: ... question: ...` -> `True`: what prompt tuning trains on;
* `world_T_prefixed` - the same with T5's task-name prefix (`boolq passage: ...`), the
  format the world's T5 was pretrained on: the upper reference.

Data: `<world dir>/<Task>/{train,val,test}.jsonl`, read by `xprompt_jax.tasks`' local
SuperGLUE readers and preprocessors. The directory is resolved when data is first read:
the gin macro `WORLD_DIR`, else `$XPROMPT_WORLD_DIR`, else a cache directory
(`writer.default_world_dir()`); it is generated there (deterministically) if absent.

Vocabulary: the world's SentencePiece model (`paths.vocab_path()`, 100 extra ids), not
T5's. Label strings, metrics and main metric come from `xprompt_jax.tasks`' registry
(`get_label_strings('world_boolq') == ['False', 'True']`), so rank-classification
evaluation works as for the real SuperGLUE tasks.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from typing import Dict, List, Optional

import seqio
import tensorflow as tf

from xprompt_jax.tasks import postprocessors as post
from xprompt_jax.tasks import preprocessors as pre
from xprompt_jax.tasks import readers, registry, sources, superglue
from xprompt_jax.tasks import templates as tmpl

from . import paths
from . import tasks as world_tasks
from . import writer

WORLD_DIR_MACRO = "WORLD_DIR"
BENCHMARK = "world"
EXTRA_IDS = 100
TASK_NAMES = world_tasks.TASK_NAMES


def task_name(task: str, prefixed: bool = False) -> str:
    """`world_boolq` / `world_boolq_prefixed`."""
    return f"world_{task}_prefixed" if prefixed else f"world_{task}"


@functools.lru_cache(maxsize=None)
def world_vocabulary() -> seqio.SentencePieceVocabulary:
    """The world's vocabulary (600 pieces + 100 sentinels = 700 ids)."""
    return seqio.SentencePieceVocabulary(paths.vocab_path(), extra_ids=EXTRA_IDS)


def output_features() -> Dict[str, seqio.Feature]:
    vocab = world_vocabulary()
    return {"inputs": seqio.Feature(vocabulary=vocab, add_eos=True, required=False),
            "targets": seqio.Feature(vocabulary=vocab, add_eos=True)}


_ENSURED: Dict[str, str] = {}
_ENSURE_LOCK = threading.Lock()


def world_data_dir() -> str:
    """The world data directory (gin `WORLD_DIR` > $XPROMPT_WORLD_DIR > cache), generated
    on first use if absent."""
    requested = sources.gin_macro(WORLD_DIR_MACRO) or writer.default_world_dir()
    requested = os.path.abspath(os.path.expanduser(str(requested)))
    with _ENSURE_LOCK:
        if requested not in _ENSURED:
            _ENSURED[requested] = writer.ensure_world_data(requested)
        return _ENSURED[requested]


class WorldDataSource(sources.LocalDataSource):
    """The official-format JSONL files of one world task, under `world_data_dir()`."""

    def __init__(self, task: str, data_dir: Optional[str] = None):
        super().__init__(
            name=f"world/{task}", kind="superglue", subdir=world_tasks.DIRECTORIES[task],
            split_files=readers.SUPERGLUE_SPLIT_FILES, reader=readers.SUPERGLUE_READERS[task],
            signature=readers.SUPERGLUE_SIGNATURES[task], data_dir=data_dir)
        self._fixed_dir = data_dir

    def path(self, split: str) -> str:
        self._data_dir = self._fixed_dir or world_data_dir()
        return super().path(split)


def add_prefix(prefix: str):
    """Preprocessor: `inputs` -> `prefix + ' ' + inputs` (T5's task-name prefix)."""

    def fn(ex):
        ex = dict(ex)
        ex["inputs"] = tf.strings.join([prefix + " ", ex["inputs"]])
        return ex

    return lambda ds: ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _register(info: registry.TaskInfo, source: seqio.DataSource, preprocessors: List,
              postprocess_fn) -> seqio.Task:
    """`registry.register_task` with the world's output features.

    Uses its `output_features` argument when the tasks package offers one; otherwise
    registers the same task directly and records `info` in the package's registry (so
    `get_label_strings` / `get_main_metric` know world tasks).
    """
    register_task = registry.register_task
    if "output_features" in inspect.signature(register_task).parameters:
        return register_task(info, source, preprocessors, postprocess_fn,
                             output_features=output_features())
    seqio.TaskRegistry.remove(info.name)
    task = seqio.TaskRegistry.add(
        info.name, source=source,
        preprocessors=list(preprocessors) + [
            seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim],
        output_features=output_features(), postprocess_fn=postprocess_fn,
        metric_fns=list(info.metric.fns))
    registry._TASKS[info.name] = info  # pylint: disable=protected-access
    return task


def register(task: str, prefixed: bool = False, data_dir: Optional[str] = None,
             name: Optional[str] = None) -> seqio.Task:
    """Registers `world_<task>` (or its prefixed reference) with seqio."""
    if task not in world_tasks.TASKS:
        raise ValueError(f"unknown world task {task!r}; expected one of {TASK_NAMES}")
    template = tmpl.LESTER[task]
    labels = tuple(template.labels)
    preprocessors = [pre.classification(template, sentinel=False)]
    if prefixed:
        preprocessors.append(add_prefix(world_tasks.prefix(task)))
    info = registry.TaskInfo(
        name=name or task_name(task, prefixed), benchmark=BENCHMARK, task=task,
        family="world_prefixed" if prefixed else "world", source="local",
        label_strings=labels, per_example_label_strings=True,
        metric=superglue.METRICS[task], label_field="label")
    return _register(info, WorldDataSource(task, data_dir), preprocessors,
                     post.class_label(labels))


def register_all() -> List[str]:
    names = []
    for task in TASK_NAMES:
        for prefixed in (False, True):
            names.append(register(task, prefixed).name)
    return names


REGISTERED = register_all()
