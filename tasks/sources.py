"""Data sources: TFDS, local official files, and split-filtering wrappers.

* ``tfds_source`` - a ``seqio.TfdsDataSource`` with explicit splits (so nothing is
  looked up at registration time).
* ``LocalDataSource`` - reads the official SuperGLUE JSONL / GLUE TSV files from a
  directory that is resolved **when the data is read**, from a gin macro
  (``SUPERGLUE_DIR`` / ``GLUE_DIR``) or an environment variable
  (``XPROMPT_SUPERGLUE_DIR`` / ``XPROMPT_GLUE_DIR``). Tasks therefore register at import
  even when no directory is configured; reading then fails with an error naming what
  is missing.
* ``TrainFilteredSource`` - drops examples of some splits (T5's WSC "simple" format
  trains only on examples whose candidate referent is correct).
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import gin
import seqio
import tensorflow as tf

from xprompt_jax.errors import DataError

from . import readers

# kind -> (gin macro, environment variable, human name)
DATA_DIR_SETTINGS: Dict[str, Tuple[str, str, str]] = {
    "superglue": ("SUPERGLUE_DIR", "XPROMPT_SUPERGLUE_DIR", "SuperGLUE"),
    "glue": ("GLUE_DIR", "XPROMPT_GLUE_DIR", "GLUE"),
}


class DataDirError(DataError, FileNotFoundError):
    """The local data directory is not configured or a file is missing."""


def gin_macro(name: str) -> Optional[Any]:
    """Value of gin macro ``name`` if the current gin config defines it, else None."""
    try:
        return gin.query_parameter(f"%{name}")
    except (ValueError, KeyError):
        return None


def resolve_data_dir(kind: str) -> str:
    """The local data directory for ``kind`` ('superglue' or 'glue').

    Gin macro (``SUPERGLUE_DIR`` / ``GLUE_DIR``) first, then the environment variable
    (``XPROMPT_SUPERGLUE_DIR`` / ``XPROMPT_GLUE_DIR``).
    """
    macro, env, human = DATA_DIR_SETTINGS[kind]
    value = gin_macro(macro) or os.environ.get(env)
    if not value:
        raise DataDirError(
            f"No local {human} directory configured: set the gin macro {macro} "
            f"(--gin.{macro}=\"'/path'\") or the environment variable {env}.")
    return str(value)


class TfdsSource(seqio.TfdsDataSource):
    """`seqio.TfdsDataSource` whose load failures say what to do offline.

    Without TFDS's prepared data, TFDS tries to download and prepare the dataset; offline
    that fails deep inside TFDS (`KeyError: splits is empty`, a missing download module,
    a connection error) without naming the way out: our `_local` variant of the task,
    which reads the official files from a local folder."""

    def __init__(self, tfds_name: str, splits, local_kind: Optional[str] = None):
        super().__init__(tfds_name=tfds_name, splits=splits)
        self._local_kind = local_kind

    def _explained(self, error: Exception) -> DataError:
        where = os.environ.get("TFDS_DATA_DIR") or "TFDS's default ~/tensorflow_datasets"
        hint = "prepare the dataset with TFDS (tfds build) into TFDS_DATA_DIR"
        if self._local_kind in DATA_DIR_SETTINGS:
            macro, env, human = DATA_DIR_SETTINGS[self._local_kind]
            hint = (f"offline, use the task's `_local` variant (the same name ending in "
                    f"`_local`, e.g. xprompt_super_glue_rte_local) with {env}=<folder of the "
                    f"official {human} files> (or --gin.{macro}), or {hint}")
        text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        return DataError(f"TFDS could not load {self.tfds_dataset.name} (data dir: {where}; "
                         f"{type(error).__name__}: {text}): {hint}")

    def get_dataset(self, *args, **kwargs):
        try:
            return super().get_dataset(*args, **kwargs)
        except DataError:
            raise
        except Exception as e:  # pylint: disable=broad-except  # TFDS raises many kinds
            raise self._explained(e) from e

    def list_shards(self, split: str):
        try:
            return super().list_shards(split)
        except DataError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            raise self._explained(e) from e


def tfds_source(tfds_name: str, splits: Sequence[str] | Mapping[str, str],
                local_kind: Optional[str] = None) -> seqio.TfdsDataSource:
    """A TFDS source with explicit splits (no TFDS metadata access at import); its load
    errors name the `_local` variant of `local_kind` ('superglue' / 'glue'), if any."""
    return TfdsSource(tfds_name, splits, local_kind)


# Parsed files, keyed by (reader, path, mtime, size); a small LRU.
_FILE_CACHE: "collections.OrderedDict[tuple, List[Dict[str, Any]]]" = (
    collections.OrderedDict())
_FILE_CACHE_SIZE = 16
_FILE_CACHE_LOCK = threading.Lock()


def _read_cached(reader: Callable[[str, str], List[Dict[str, Any]]], path: str,
                 split: str) -> List[Dict[str, Any]]:
    stat = tf.io.gfile.stat(path)
    key = (id(reader), path, split, stat.mtime_nsec, stat.length)
    with _FILE_CACHE_LOCK:
        if key in _FILE_CACHE:
            _FILE_CACHE.move_to_end(key)
            return _FILE_CACHE[key]
    examples = reader(path, split)
    with _FILE_CACHE_LOCK:
        _FILE_CACHE[key] = examples
        while len(_FILE_CACHE) > _FILE_CACHE_SIZE:
            _FILE_CACHE.popitem(last=False)
    return examples


class LocalDataSource(seqio.DataSource):
    """Examples from one official file per split under a lazily resolved directory.

    Args:
      name: dataset name used in error messages (e.g. 'super_glue/rte').
      kind: 'superglue' or 'glue' (selects the gin macro / environment variable).
      subdir: the task's directory inside the data directory (e.g. 'RTE').
      split_files: split name -> file name inside ``subdir``.
      reader: ``(path, split) -> list of example dicts`` (see ``readers``).
      signature: the element spec (``readers.*_SIGNATURES``).
      data_dir: a fixed data directory (overrides gin / environment); mostly for
        tests and programmatic use.
    """

    def __init__(self, name: str, kind: str, subdir: str,
                 split_files: Mapping[str, str],
                 reader: Callable[[str, str], List[Dict[str, Any]]],
                 signature: Mapping[str, Any], data_dir: Optional[str] = None):
        super().__init__(splits=tuple(split_files), num_input_examples=None,
                         caching_permitted=True)
        self._name = name
        self._kind = kind
        self._subdir = subdir
        self._split_files = dict(split_files)
        self._reader = reader
        self._signature = dict(signature)
        self._data_dir = data_dir

    def __repr__(self):
        return (f"LocalDataSource(name={self._name!r}, kind={self._kind!r}, "
                f"subdir={self._subdir!r}, splits={list(self._split_files)})")

    @property
    def signature(self) -> Mapping[str, Any]:
        return self._signature

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def path(self, split: str) -> str:
        """The file of ``split`` (resolves the data directory; checks existence)."""
        if split not in self._split_files:
            raise ValueError(f"{self._name}: unknown split {split!r}; available: "
                             f"{list(self._split_files)}")
        root = self._data_dir or resolve_data_dir(self._kind)
        task_dir = os.path.join(root, self._subdir)
        path = os.path.join(task_dir, self._split_files[split])
        if not tf.io.gfile.exists(path):
            macro, env, human = DATA_DIR_SETTINGS[self._kind]
            what = ("directory " + task_dir if not tf.io.gfile.exists(task_dir)
                    else "file " + path)
            raise DataDirError(
                f"{self._name} split {split!r}: {what} does not exist (local {human} "
                f"directory {root!r}, from {'data_dir' if self._data_dir else macro + ' / ' + env}"
                f"; expected the official layout <dir>/{self._subdir}/"
                f"{self._split_files[split]}).")
        return path

    def examples(self, split: str) -> List[Dict[str, Any]]:
        """All examples of ``split`` as Python dicts (parsed once, then cached). A file
        without any example is a DataFileError (training on it could never start)."""
        path = self.path(split)
        examples = _read_cached(self._reader, path, split)
        if not examples:
            raise readers.DataFileError(f"{path}:1: no examples in the file (empty?); "
                                        f"expected one example per line for split {split!r}")
        return examples

    def list_shards(self, split: str) -> Sequence[str]:
        return [self.path(split)]

    def fingerprint(self, split: str) -> Tuple[str, int, int]:
        """(path, mtime, size) of the split's file: changes when the data does."""
        path = self.path(split)
        stat = tf.io.gfile.stat(path)
        return (path, stat.mtime_nsec, stat.length)

    def get_dataset(self, split: str = "train", shuffle: bool = True,
                    seed: Optional[int] = None,
                    shard_info: Optional[seqio.ShardInfo] = None
                    ) -> tf.data.Dataset:
        examples = self.examples(split)
        if shard_info:
            # Shard before shuffling so hosts get disjoint examples whatever the seed.
            examples = examples[shard_info.index::shard_info.num_shards]
        return readers.examples_to_dataset(examples, self._signature,
                                           shuffle=shuffle, seed=seed)

    def num_input_examples(self, split: str) -> int:
        return len(self.examples(split))


