"""The K prompts of a `PromptBank` evaluated in one batch, and their majority-vote ensemble
(Lester et al. 2021, section 6 and Table 3).

`Evaluator(..., prompts=PromptSelection(ids, names))` scores every example once per prompt
(`variants.PromptIds`: rows `b*K + k`), so one jitted pass scores all K prompts on one
loaded frozen model, by rank classification (each prompt's best verbalizer) or greedy
generation. The result holds each prompt's metrics (`<name>/<metric>`), their mean and best,
and the ensemble's: the majority vote of the K predictions per example (`majority_vote`:
ties go to the tied prediction of the lowest-numbered prompt, i.e. prompt order breaks
ties). Checkpoint selection during joint training uses the mean of the prompts' main metrics.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..markdown import cell
from ..prompts import bank as prompt_bank
from .variants import PromptIds


@dataclasses.dataclass(frozen=True)
class PromptSelection:
    """Which prompts of a bank to evaluate (`ids`) and their names in metrics and reports
    (default `prompt_<id>`)."""

    ids: Sequence[int]
    names: Optional[Sequence[str]] = None

    @classmethod
    def all(cls, model, names: Optional[Sequence[str]] = None) -> "PromptSelection":
        """Every prompt of `model`'s bank, named `names` (or `prompt_<k>`)."""
        num = prompt_bank.num_prompts(model)
        if not num:
            raise ValueError("a prompt selection needs a PromptedT5 whose prompt is a "
                             "PromptBank")
        names = list(names) if names else [f"prompt_{k}" for k in range(num)]
        if len(names) != num:
            raise ValueError(f"{len(names)} prompt names for a bank of {num} prompts")
        return cls(tuple(range(num)), tuple(names))

    @property
    def prompt_names(self) -> List[str]:
        return list(self.names) if self.names else [f"prompt_{k}" for k in self.ids]

    def check(self, model) -> None:
        num = prompt_bank.num_prompts(model)
        if not num:
            raise ValueError("evaluating bank prompts needs a PromptedT5 whose prompt is a "
                             "PromptBank")
        prompt_bank.check_prompt_ids(list(self.ids), num, "evaluated prompt ids")
        if len(self.prompt_names) != len(self.ids):
            raise ValueError(f"{len(self.prompt_names)} prompt names for {len(self.ids)} "
                             "prompt ids")


def majority_vote(predictions: Sequence[Sequence[str]]) -> List[str]:
    """`[K][n]` predictions -> `[n]`: the most frequent per example; a tie goes to the
    tied prediction that the lowest-numbered prompt made. A None prediction (non-finite
    scores) is no vote; an example with no vote stays None."""
    if not predictions:
        raise ValueError("majority_vote needs at least one prompt's predictions")
    n = len(predictions[0])
    if any(len(p) != n for p in predictions):
        raise ValueError("majority_vote: prompts have different numbers of predictions")
    out = []
    for i in range(n):
        column = [p[i] for p in predictions if p[i] is not None]
        if not column:
            out.append(None)
            continue
        counts = collections.Counter(column)
        top = max(counts.values())
        out.append(next(c for c in column if counts[c] == top))
    return out


def bank_result(evaluator, variables: Mapping[str, Any]) -> Dict[str, Any]:
    """The bank's result on `evaluator`'s split for its `prompts` selection."""
    selection = evaluator.prompts
    names = selection.prompt_names
    per_texts = evaluator.predict(variables, PromptIds(evaluator.model, selection.ids)).texts
    per = [evaluator.result_from_texts(t) for t in per_texts]
    ensemble = evaluator.result_from_texts(majority_vote(per_texts))
    mains = [r["main_metric"] for r in per]
    finite = [m for m in mains if m is not None]
    metrics: Dict[str, float] = {}
    for name, r in zip(names, per):
        metrics.update({f"{name}/{m}": v for m, v in r["metrics"].items()})
    scored = [r for r in per if r["metrics"]]  # a non-finite prompt has no metrics
    for m in (scored[0]["metrics"] if scored else {}):
        values = [r["metrics"][m] for r in scored]
        metrics[f"mean/{m}"] = float(np.mean(values))
        metrics[f"best/{m}"] = float(np.max(values))
    metrics.update({f"ensemble/{m}": v for m, v in ensemble["metrics"].items()})
    mean_main = float(np.mean(finite)) if finite else None
    return {
        "mode": evaluator.config.mode, "split": evaluator.config.split, "metrics": metrics,
        "main_metric": mean_main, "num_examples": len(evaluator.examples),
        "prompt_names": names,
        "per_prompt_main": mains,
        "mean_main": mean_main,
        "std_main": float(np.std(finite)) if finite else None,
        "best_main": float(np.max(finite)) if finite else None,
        "ensemble_main": ensemble["main_metric"],
        "predictions_sample": [t[:5] for t in per_texts],
    }


def table3_markdown(task_name: str, result: Mapping[str, Any]) -> str:
    """A Lester et al. Table 3 style report: each prompt, mean +- std, best, ensemble; the
    main metric, then each metric the task reports (the paper's pairs, e.g. MultiRC's
    F1a / EM, CB's accuracy / F1) where `result['metrics']` holds them."""
    fmt = lambda v: cell(v, missing="n/a")  # noqa: E731
    metrics = result.get("metrics") or {}
    keys = [k[len("ensemble/"):] for k in metrics if k.startswith("ensemble/")
            and k[len("ensemble/"):] != "average"]
    names = list(result["prompt_names"])
    lines = [f"# Prompt ensemble on {task_name} ({result['mode']}, split "
             f"{result['split']}, {result['num_examples']} examples)", "",
             "| prompt | main metric |" + "".join(f" {k} |" for k in keys),
             "|---|---|" + "---|" * len(keys)]

    def row(label: str, main: str, prefix: str) -> str:
        return (f"| {label} | {main} |"
                + "".join(f" {fmt(metrics.get(f'{prefix}/{k}'))} |" for k in keys))

    for name, value in zip(names, result["per_prompt_main"]):
        lines.append(row(name, fmt(value), name))
    std = result.get("std_main")
    lines += [row("**average**", f"{fmt(result['mean_main'])} +- "
                                 f"{'n/a' if std is None else f'{std:.2f}'}", "mean"),
              row("**best**", fmt(result["best_main"]), "best"),
              row("**ensemble (majority vote)**", fmt(result["ensemble_main"]), "ensemble"),
              ""]
    return "\n".join(lines)
