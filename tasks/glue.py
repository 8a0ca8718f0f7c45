"""GLUE tasks (T5 formats, taskless) and the EPT paper's extra TFDS tasks.

GLUE names: ``lester_glue_{task}_{source}`` for CoLA, SST-2, MRPC, QQP, STS-B, MNLI,
QNLI, RTE with source

* ``v200`` - TFDS ``glue/<config>:2.0.0``;
* ``v100`` - TFDS ``glue/<config>:1.0.0``, the version of T5 0.9's ``glue_<task>_v002``
  tasks that Lester et al. used (2.0.0 changed QQP's data source);
* ``local`` - the official GLUE TSV files under the gin macro ``GLUE_DIR`` / env
  ``XPROMPT_GLUE_DIR``: ``<dir>/<TASK>/{train,dev,test}.tsv`` (MNLI:
  ``train.tsv``, ``dev_matched.tsv``, ``dev_mismatched.tsv``, ``test_matched.tsv``,
  ``test_mismatched.tsv``; directory names CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI,
  RTE).

MNLI's splits are TFDS's (``validation_matched`` ...) plus ``validation`` /
``test`` = the matched ones; ``lester_glue_mnli_mismatched_{source}`` has
``validation`` / ``test`` = the mismatched ones (evaluation only).

Local MRPC reads the GLUE distribution's ``train.tsv`` / ``dev.tsv`` (TFDS builds
MRPC from the original MSR files instead: same pairs and labels, but ``idx`` counts
rows of the original training file in TFDS).

STS-B follows T5: the score rounded to the nearest 0.2 as a string ("3.8").

EPT extras (TFDS only, T5-style formats): ``lester_scitail_v100``
(``sci_tail:1.0.0``), ``lester_paws_wiki_v110`` (``paws_wiki/labeled_final_raw:
1.1.0``), ``lester_yelp_polarity_v020`` (``yelp_polarity_reviews:0.2.0``; TFDS has
no validation split: ``validation`` = 10K training examples drawn with seed 0,
``train`` = the rest (550K; EPT Table 5's 100K is the ``_heldout`` variant), ``test`` =
TFDS ``test``), ``lester_winogrande_v120`` (``winogrande:1.2.0``;
``train`` = ``train_xl``).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import seqio

from . import heldout
from . import metrics as m
from . import postprocessors as post
from . import preprocessors as pre
from . import readers
from . import registry
from . import sources
from . import templates as tmpl

TASKS: Tuple[str, ...] = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli",
                          "rte")
TFDS_VERSION = "2.0.0"
# T5 0.9's GLUE tasks (`glue_<task>_v002`), which Lester et al. ran, read TFDS glue 1.0.0
# (2.0.0 changed QQP's data source): source `v100`.
TFDS_VERSIONS: Dict[str, str] = {"v200": "2.0.0", "v100": "1.0.0"}
SOURCES: Tuple[str, ...] = ("v200", "v100", "local")
FAMILY = "lester"

_F1_ACC = registry.MetricSpec.average([m.f1_with_invalid, m.accuracy],
                                      ["f1", "accuracy"])
_ACC = registry.MetricSpec.single(m.accuracy, "accuracy")
METRICS: Dict[str, registry.MetricSpec] = {
    "cola": registry.MetricSpec.single(m.matthews_corrcoef, "matthews_corrcoef"),
    "sst2": _ACC,
    "mrpc": _F1_ACC,
    "qqp": _F1_ACC,
    "stsb": registry.MetricSpec.average([m.pearson_corrcoef, m.spearman_corrcoef],
                                        ["pearson_corrcoef",
                                         "spearman_corrcoef"]),
    "mnli": _ACC,
    "qnli": _ACC,
    "rte": _ACC,
}

_DEFAULT_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_MNLI_TFDS_SPLITS = {
    "train": "train",
    "validation": "validation_matched",
    "test": "test_matched",
    "validation_matched": "validation_matched",
    "validation_mismatched": "validation_mismatched",
    "test_matched": "test_matched",
    "test_mismatched": "test_mismatched",
}
_MNLI_MISMATCHED_TFDS_SPLITS = {"validation": "validation_mismatched",
                                "test": "test_mismatched"}


def task_name(task: str, source: str) -> str:
    return f"{FAMILY}_glue_{task}_{source}"


def _local_split_files(split_map: Mapping[str, str]) -> Dict[str, str]:
    files = dict(readers.MNLI_SPLIT_FILES)
    return {ours: files[theirs] for ours, theirs in split_map.items()}


def make_source(task: str, source: str, data_dir: Optional[str] = None,
                mnli_mismatched: bool = False) -> seqio.DataSource:
    """The raw (TFDS-shaped) source of GLUE ``task``."""
    if task == "mnli":
        split_map = (_MNLI_MISMATCHED_TFDS_SPLITS if mnli_mismatched
                     else _MNLI_TFDS_SPLITS)
    else:
        split_map = _DEFAULT_SPLITS
    if source in TFDS_VERSIONS:
        return sources.tfds_source(f"glue/{task}:{TFDS_VERSIONS[source]}", split_map,
                                   local_kind="glue")
    if source == "local":
        split_files = (_local_split_files(split_map) if task == "mnli"
                       else {s: readers.GLUE_SPLIT_FILES[s] for s in split_map})
        return sources.LocalDataSource(
            name=f"glue/{task} (local)", kind="glue", subdir=readers.GLUE_DIRS[task],
            split_files=split_files, reader=readers.glue_reader(task),
            signature=readers.GLUE_SIGNATURES[task], data_dir=data_dir)
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")


def _register(name: str, benchmark: str, task: str, source: str,
              src: seqio.DataSource, template: tmpl.Template,
              metric: registry.MetricSpec) -> seqio.Task:
    if task == "stsb":
        preprocessor = pre.stsb(template)
        postprocess_fn = post.string_to_float
        labels = tmpl.STSB_LABELS
    else:
        preprocessor = pre.classification(template, sentinel=False)
        postprocess_fn = post.class_label(template.labels)
        labels = template.labels
    info = registry.TaskInfo(
        name=name, benchmark=benchmark, task=task, family=FAMILY, source=source,
        label_strings=tuple(labels), per_example_label_strings=True,
        metric=metric)
    return registry.register_task(info, src, [preprocessor], postprocess_fn)


def register(task: str, source: str, data_dir: Optional[str] = None,
             mnli_mismatched: bool = False,
             name: Optional[str] = None) -> seqio.Task:
    """Registers one GLUE task (``mnli_mismatched``: the mismatched eval task)."""
    if task not in TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {TASKS}")
    if mnli_mismatched and task != "mnli":
        raise ValueError("mnli_mismatched=True only applies to task 'mnli'")
    src = make_source(task, source, data_dir, mnli_mismatched)
    default = task_name("mnli_mismatched" if mnli_mismatched else task, source)
    return _register(name or default, "glue", task, source, src,
                     tmpl.GLUE_LESTER[task], METRICS[task])


# EPT's extra datasets available in TFDS: (our task name, TFDS name, template key,
# split map, source suffix).
EPT_EXTRA: Tuple[Tuple[str, str, str, Mapping[str, str], str], ...] = (
    ("scitail", "sci_tail:1.0.0", "scitail", _DEFAULT_SPLITS, "v100"),
    ("paws_wiki", "paws_wiki/labeled_final_raw:1.1.0", "paws", _DEFAULT_SPLITS,
     "v110"),
    ("yelp_polarity", "yelp_polarity_reviews:0.2.0", "yelp",
     {"train": "train", "test": "test"}, "v020"),
    ("winogrande", "winogrande:1.2.0", "winogrande",
     {"train": "train_xl", "validation": "validation", "test": "test"}, "v120"),
)


# Yelp has no validation split: 10K training examples (seed 0) become validation, the
# TFDS test split stays the test set (EPT Table 5: 10,000 / 38,000); the base task trains
# on the other 550K.
YELP_VALIDATION = heldout.HeldoutSpec("from_train", 10_000, test_split="test")
# EPT Table 5 trains Yelp on 100,000: the same 10K validation, then the next 100K of the
# same seeded permutation (`lester_yelp_polarity_v020_heldout`).
YELP_EPT = heldout.HeldoutSpec("from_train", 10_000, test_split="test", num_train=100_000)


def ept_task_name(task: str, source: str) -> str:
    return f"{FAMILY}_{task}_{source}"


def register_all() -> None:
    for task in TASKS:
        for source in SOURCES:
            register(task, source)
    for source in SOURCES:
        register("mnli", source, mnli_mismatched=True)
    for task, tfds_name, key, split_map, version in EPT_EXTRA:
        src = sources.tfds_source(tfds_name, split_map)
        if task == "yelp_polarity":
            src = heldout.HeldoutSource(src, YELP_VALIDATION)
        _register(ept_task_name(task, version), "ept", task, version, src,
                  tmpl.GLUE_LESTER[key], _ACC)
