"""Evaluation: one `Evaluator` (rank classification or generation, many variants of a batch
in one call), prompt-bank and multi-task results, label maps and held-out splits, domain
shift."""

from .bank import PromptSelection, majority_vote, table3_markdown
from .evaluator import HELDOUT_PREFIX, MODES, EvalConfig, Evaluator, Predictions
from .metrics import MainMetric, default_label_strings_fn, main_metric_fn, metric_name
from .multitask import MultiTaskEvaluator
from .variants import SINGLE, PromptIds, RowPromptIds, Variants

__all__ = ["EvalConfig", "Evaluator", "HELDOUT_PREFIX", "MODES", "MainMetric",
           "MultiTaskEvaluator", "Predictions", "PromptIds", "PromptSelection",
           "RowPromptIds", "SINGLE", "Variants", "default_label_strings_fn", "main_metric_fn",
           "majority_vote", "metric_name", "table3_markdown"]
