"""k-shot training subsets drawn with a fixed seed; evaluation on the full dev set.

``fewshot_task(base_task, k, seed=0, sampling='random')`` registers (once) and returns
the name of a task identical to ``base_task`` except that its ``train`` split holds
only the selected examples. Names: ``<base>_<k>shot`` for the default (seed 0, plain
random sampling), ``<base>_<k>shot[_balanced|_per_class][_seed<s>]`` otherwise.

Selection (``select_examples``) is deterministic: ``numpy.random.RandomState(seed)``
over the source's train split read in its stored order (TFDS without file shuffling,
or the JSONL/TSV file order), so every family of a task (xprompt, lester, ...) gets
the same k examples from the same source. Sampling modes:

* ``random`` - k sampling units uniformly without replacement (XPrompt/PET and EPT
  "k-shot": k examples in total);
* ``balanced`` - k units in total, spread evenly over the classes seen in train (the
  first ``k % C`` class ids get one more), topped up at random if a class is short;
* ``per_class`` - k units of every class (LM-BFF-style "k per class").

The sampling unit is an example, except MultiRC where it is a question (all answer
options of a selected question are kept; only ``random`` applies).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import seqio
import tensorflow as tf

from . import registry
from . import sources

SAMPLINGS = ("random", "balanced", "per_class")
DEFAULT_SHOTS: Tuple[int, ...] = (4, 16, 32)
FEWSHOT_SEEDS_ENV = "XPROMPT_FEWSHOT_SEEDS"


def fewshot_name(base_task: str, k: int, seed: int = 0,
                 sampling: str = "random") -> str:
    """The registered name of the k-shot variant of ``base_task``."""
    name = f"{base_task}_{k}shot"
    if sampling != "random":
        name += f"_{sampling}"
    if seed != 0:
        name += f"_seed{seed}"
    return name


def select_examples(num_examples: int, k: int, seed: int, sampling: str = "random",
                    labels: Optional[Sequence[int]] = None,
                    groups: Optional[Sequence[Hashable]] = None) -> np.ndarray:
    """Sorted indices of the selected examples (see module docstring).

    Args:
      num_examples: size of the train split.
      k: shots (units in total for random/balanced, per class for per_class).
      seed: RandomState seed.
      sampling: 'random', 'balanced' or 'per_class'.
      labels: class id per example (needed by balanced / per_class).
      groups: unit key per example (e.g. MultiRC question); None = every example is
        its own unit.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLINGS}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if groups is not None:
        if sampling != "random":
            raise ValueError(f"sampling {sampling!r} needs one label per unit; grouped "
                             "tasks (MultiRC questions) support only 'random'")
        unit_ids: Dict[Hashable, int] = {}
        unit_of = np.array([unit_ids.setdefault(g, len(unit_ids)) for g in groups],
                           dtype=np.int64)
        n_units = len(unit_ids)
    else:
        unit_of = np.arange(num_examples)
        n_units = num_examples
    rng = np.random.RandomState(seed)
    if sampling == "random":
        chosen = rng.permutation(n_units)[:k]
    else:
        if labels is None:
            raise ValueError(f"sampling {sampling!r} needs labels")
        labels = np.asarray(labels)
        classes = sorted(set(labels.tolist()) - {-1})
        if not classes:
            raise ValueError("no labeled examples to sample from")
        picked: List[np.ndarray] = []
        if sampling == "per_class":
            for c in classes:
                members = np.flatnonzero(labels == c)
                picked.append(members[rng.permutation(len(members))[:k]])
            chosen = np.concatenate(picked)
        else:  # balanced
            quota = {c: k // len(classes) + (1 if i < k % len(classes) else 0)
                     for i, c in enumerate(classes)}
            for c in classes:
                members = np.flatnonzero(labels == c)
                picked.append(members[rng.permutation(len(members))[:quota[c]]])
            chosen = np.concatenate(picked)
            short = min(k, n_units) - len(chosen)
            if short > 0:
                rest = np.setdiff1d(np.arange(n_units), chosen)
                chosen = np.concatenate([chosen, rest[rng.permutation(len(rest))[:short]]])
    chosen_set = np.zeros(n_units, dtype=bool)
    chosen_set[np.asarray(chosen, dtype=np.int64)] = True
    return np.flatnonzero(chosen_set[unit_of])


def _field(ex, path):
    for p in (path if isinstance(path, tuple) else (path,)):
        ex = ex[p]
    return ex


