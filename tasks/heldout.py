"""Held-out test splits as the EPT paper builds them (EPT App. B.1, Table 5).

Most datasets publish no labelled test set, so selecting a checkpoint and reporting
on the same validation set inflates small tasks (CB: 56 examples). EPT re-splits:

* ``split_validation`` - datasets under 10K training examples: the validation set is
  split in half, ``validation`` = the first ``n // 2`` of a seeded permutation,
  ``test`` = the other ``n - n // 2`` (CB 56 -> 28 / 28, RTE 277 -> 138 / 139);
* ``from_train`` (``num_validation`` = 1K under 100K training examples, 10K above):
  ``validation`` = ``num_validation`` training examples drawn with the seed,
  ``train`` = the remaining training examples (``num_train``: only that many of them, the
  next ones of the same seeded permutation; Yelp: 100K, EPT Table 5), ``test`` = the old
  validation set (``test_split`` names another source split, e.g. Yelp's labelled
  ``test``);
* ``labelled_test`` - no re-split: the base's train, validation and test, for a base
  whose test split is labelled (a local file such as MRPC's labelled GLUE test set); an
  unlabelled test example is a ``DataFileError`` naming the split's file.

``heldout_task(base, strategy='auto')`` registers ``<base>_heldout``: the base task
with the re-split source; ``'auto'`` applies B.1's rule to the size of the train
split. EPT's 21 datasets and their re-splits are in ``ept_heldout.py``.

Selection is deterministic: ``numpy.random.RandomState(seed)`` over the split read in
its stored order (TFDS without file shuffling, or the file order of local files); the
same seed gives every family of a dataset the same re-split.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import seqio
import tensorflow as tf

from . import readers
from . import registry
from . import sources

STRATEGIES = ("split_validation", "from_train", "labelled_test", "auto")
_RESPLIT = ("split_validation", "from_train")
SUFFIX = "heldout"
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class HeldoutSpec:
    """How a ``_heldout`` task re-splits its base (see module docstring)."""
    strategy: str                  # 'split_validation' | 'from_train'
    num_validation: Optional[int] = None   # from_train only
    test_split: str = "validation"         # from_train: source split that becomes test
    seed: int = 0
    num_train: Optional[int] = None        # from_train: keep this many of the rest


def ept_rule(num_train: int) -> HeldoutSpec:
    """EPT B.1's rule: under 10K train -> halve validation; under 100K -> 1K of train
    as validation; else 10K of train."""
    if num_train < 10_000:
        return HeldoutSpec("split_validation")
    return HeldoutSpec("from_train", 1_000 if num_train < 100_000 else 10_000)


def heldout_name(base_task: str, seed: int = 0) -> str:
    return f"{base_task}_{SUFFIX}" + (f"_seed{seed}" if seed else "")


def split_indices(n: int, spec: HeldoutSpec) -> Tuple[np.ndarray, np.ndarray]:
    """(selected, rest) sorted indices into the split being divided.

    ``split_validation``: selected = the new validation half (``n // 2``), rest = test.
    ``from_train``: selected = the new validation (``num_validation``), rest = train (the
    ``num_train`` examples after them in the permutation when set).
    """
    perm = np.random.RandomState(spec.seed).permutation(n)
    if spec.strategy == "split_validation":
        k = n // 2
    elif spec.strategy == "from_train":
        if spec.num_validation is None or spec.num_validation <= 0:
            raise ValueError(f"from_train needs a positive num_validation, got "
                             f"{spec.num_validation}")
        if spec.num_validation >= n:
            raise ValueError(f"from_train: num_validation={spec.num_validation} but the "
                             f"train split has only {n} examples")
        k = spec.num_validation
        if spec.num_train is not None:
            if spec.num_train <= 0 or k + spec.num_train > n:
                raise ValueError(f"from_train: num_train={spec.num_train} with "
                                 f"num_validation={k} but the train split has {n} examples")
            return np.sort(perm[:k]), np.sort(perm[k:k + spec.num_train])
    else:
        raise ValueError(f"unknown held-out strategy {spec.strategy!r}; expected one "
                         f"of {_RESPLIT}")
    return np.sort(perm[:k]), np.sort(perm[k:])


class HeldoutSource(seqio.DataSource):
    """Wraps a raw source; exposes ``train`` / ``validation`` / ``test`` re-split."""

    def __init__(self, base: seqio.DataSource, spec: HeldoutSpec):
        super().__init__(splits=SPLITS, caching_permitted=base.caching_permitted)
        if spec.strategy not in _RESPLIT + ("labelled_test",):
            raise ValueError(f"unknown held-out strategy {spec.strategy!r}")
        self._base = base
        self._spec = spec
        self._lock = threading.Lock()
        self._cache: Dict[tuple, Tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self):
        return f"HeldoutSource(base={self._base!r}, spec={self._spec})"

    @property
    def base(self) -> seqio.DataSource:
        return self._base

    @property
    def spec(self) -> HeldoutSpec:
        return self._spec

    @property
    def splits(self):
        return SPLITS

    @property
    def supports_arbitrary_sharding(self) -> bool:
        # get_dataset shards (after selecting the subset in a fixed order): seqio may pass
        # any ShardInfo (multi-host).
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [split]

    def _divided_split(self) -> str:
        return "validation" if self._spec.strategy == "split_validation" else "train"

    def _count(self, split: str) -> int:
        try:
            n = self._base.num_input_examples(split)
        except KeyError:  # TFDS metadata without split sizes (e.g. mocked data)
            n = None
        if n is None:
            ds = self._base.get_dataset(split=split, shuffle=False)
            n = int(ds.reduce(np.int64(0), lambda c, _: c + 1).numpy())
        return int(n)

    def indices(self) -> Tuple[np.ndarray, np.ndarray]:
        """(selected, rest) of the divided split (see ``split_indices``)."""
        split = self._divided_split()
        fp = getattr(self._base, "fingerprint", None)
        key = tuple(fp(split)) if fp is not None else ("static",)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        out = split_indices(self._count(split), self._spec)
        with self._lock:
            self._cache[key] = out
        return out

    def _subset(self, split: str, keep: np.ndarray, shard_info) -> tf.data.Dataset:
        n = int(keep[-1]) + 1 if len(keep) else 0
        mask = np.zeros(n, dtype=bool)
        mask[keep] = True
        mask_t = tf.constant(mask)
        ds = self._base.get_dataset(split=split, shuffle=False).take(n).enumerate()
        keep_fn = tf.autograph.experimental.do_not_convert(
            lambda i, ex: tf.gather(mask_t, i))
        drop_index = tf.autograph.experimental.do_not_convert(lambda i, ex: ex)
        ds = ds.filter(keep_fn).map(drop_index)
        if shard_info:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds

    def _source_of(self, split: str) -> Tuple[str, Optional[int]]:
        """(base split, which part: 0 selected / 1 rest / None whole)."""
        if split not in SPLITS:
            raise ValueError(f"held-out source: unknown split {split!r}; available: "
                             f"{list(SPLITS)}")
        if self._spec.strategy == "labelled_test":
            return split, None
        if self._spec.strategy == "split_validation":
            return {"train": ("train", None), "validation": ("validation", 0),
                    "test": ("validation", 1)}[split]
        return {"train": ("train", 1), "validation": ("train", 0),
                "test": (self._spec.test_split, None)}[split]

    def get_dataset(self, split: str = "train", shuffle: bool = True,
                    seed: Optional[int] = None,
                    shard_info: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
        base_split, part = self._source_of(split)
        if part is None:
            if self._spec.strategy == "labelled_test" and split == "test":
                self._check_labelled(base_split)
            ds = self._base.get_dataset(split=base_split, shuffle=shuffle, seed=seed)
            if shard_info:
                ds = ds.shard(shard_info.num_shards, shard_info.index)
            return ds
        ds = self._subset(base_split, self.indices()[part], shard_info)
        if shuffle and split == "train":
            ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        return ds

    def _check_labelled(self, split: str) -> None:
        """A `labelled_test` base's test split must carry labels (GLUE's published test
        files do not): the first unlabelled example is a DataFileError naming the file."""
        examples = getattr(self._base, "examples", None)
        rows = examples(split) if examples is not None else list(
            self._base.get_dataset(split=split, shuffle=False).as_numpy_iterator())
        unlabelled = [i for i, ex in enumerate(rows) if float(ex["label"]) < 0]
        if unlabelled:
            path = getattr(self._base, "path", None)
            where = path(split) if path is not None else f"split {split!r}"
            raise readers.DataFileError(
                f"{where}: {len(unlabelled)} of {len(rows)} examples have no label (the "
                f"first: example {unlabelled[0]}); this held-out variant reports on a "
                "labelled test set (e.g. MRPC: the MSR corpus's msr_paraphrase_test.txt, "
                "same columns as train.tsv, saved as test.tsv); without one use the "
                "variant that halves validation")

    def num_input_examples(self, split: str) -> Optional[int]:
        base_split, part = self._source_of(split)
        if part is None:
            return self._base.num_input_examples(base_split)
        return int(len(self.indices()[part]))


def _wrap(src: seqio.DataSource, spec: HeldoutSpec) -> seqio.DataSource:
    """Re-splits the raw data under any train filter (T5's WSC), then refilters."""
    if isinstance(src, sources.TrainFilteredSource):
        return sources.TrainFilteredSource(HeldoutSource(src.base, spec), src.predicate,
                                           splits=src.filtered_splits)
    if isinstance(src, HeldoutSource):
        raise ValueError("the task is already re-split (a held-out source)")
    return HeldoutSource(src, spec)


def resolve_spec(src: seqio.DataSource, strategy: str = "auto",
                 num_validation: Optional[int] = None, test_split: str = "validation",
                 seed: int = 0) -> HeldoutSpec:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown held-out strategy {strategy!r}; expected one of "
                         f"{STRATEGIES}")
    if strategy == "auto":
        raw = src.base if isinstance(src, sources.TrainFilteredSource) else src
        n = raw.num_input_examples("train")
        if n is None:
            raise ValueError("strategy 'auto' needs the train split's size; pass "
                             "strategy='split_validation' or 'from_train'")
        rule = ept_rule(int(n))
        return dataclasses.replace(rule, test_split=test_split, seed=seed)
    return HeldoutSpec(strategy, num_validation, test_split, seed)


def heldout_task(base_task: str, strategy: str = "auto",
                 num_validation: Optional[int] = None, test_split: str = "validation",
                 seed: int = 0, name: Optional[str] = None,
                 metric: Optional[registry.MetricSpec] = None,
                 num_train: Optional[int] = None) -> str:
    """Registers (if needed) the re-split variant of ``base_task``; returns its name.

    ``metric`` replaces the task's metric spec (e.g. the EPT paper's metric).
    """
    info = registry.task_info(base_task)
    name = name or heldout_name(base_task, seed)
    base = seqio.get_mixture_or_task(base_task)
    if strategy == "auto":
        spec = resolve_spec(base.source, strategy, num_validation, test_split, seed)
    else:
        spec = HeldoutSpec(strategy, num_validation, test_split, seed, num_train)
    new_info = dataclasses.replace(info, name=name, base=base_task)
    if metric is not None:
        new_info = dataclasses.replace(new_info, metric=metric)
    registry.register_derived_task(new_info, base, _wrap(base.source, spec),
                                   metric_fns=None if metric is None else metric.fns)
    return name


# ---------------------------------------------------------------------------
# EPT's 21 datasets (Table 5): strategy and the paper's metric.
# ---------------------------------------------------------------------------
