"""Held-out test splits as the EPT paper builds them (EPT App. B.1, Table 5).

Most datasets publish no labelled test set, so selecting a checkpoint and reporting
on the same validation set inflates small tasks (CB: 56 examples). EPT re-splits:

* ``split_validation`` - datasets under 10K training examples: the validation set is
  split in half, ``validation`` = the first ``n // 2`` of a seeded permutation,
  ``test`` = the other ``n - n // 2`` (CB 56 -> 28 / 28, RTE 277 -> 138 / 139);
* ``from_train`` (``num_validation`` = 1K under 100K training examples, 10K above):
  ``validation`` = ``num_validation`` training examples drawn with the seed,
  ``train`` = the remaining training examples, ``test`` = the old validation set
  (``test_split`` names another source split, e.g. Yelp's labelled ``test``).

``heldout_task(base, strategy='auto')`` registers ``<base>_heldout``: the base task
with the re-split source; ``'auto'`` applies B.1's rule to the size of the train
split. ``EPT_DATASETS`` records, for EPT's 21 datasets, the strategy that gives the
sizes of its Table 5 (where the rule and the table disagree, the table wins: HotpotQA,
NewsQA, WinoGrande, SciTail and PAWS halve their validation sets; MRPC's Table 5 test
is GLUE's test set, unlabelled in TFDS and the GLUE files, so MRPC halves validation)
and the paper's metric (Pearson for STS-B, accuracy for MRPC / QQP, F1a for MultiRC,
F1 for MRQA), which the ``_heldout`` variants of ``register_ept_heldout()`` use as
their main (checkpoint-selection) metric.

Selection is deterministic: ``numpy.random.RandomState(seed)`` over the split read in
its stored order (TFDS without file shuffling, or the file order of local files); the
same seed gives every family of a dataset the same re-split.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import seqio
import tensorflow as tf

from . import metrics as m
from . import registry
from . import sources

STRATEGIES = ("split_validation", "from_train", "auto")
SUFFIX = "heldout"
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class HeldoutSpec:
    """How a ``_heldout`` task re-splits its base (see module docstring)."""
    strategy: str                  # 'split_validation' | 'from_train'
    num_validation: Optional[int] = None   # from_train only
    test_split: str = "validation"         # from_train: source split that becomes test
    seed: int = 0


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
    ``from_train``: selected = the new validation (``num_validation``), rest = train.
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
    else:
        raise ValueError(f"unknown held-out strategy {spec.strategy!r}; expected one "
                         f"of {STRATEGIES[:2]}")
    return np.sort(perm[:k]), np.sort(perm[k:])


class HeldoutSource(seqio.DataSource):
    """Wraps a raw source; exposes ``train`` / ``validation`` / ``test`` re-split."""

    def __init__(self, base: seqio.DataSource, spec: HeldoutSpec):
        super().__init__(splits=SPLITS, caching_permitted=base.caching_permitted)
        if spec.strategy not in STRATEGIES[:2]:
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
            ds = self._base.get_dataset(split=base_split, shuffle=shuffle, seed=seed)
            if shard_info:
                ds = ds.shard(shard_info.num_shards, shard_info.index)
            return ds
        ds = self._subset(base_split, self.indices()[part], shard_info)
        if shuffle and split == "train":
            ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        return ds

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
                 metric: Optional[registry.MetricSpec] = None) -> str:
    """Registers (if needed) the re-split variant of ``base_task``; returns its name.

    ``metric`` replaces the task's metric spec (e.g. the EPT paper's metric).
    """
    info = registry.task_info(base_task)
    name = name or heldout_name(base_task, seed)
    base = seqio.get_mixture_or_task(base_task)
    if strategy == "auto":
        spec = resolve_spec(base.source, strategy, num_validation, test_split, seed)
    else:
        spec = HeldoutSpec(strategy, num_validation, test_split, seed)
    new_info = dataclasses.replace(info, name=name, base=base_task)
    if metric is not None:
        new_info = dataclasses.replace(new_info, metric=metric)
    registry.register_derived_task(new_info, base, _wrap(base.source, spec),
                                   metric_fns=None if metric is None else metric.fns)
    return name


# ---------------------------------------------------------------------------
# EPT's 21 datasets (Table 5): strategy and the paper's metric.
# ---------------------------------------------------------------------------
_ACC = registry.MetricSpec.single(m.accuracy, "accuracy")
_F1 = registry.MetricSpec((m.squad,), "f1", ("f1",))


def _ept_multirc_f1a() -> registry.MetricSpec:
    return registry.MetricSpec((m.multirc_f1a, m.multirc_exact_match), "f1a", ("f1a",))


def _ept_cb() -> registry.MetricSpec:
    return registry.MetricSpec.average([m.accuracy, m.macro_f1(3)],
                                       ["accuracy", "f1_macro"])


def _ept_pearson() -> registry.MetricSpec:
    return registry.MetricSpec((m.pearson_corrcoef, m.spearman_corrcoef),
                               "pearson_corrcoef", ("pearson_corrcoef",))


def _ept_acc_with_f1() -> registry.MetricSpec:
    return registry.MetricSpec((m.accuracy, m.f1_with_invalid), "accuracy",
                               ("accuracy",))


_SPLIT_VAL = HeldoutSpec("split_validation")
_TRAIN_1K = HeldoutSpec("from_train", 1_000)
_TRAIN_10K = HeldoutSpec("from_train", 10_000)


@dataclasses.dataclass(frozen=True)
class EPTDataset:
    """One of EPT's 21 datasets: its benchmark group, base tasks and re-split."""
    name: str                      # EPT's name (Table 5)
    group: str                     # 'superglue' | 'glue' | 'mrqa' | 'others'
    bases: Tuple[str, ...]         # our base task names (one per source)
    spec: HeldoutSpec
    metric: Optional[registry.MetricSpec]   # None: the base's
    input_length: int = 256        # EPT B.2