class FewShotSource(seqio.DataSource):
    """Wraps a raw source; its ``train`` split keeps only the k-shot selection."""

    def __init__(self, base: seqio.DataSource, k: int, seed: int = 0,
                 sampling: str = "random", label_field: Optional[str] = "label",
                 group_fields: Optional[Sequence] = None, split: str = "train"):
        super().__init__(splits=base.splits, caching_permitted=base.caching_permitted)
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLINGS}")
        if sampling != "random" and label_field is None:
            raise ValueError(f"sampling {sampling!r} needs a label field")
        self._base = base
        self._k, self._seed, self._sampling = k, seed, sampling
        self._label_field = label_field
        self._group_fields = tuple(group_fields) if group_fields else None
        self._split = split
        self._lock = threading.Lock()
        self._selection: Dict[tuple, np.ndarray] = {}

    def __repr__(self):
        return (f"FewShotSource(base={self._base!r}, k={self._k}, seed={self._seed}, "
                f"sampling={self._sampling!r})")

    @property
    def splits(self):
        return self._base.splits

    @property
    def supports_arbitrary_sharding(self) -> bool:
        # Mirror the base so seqio shards non-train splits exactly as it would the base;
        # the train subset is read in a fixed order, so sharding it is deterministic.
        return self._base.supports_arbitrary_sharding

    def list_shards(self, split: str) -> Sequence[str]:
        return self._base.list_shards(split)

    def _fingerprint(self) -> tuple:
        """Identifies the data the selection was drawn from (local files can change;
        a TFDS version is immutable)."""
        fp = getattr(self._base, "fingerprint", None)
        if fp is not None:
            return tuple(fp(self._split))
        return ("static",)

    def selection(self) -> np.ndarray:
        """Sorted indices (in source order) of the selected train examples."""
        key = self._fingerprint()
        with self._lock:
            if key in self._selection:
                return self._selection[key]
        need_labels = self._sampling != "random"
        n = None
        if not need_labels and not self._group_fields:
            n = self._base.num_input_examples(self._split)  # TFDS metadata / file size
        labels, groups = [], []
        if n is None:
            n = 0
            ds = self._base.get_dataset(split=self._split, shuffle=False)
            for ex in ds.as_numpy_iterator():
                n += 1
                if need_labels:
                    labels.append(int(_field(ex, self._label_field)))
                if self._group_fields:
                    groups.append(tuple(int(_field(ex, g)) for g in self._group_fields))
        chosen = select_examples(n, self._k, self._seed, self._sampling,
                                 labels=labels or None,
                                 groups=groups if self._group_fields else None)
        with self._lock:
            self._selection[key] = chosen
        return chosen

    def get_dataset(self, split: str = "train", shuffle: bool = True,
                    seed: Optional[int] = None,
                    shard_info: Optional[seqio.ShardInfo] = None
                    ) -> tf.data.Dataset:
        if split != self._split:
            return self._base.get_dataset(split=split, shuffle=shuffle, seed=seed,
                                          shard_info=shard_info)
        else:
            chosen = self.selection()
            size = int(chosen[-1]) + 1 if len(chosen) else 0
            mask = np.zeros(size, dtype=bool)
            mask[chosen] = True
            mask_t = tf.constant(mask)
            ds = self._base.get_dataset(split=split, shuffle=False)
            ds = ds.take(size).enumerate()
            ds = ds.filter(lambda i, ex: tf.gather(mask_t, i))
            ds = ds.map(lambda i, ex: ex)
        if shard_info:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds

    def num_input_examples(self, split: str) -> Optional[int]:
        if split != self._split:
            return self._base.num_input_examples(split)
        return int(len(self.selection()))


def fewshot_task(base_task: str, k: int, seed: int = 0,
                 sampling: str = "random", name: Optional[str] = None) -> str:
    """Registers (if needed) the k-shot variant of ``base_task``; returns its name."""
    name = name or fewshot_name(base_task, k, seed, sampling)
    info = registry.task_info(base_task)
    if info.fewshot is not None:
        raise ValueError(f"{base_task!r} is already a few-shot task")
    if name in registry.registered_task_names():
        existing = registry.task_info(name)
        if existing.fewshot == registry.FewShotSpec(k, seed, sampling) and \
            existing.base == base_task:
            return name
    base = seqio.get_mixture_or_task(base_task)
    src = base.source
    if isinstance(src, sources.TrainFilteredSource):
        # Sample from the raw data (same subset for every family), then filter.
        fs = FewShotSource(src.base, k, seed, sampling, info.label_field,
                           info.group_fields)
        src = sources.TrainFilteredSource(fs, src.predicate,
                                          splits=src.filtered_splits)
    else:
        src = FewShotSource(src, k, seed, sampling, info.label_field,
                            info.group_fields)
    new_info = dataclasses.replace(
        info, name=name, fewshot=registry.FewShotSpec(k, seed, sampling),
        base=base_task)
    registry.register_derived_task(new_info, base, src)
    return name


def extra_seeds_from_env() -> List[int]:
    """Seeds listed in ``$XPROMPT_FEWSHOT_SEEDS`` (comma separated), seed 0 excluded."""
    raw = os.environ.get(FEWSHOT_SEEDS_ENV, "")
    seeds = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            seed = int(part)
        except ValueError as e:
            raise ValueError(f"{FEWSHOT_SEEDS_ENV}={raw!r}: {part!r} is not an "
                             "integer") from e
        if seed != 0 and seed not in seeds:
            seeds.append(seed)
    return seeds
