"""Evaluating the K prompts of a `PromptBank` in one batch, and their majority-vote
ensemble (Lester et al. 2021, section 6 and Table 3).

Every dev example is repeated once per prompt in a batch (`bank.tile_for_prompts`: rows
`b*K + k`), so one jitted pass scores all K prompts on one loaded frozen model, by rank
classification (each prompt's best verbalizer) or greedy generation. The result holds
each prompt's metrics, their mean and best, and the ensemble's: the majority vote of the
K predictions per example (`majority_vote`: ties go to the tied prediction of the
lowest-numbered prompt, i.e. prompt order breaks ties).

Checkpoint selection during joint training uses the mean of the prompts' main metrics.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..prompts import bank as bank_lib
from .evaluation import Evaluator


def majority_vote(predictions: Sequence[Sequence[str]]) -> List[str]:
    """`[K][n]` predictions -> `[n]`: the most frequent per example; a tie goes to the
    tied prediction that the lowest-numbered prompt made."""
    if not predictions:
        raise ValueError("majority_vote needs at least one prompt's predictions")
    n = len(predictions[0])
    if any(len(p) != n for p in predictions):
        raise ValueError("majority_vote: prompts have different numbers of predictions")
    out = []
    for i in range(n):
        column = [p[i] for p in predictions]
        counts = collections.Counter(column)
        top = max(counts.values())
        out.append(next(c for c in column if counts[c] == top))
    return out


class BankEvaluator(Evaluator):
    """`Evaluator` for a PromptBank model: all (or `prompt_ids`) prompts in each batch."""

    def __init__(self, model, task_name: str, feature_lengths: Mapping[str, int], config,
                 prompt_ids: Optional[Sequence[int]] = None,
                 prompt_names: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(model, task_name, feature_lengths, config, **kwargs)
        self._init_bank(prompt_ids, prompt_names)

    @classmethod
    def from_evaluator(cls, evaluator: Evaluator, prompt_ids=None, prompt_names=None):
        """The bank evaluator of an already built `Evaluator` (its examples reused)."""
        out = cls.__new__(cls)
        out.__dict__.update(evaluator.__dict__)
        out._init_bank(prompt_ids, prompt_names)
        return out

    def _init_bank(self, prompt_ids, prompt_names):
        model = self.model
        self.num = bank_lib.num_prompts(model)
        if not self.num:
            raise ValueError("BankEvaluator needs a PromptedT5 whose prompt is a PromptBank")
        self.base = bank_lib.id_token_base(model)
        self.prompt_ids = list(range(self.num)) if prompt_ids is None else list(prompt_ids)
        bank_lib.check_prompt_ids(self.prompt_ids, self.num, "BankEvaluator.prompt_ids")
        self.prompt_names = (list(prompt_names) if prompt_names else
                             [f"prompt_{k}" for k in self.prompt_ids])

    def _tile(self, features):
        return bank_lib.tile_for_prompts(features, self.prompt_ids, self.base, self.num)

    def per_prompt_texts(self, variables) -> List[List[str]]:
        """`[K][n]` predicted texts (generation) or labels (rank classification)."""
        k = len(self.prompt_ids)
        n = len(self.examples)
        texts: List[List[Optional[str]]] = [[None] * n for _ in range(k)]
        size = self.config.batch_size
        if self.config.mode == "generation":
            for indices in self.example_batches(size):
                batch = self._tile(self.input_batch(indices, size))
                tokens = self.decode_batch(variables, batch["encoder_input_tokens"])
                for j, i in enumerate(indices):
                    for p in range(k):
                        texts[p][i] = self.tokens_to_text(tokens[j * k + p])
            return texts
        labels = self.rank_options()[0]
        for indices in self.example_batches(size):
            scores = self.score_option_batch(variables, self._tile(self.option_batch(indices,
                                                                                     size)))
            for j, i in enumerate(indices):
                for p in range(k):
                    row = scores[j * k + p][:len(labels[i])]
                    texts[p][i] = labels[i][int(np.argmax(row))]
        return texts

    def evaluate(self, variables: Mapping[str, Any]) -> Dict[str, Any]:
        variables = {name: v for name, v in variables.items() if name != "cache"}
        per_texts = self.per_prompt_texts(variables)
        per = [self.result_from_texts(t) for t in per_texts]
        ensemble = self.result_from_texts(majority_vote(per_texts))
        mains = [r["main_metric"] for r in per]
        finite = [m for m in mains if m is not None]
        metrics: Dict[str, float] = {}
        for name, r in zip(self.prompt_names, per):
            metrics.update({f"{name}/{m}": v for m, v in r["metrics"].items()})
        for m in per[0]["metrics"]:
            values = [r["metrics"][m] for r in per]
            metrics[f"mean/{m}"] = float(np.mean(values))
            metrics[f"best/{m}"] = float(np.max(values))
        metrics.update({f"ensemble/{m}": v for m, v in ensemble["metrics"].items()})
        mean_main = float(np.mean(finite)) if finite else None
        return {
            "mode": self.config.mode, "split": self.config.split, "metrics": metrics,
            "main_metric": mean_main, "num_examples": len(self.examples),
            "prompt_names": self.prompt_names,
            "per_prompt_main": mains,
            "mean_main": mean_main,
            "std_main": float(np.std(finite)) if finite else None,
            "best_main": float(np.max(finite)) if finite else None,
            "ensemble_main": ensemble["main_metric"],
            "predictions_sample": [t[:5] for t in per_texts],
        }


def table3_markdown(task_name: str, result: Mapping[str, Any]) -> str:
    """A Lester et al. Table 3 style report: each prompt, mean +- std, best, ensemble."""
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) \
        else f"{v:.2f}"
    lines = [f"# Prompt ensemble on {task_name} ({result['mode']}, split "
             f"{result['split']}, {result['num_examples']} examples)", "",
             "| prompt | main metric |", "|---|---|"]
    for name, value in zip(result["prompt_names"], result["per_prompt_main"]):
        lines.append(f"| {name} | {fmt(value)} |")
    std = result.get("std_main")
    lines += [f"| **average** | {fmt(result['mean_main'])} +- "
              f"{'n/a' if std is None else f'{std:.2f}'} |",
              f"| **best** | {fmt(result['best_main'])} |",
              f"| **ensemble (majority vote)** | {fmt(result['ensemble_main'])} |", ""]
    return "\n".join(lines)
