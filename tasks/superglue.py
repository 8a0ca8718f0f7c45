"""SuperGLUE tasks: BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC.

Names: ``{family}_super_glue_{task}_{source}`` with

* family: ``xprompt`` (XPrompt Table 10 templates, ``<extra_id_0>`` sentinel),
  ``xprompt_nosentinel`` (same templates, no sentinel in inputs or targets),
  ``lester`` (T5's formats without the task name);
* source: ``v102`` (TFDS ``super_glue/<config>:1.0.2``; WSC uses ``wsc.fixed``) or
  ``local`` (official JSONL files under the gin macro ``SUPERGLUE_DIR`` / env
  ``XPROMPT_SUPERGLUE_DIR``: ``<dir>/<Task>/{train,val,test}.jsonl``).

Splits: train, validation, test (test labels are -1, targets ``<unk>``). Label ids
follow TFDS (BoolQ/MultiRC/WiC/WSC 0=False 1=True; CB entailment/contradiction/
neutral; COPA choice1/choice2; RTE entailment/not_entailment). MultiRC's HTML markup
(``<br>``, ``<b>``) is removed in every family, as T5 does. ReCoRD is a generation
task (one example per answer, T5-style). The ``lester`` WSC task is T5's
``wsc_simple`` (marked pronoun in, candidate referent out; its train split keeps only
examples whose candidate is the referent); ``lester_super_glue_wsc_true_false_{source}``
is T5's ``wsc`` (candidate and pronoun marked, ``False`` / ``True`` out, every example);
the ``xprompt`` WSC targets are ``span1_text`` (label True) or ``another word``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import seqio

from . import metrics as m
from . import postprocessors as post
from . import preprocessors as pre
from . import readers
from . import registry
from . import sources
from . import templates as tmpl

TASKS: Tuple[str, ...] = ("boolq", "cb", "copa", "multirc", "record", "rte",
                          "wic", "wsc")
# The seven tasks of the XPrompt / Lester et al. SuperGLUE experiments.
CLASSIFICATION_TASKS: Tuple[str, ...] = ("boolq", "cb", "copa", "multirc", "rte",
                                         "wic", "wsc")
FAMILIES: Tuple[str, ...] = ("xprompt", "xprompt_nosentinel", "lester")
TFDS_VERSION = "1.0.2"
SOURCES: Tuple[str, ...] = ("v102", "local")
SPLITS: Tuple[str, ...] = ("train", "validation", "test")

_TFDS_CONFIG = {t: t for t in TASKS}
_TFDS_CONFIG["wsc"] = "wsc.fixed"

METRICS: Dict[str, registry.MetricSpec] = {
    "boolq": registry.MetricSpec.single(m.accuracy, "accuracy"),
    "cb": registry.MetricSpec.average([m.accuracy, m.macro_f1(3)],
                                      ["accuracy", "f1_macro"]),
    "copa": registry.MetricSpec.single(m.accuracy, "accuracy"),
    "multirc": registry.MetricSpec.average(
        [m.multirc_f1a, m.multirc_exact_match], ["f1a", "exact_match"]),
    "record": registry.MetricSpec.average([m.record_squad],
                                          ["exact_match", "f1"]),
    "rte": registry.MetricSpec.single(m.accuracy, "accuracy"),
    "wic": registry.MetricSpec.single(m.accuracy, "accuracy"),
    "wsc": registry.MetricSpec.single(m.accuracy, "accuracy"),
}


def task_name(family: str, task: str, source: str) -> str:
    return f"{family}_super_glue_{task}_{source}"


# Unversioned names (`xprompt_super_glue_rte`), what T5X users type: the TFDS source.
ALIAS_SOURCE = "v102"


def alias_name(family: str, task: str) -> str:
    """The unversioned name of a task: the same task as its `ALIAS_SOURCE` variant."""
    return f"{family}_super_glue_{task}"


def make_source(task: str, source: str,
                data_dir: Optional[str] = None) -> seqio.DataSource:
    """The raw data source of ``task`` (TFDS-shaped examples)."""
    if source == "v102":
        return sources.tfds_source(f"super_glue/{_TFDS_CONFIG[task]}:{TFDS_VERSION}",
                                   SPLITS, local_kind="superglue")
    if source == "local":
        return sources.LocalDataSource(
            name=f"super_glue/{task} (local)", kind="superglue",
            subdir=readers.SUPERGLUE_DIRS[task],
            split_files=readers.SUPERGLUE_SPLIT_FILES,
            reader=readers.SUPERGLUE_READERS[task],
            signature=readers.SUPERGLUE_SIGNATURES[task], data_dir=data_dir)
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")


@dataclasses.dataclass(frozen=True)
class _Built:
    preprocessor: Callable
    postprocess_fn: Callable
    label_strings: Optional[Tuple[str, ...]]
    per_example_label_strings: bool
    train_filter: Optional[Callable] = None


def _build(family: str, task: str) -> _Built:
    """Preprocessor / postprocessor / label strings of ``task`` in ``family``."""
    if family == "lester":
        template, sentinel = tmpl.LESTER[task], False
    else:
        template, sentinel = tmpl.XPROMPT[task], family == "xprompt"
    prefix = tmpl.target_prefix(sentinel)
    # Targets that start with the sentinel are read as seqio reads T5's sentinel tasks.
    wrap = post.with_sentinel_removed if sentinel else (lambda fn: fn)
    if task == "record":
        return _Built(pre.record(template, sentinel), wrap(post.record), None, True)
    if task == "wsc":
        if family == "lester":
            return _Built(pre.wsc_simple(template), post.wsc_simple, None, False,
                          train_filter=pre.keep_label(1))
        return _Built(pre.wsc_xprompt(template, sentinel), wrap(post.wsc_xprompt),
                      None, True)
    labels = template.labels
    if task == "multirc":
        postprocess_fn = post.multirc(labels)
    else:
        postprocess_fn = post.class_label(labels)
    return _Built(
        pre.classification(template, sentinel, html_cleanup=task == "multirc"),
        wrap(postprocess_fn), tuple(prefix + l for l in labels), True)


def register(family: str, task: str, source: str,
             data_dir: Optional[str] = None,
             name: Optional[str] = None) -> seqio.Task:
    """Registers one SuperGLUE task (see module docstring for the naming)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if task not in TASKS:
        raise ValueError(f"unknown SuperGLUE task {task!r}; expected one of {TASKS}")
    built = _build(family, task)
    src = make_source(task, source, data_dir=data_dir)
    if built.train_filter is not None:
        src = sources.TrainFilteredSource(
            src, built.train_filter, splits=("train",),
            description="T5 wsc_simple: train on label-True examples only")
    info = registry.TaskInfo(
        name=name or task_name(family, task, source),
        benchmark="super_glue", task=task, family=family, source=source,
        label_strings=built.label_strings,
        per_example_label_strings=built.per_example_label_strings,
        metric=METRICS[task],
        label_field=None if task == "record" else "label",
        group_fields=(("idx", "paragraph"), ("idx", "question"))
        if task == "multirc" else None,
    )
    return registry.register_task(info, src, [built.preprocessor],
                                  built.postprocess_fn)