class TrainFilteredSource(seqio.DataSource):
    """Wraps a source and keeps only examples satisfying ``predicate`` in ``splits``.

    ``predicate`` maps a TF example dict to a scalar bool tensor. Other splits are
    passed through unchanged.
    """

    def __init__(self, base: seqio.DataSource,
                 predicate: Callable[[Mapping[str, tf.Tensor]], tf.Tensor],
                 splits: Sequence[str] = ("train",), description: str = ""):
        super().__init__(splits=base.splits, caching_permitted=base.caching_permitted)
        self._base = base
        self._predicate = predicate
        self._filtered_splits = tuple(splits)
        self._description = description
        self._counts: Dict[str, int] = {}

    def __repr__(self):
        return (f"TrainFilteredSource(base={self._base!r}, "
                f"splits={self._filtered_splits}, {self._description})")

    @property
    def base(self) -> seqio.DataSource:
        return self._base

    @property
    def predicate(self) -> Callable[[Mapping[str, tf.Tensor]], tf.Tensor]:
        return self._predicate

    @property
    def filtered_splits(self) -> Tuple[str, ...]:
        return self._filtered_splits

    @property
    def splits(self):
        return self._base.splits

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return self._base.supports_arbitrary_sharding

    def list_shards(self, split: str) -> Sequence[str]:
        return self._base.list_shards(split)

    def get_dataset(self, split: str = "train", shuffle: bool = True,
                    seed: Optional[int] = None,
                    shard_info: Optional[seqio.ShardInfo] = None
                    ) -> tf.data.Dataset:
        # Shard in the base source (as seqio would without this wrapper), then filter.
        ds = self._base.get_dataset(split=split, shuffle=shuffle, seed=seed,
                                    shard_info=shard_info)
        if split in self._filtered_splits:
            ds = ds.filter(self._predicate)
        return ds

    def num_input_examples(self, split: str) -> Optional[int]:
        if split not in self._filtered_splits:
            return self._base.num_input_examples(split)
        if split not in self._counts:
            ds = self.get_dataset(split, shuffle=False)
            self._counts[split] = int(ds.reduce(0, lambda n, _: n + 1).numpy())
        return self._counts[split]
