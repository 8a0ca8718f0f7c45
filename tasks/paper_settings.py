"""Per-task settings of the paper recipes (``gin/recipes/*_paper.gin``).

* ``ept_feature_lengths(task_name)`` - EPT B.2: inputs 256, MultiRC 348, MRQA 512.
* ``ept_main_metric(task_name)`` - the metric EPT reports (Table 5): Pearson for STS-B,
  accuracy for MRPC / QQP, F1a for MultiRC, F1 for MRQA, mean(accuracy, macro-F1) for
  CB, Matthews corr. for CoLA, accuracy elsewhere; the recipes bind it to MAIN_METRIC.
* ``lester_init_words(task_name)`` - Lester et al.'s class-label initialisation words:
  the task's label strings, or (footnote 7) "commonsense, pronoun, resolution" for WSC
  and "commonsense, reasoning, reading, comprehension" for ReCoRD; ``None`` for tasks
  without classes (QA).
The initializer built from those words is ``xprompt_jax.prompts.task_init.lester_prompt_init``.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from xprompt_jax import _moved

from . import registry

EPT_INPUT_LENGTH = 256
EPT_INPUT_LENGTHS = {"multirc": 348}
EPT_QA_INPUT_LENGTH = 512
QA_TARGET_LENGTH = 32
CLASSIFICATION_TARGET_LENGTH = 16

EPT_METRICS = {"stsb": "pearson_corrcoef", "mrpc": "accuracy", "qqp": "accuracy",
               "multirc": "f1a", "cb": "average", "cola": "matthews_corrcoef"}

LESTER_FOOTNOTE7 = {"wsc": ("commonsense", "pronoun", "resolution"),
                    "record": ("commonsense", "reasoning", "reading", "comprehension")}


def _is_qa(info: registry.TaskInfo) -> bool:
    return info.benchmark in ("mrqa", "squad")


def ept_feature_lengths(task_name: str) -> Dict[str, int]:
    """EPT's input length for ``task_name`` (targets: 32 for QA, else 16)."""
    info = registry.task_info(task_name)
    if _is_qa(info):
        return {"inputs": EPT_QA_INPUT_LENGTH, "targets": QA_TARGET_LENGTH}
    return {"inputs": EPT_INPUT_LENGTHS.get(info.task, EPT_INPUT_LENGTH),
            "targets": CLASSIFICATION_TARGET_LENGTH}


def ept_main_metric(task_name: str) -> str:
    """The metric key EPT reports for ``task_name`` (see module docstring)."""
    info = registry.task_info(task_name)
    if _is_qa(info):
        return "f1"
    return EPT_METRICS.get(info.task, "accuracy")


def lester_init_words(task_name: str) -> Optional[List[str]]:
    """Class-label init words (Lester et al. section 3 and footnote 7)."""
    info = registry.task_info(task_name)
    if info.task in LESTER_FOOTNOTE7:
        return list(LESTER_FOOTNOTE7[info.task])
    if info.label_strings:
        return list(info.label_strings)
    return None


# Names that moved elsewhere: an import names their new home.
__getattr__ = _moved.module_getattr(__name__)