# T5's `wsc` format (both spans marked, False / True targets), lester family only: a WSC
# that trains on every example (EPT Table 5: 554), where `wsc_simple` keeps 259.
WSC_TRUE_FALSE = "wsc_true_false"


def register_wsc_true_false(source: str, data_dir: Optional[str] = None,
                            name: Optional[str] = None) -> seqio.Task:
    """Registers ``lester_super_glue_wsc_true_false_<source>`` (T5's ``wsc``, taskless)."""
    template = tmpl.LESTER_WSC_TRUE_FALSE
    info = registry.TaskInfo(
        name=name or task_name("lester", WSC_TRUE_FALSE, source),
        benchmark="super_glue", task=WSC_TRUE_FALSE, family="lester", source=source,
        label_strings=tuple(template.labels), per_example_label_strings=True,
        metric=METRICS["wsc"])
    return registry.register_task(info, make_source("wsc", source, data_dir=data_dir),
                                  [pre.wsc_true_false(template)],
                                  post.class_label(template.labels))


# SuperGLUE's diagnostics, registered by T5 as `super_glue_{axb,axg}_v102` (test split
# only, cast as RTE: AX-b's sentence1 / sentence2 read as premise / hypothesis). T5 gives
# them no metric; ours are SuperGLUE's: Matthews correlation (AX-b), accuracy (AX-g).
DIAGNOSTICS: Tuple[str, ...] = ("axb", "axg")
DIAGNOSTIC_METRICS: Dict[str, registry.MetricSpec] = {
    "axb": registry.MetricSpec.single(m.matthews_corrcoef, "matthews_corrcoef"),
    "axg": registry.MetricSpec.single(m.accuracy, "accuracy"),
}


def _rekey_axb(ds):
    """T5's rekey for AX-b: premise <- sentence1, hypothesis <- sentence2."""
    def fn(ex):
        out = {k: v for k, v in ex.items() if k not in ("sentence1", "sentence2")}
        out["premise"], out["hypothesis"] = ex["sentence1"], ex["sentence2"]
        return out
    return ds.map(fn)


def register_diagnostic(task: str, source: str, data_dir: Optional[str] = None,
                        name: Optional[str] = None) -> seqio.Task:
    """Registers ``lester_super_glue_{axb,axg}_<source>`` (evaluation only: ``test``)."""
    if task not in DIAGNOSTICS:
        raise ValueError(f"unknown SuperGLUE diagnostic {task!r}; expected one of "
                         f"{DIAGNOSTICS}")
    if source == "v102":
        src = sources.tfds_source(f"super_glue/{task}:{TFDS_VERSION}", ("test",))
    elif source == "local":
        src = sources.LocalDataSource(
            name=f"super_glue/{task} (local)", kind="superglue",
            subdir=readers.SUPERGLUE_DIRS[task],
            split_files=readers.SUPERGLUE_DIAGNOSTIC_FILES[task],
            reader=readers.SUPERGLUE_READERS[task],
            signature=readers.SUPERGLUE_SIGNATURES[task], data_dir=data_dir)
    else:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    template = tmpl.LESTER["rte"]
    preprocessors = ([_rekey_axb] if task == "axb" else []) + [
        pre.classification(template, False)]
    info = registry.TaskInfo(
        name=name or task_name("lester", task, source), benchmark="super_glue",
        task=task, family="lester", source=source,
        label_strings=tuple(template.labels), per_example_label_strings=True,
        metric=DIAGNOSTIC_METRICS[task])
    return registry.register_task(info, src, preprocessors,
                                  post.class_label(template.labels))


def wsc_true_false_names() -> Tuple[str, ...]:
    return tuple(task_name("lester", WSC_TRUE_FALSE, s) for s in SOURCES)


def extra_task_names() -> Tuple[str, ...]:
    """The SuperGLUE tasks beyond the eight of every family (lester family only)."""
    return tuple(task_name("lester", t, s) for t in (WSC_TRUE_FALSE,) + DIAGNOSTICS
                 for s in SOURCES)


def register_all() -> None:
    for source in SOURCES:
        register_wsc_true_false(source)
        for task in DIAGNOSTICS:
            register_diagnostic(task, source)
    for family in FAMILIES:
        for task in TASKS:
            for source in SOURCES:
                register(family, task, source)
            register(family, task, ALIAS_SOURCE, name=alias_name(family, task))