def ept_datasets() -> List[EPTDataset]:
    """EPT's 21 datasets with the base task names they re-split (all sources)."""
    from . import glue, mrqa, superglue  # they import this module
    sg = lambda t: tuple(superglue.task_name("lester", t, s) for s in superglue.SOURCES)
    gl = lambda t: tuple(glue.task_name(t, s) for s in glue.SOURCES)
    ex = lambda t: (next(glue.ept_task_name(n, v) for n, _, _, _, v in glue.EPT_EXTRA
                         if n == t),)
    mq = lambda d: (mrqa.task_name(d),)
    return [
        EPTDataset("BoolQ", "superglue", sg("boolq"), _SPLIT_VAL, None),
        EPTDataset("CB", "superglue", sg("cb"), _SPLIT_VAL, _ept_cb()),
        EPTDataset("MultiRC", "superglue", sg("multirc"), _TRAIN_1K, _ept_multirc_f1a(),
                   348),
        EPTDataset("WiC", "superglue", sg("wic"), _SPLIT_VAL, None),
        EPTDataset("WSC", "superglue", sg("wsc"), _SPLIT_VAL, None),
        EPTDataset("CoLA", "glue", gl("cola"), _SPLIT_VAL, None),
        EPTDataset("SST-2", "glue", gl("sst2"), _TRAIN_1K, None),
        EPTDataset("MRPC", "glue", gl("mrpc"), _SPLIT_VAL, _ept_acc_with_f1()),
        EPTDataset("STS-B", "glue", gl("stsb"), _SPLIT_VAL, _ept_pearson()),
        EPTDataset("QQP", "glue", gl("qqp"), _TRAIN_10K, _ept_acc_with_f1()),
        EPTDataset("MNLI", "glue", gl("mnli"), _TRAIN_10K, None),
        EPTDataset("QNLI", "glue", gl("qnli"), _TRAIN_10K, None),
        EPTDataset("RTE", "glue", gl("rte"), _SPLIT_VAL, None),
        EPTDataset("NQ", "mrqa", mq("NaturalQuestionsShort"), _TRAIN_10K, _F1, 512),
        EPTDataset("HotpotQA", "mrqa", mq("HotpotQA"), _SPLIT_VAL, _F1, 512),
        EPTDataset("SearchQA", "mrqa", mq("SearchQA"), _TRAIN_10K, _F1, 512),
        EPTDataset("NewsQA", "mrqa", mq("NewsQA"), _SPLIT_VAL, _F1, 512),
        EPTDataset("WinoGrande", "others", ex("winogrande"), _SPLIT_VAL, None),
        # Yelp's base task already takes 10K of train as validation (Table 5), its
        # TFDS test split is the test set: the held-out variant is the same data.
        EPTDataset("Yelp", "others", ex("yelp_polarity"), glue.YELP_VALIDATION, None),
        EPTDataset("SciTail", "others", ex("scitail"), _SPLIT_VAL, None),
        EPTDataset("PAWS-Wiki", "others", ex("paws_wiki"), _SPLIT_VAL, None),
    ]


def ept_heldout_task_names() -> List[str]:
    return [heldout_name(b) for d in ept_datasets() for b in d.bases]


def register_ept_heldout() -> List[str]:
    """Registers ``<base>_heldout`` for every base of EPT's 21 datasets."""
    names = []
    for d in ept_datasets():
        for b in d.bases:
            if d.name == "Yelp":
                # The base is already re-split (glue.YELP_VALIDATION): same data.
                info = registry.task_info(b)
                base = seqio.get_mixture_or_task(b)
                registry.register_derived_task(
                    dataclasses.replace(info, name=heldout_name(b), base=b), base,
                    base.source)
                names.append(heldout_name(b))
                continue
            names.append(heldout_task(b, d.spec.strategy, d.spec.num_validation,
                                      metric=d.metric))
    return names
