"""EPT's 21 datasets with held-out test splits (EPT App. B.1, Table 5).

``ept_datasets()`` records, for each dataset, its base tasks and the re-split that gives the
sizes of Table 5 (``heldout.py``; where B.1's rule and the table disagree, the table wins:
HotpotQA, NewsQA, WinoGrande, SciTail and PAWS halve their validation sets; Yelp trains on
100K of its 560K training reviews; WSC trains on all 554 training examples, so its base is
T5's ``wsc`` True/False format, ``lester_super_glue_wsc_true_false_*``, not ``wsc_simple``,
whose train split keeps the 259 label-True examples; MRPC's Table 5 test, 1,725, is
GLUE's test set, unlabelled in TFDS and the GLUE download: ``<base>_heldout`` halves
validation (204 / 204), and ``lester_glue_mrpc_local_heldout_labelled_test`` keeps train
3,668 / validation 408 and reports on a labelled local ``<GLUE_DIR>/MRPC/test.tsv``, the
MSR corpus's ``msr_paraphrase_test.txt``, same columns as ``train.tsv``, where the user has
it) and the paper's metric (Pearson for STS-B, accuracy for MRPC / QQP, F1a for MultiRC, F1 for
MRQA), which the ``_heldout`` variants of ``register_ept_heldout()`` use as their main
(checkpoint-selection) metric.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import seqio

from . import glue, mrqa, superglue
from . import metrics as m
from . import registry
from .heldout import HeldoutSource, HeldoutSpec, heldout_name, heldout_task

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
    # Bases whose local test file may be labelled: also `<base>_heldout_labelled_test`.
    labelled_test_bases: Tuple[str, ...] = ()


def ept_datasets() -> List[EPTDataset]:
    """EPT's 21 datasets with the base task names they re-split (all sources)."""
    sg = lambda t: tuple(superglue.task_name("lester", t, s) for s in superglue.SOURCES)
    # EPT read GLUE from Hugging Face: the current TFDS version and the local files.
    gl = lambda t: tuple(glue.task_name(t, s) for s in ("v200", "local"))
    ex = lambda t: (next(glue.ept_task_name(n, v) for n, _, _, _, v in glue.EPT_EXTRA
                         if n == t),)
    mq = lambda d: (mrqa.task_name(d),)
    return [
        EPTDataset("BoolQ", "superglue", sg("boolq"), _SPLIT_VAL, None),
        EPTDataset("CB", "superglue", sg("cb"), _SPLIT_VAL, _ept_cb()),
        EPTDataset("MultiRC", "superglue", sg("multirc"), _TRAIN_1K, _ept_multirc_f1a(),
                   348),
        EPTDataset("WiC", "superglue", sg("wic"), _SPLIT_VAL, None),
        EPTDataset("WSC", "superglue", superglue.wsc_true_false_names(), _SPLIT_VAL,
                   None),
        EPTDataset("CoLA", "glue", gl("cola"), _SPLIT_VAL, None),
        EPTDataset("SST-2", "glue", gl("sst2"), _TRAIN_1K, None),
        EPTDataset("MRPC", "glue", gl("mrpc"), _SPLIT_VAL, _ept_acc_with_f1(),
                   labelled_test_bases=(glue.task_name("mrpc", "local"),)),
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
        # Yelp's base task already takes 10K of train as validation, its TFDS test split
        # is the test set; the held-out variant keeps 100K of the rest for training.
        EPTDataset("Yelp", "others", ex("yelp_polarity"), glue.YELP_EPT, None),
        EPTDataset("SciTail", "others", ex("scitail"), _SPLIT_VAL, None),
        EPTDataset("PAWS-Wiki", "others", ex("paws_wiki"), _SPLIT_VAL, None),
    ]


LABELLED_TEST_SUFFIX = "_labelled_test"


def ept_heldout_task_names() -> List[str]:
    return [heldout_name(b) for d in ept_datasets() for b in d.bases] + [
        heldout_name(b) + LABELLED_TEST_SUFFIX for d in ept_datasets()
        for b in d.labelled_test_bases]


def register_ept_heldout() -> List[str]:
    """Registers ``<base>_heldout`` for every base of EPT's 21 datasets."""
    names = []
    for d in ept_datasets():
        for b in d.bases:
            if d.name == "Yelp":
                # The base is already re-split (glue.YELP_VALIDATION): re-split its raw
                # TFDS source with the same validation and 100K training examples.
                info = registry.task_info(b)
                base = seqio.get_mixture_or_task(b)
                registry.register_derived_task(
                    dataclasses.replace(info, name=heldout_name(b), base=b), base,
                    HeldoutSource(base.source.base, d.spec))
                names.append(heldout_name(b))
                continue
            names.append(heldout_task(b, d.spec.strategy, d.spec.num_validation,
                                      test_split=d.spec.test_split, metric=d.metric,
                                      num_train=d.spec.num_train))
        for b in d.labelled_test_bases:
            names.append(heldout_task(b, "labelled_test", metric=d.metric,
                                      name=heldout_name(b) + LABELLED_TEST_SUFFIX))
    return names
