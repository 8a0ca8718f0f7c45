"""Held-out reporting: select on one split, report another (EPT App. B.1).

`SelectionWithHeldout(selection, heldout)` is an evaluator for the trainer: every
evaluation scores the selection split (the trainer picks the best checkpoint by its main
metric, unchanged); whenever that main metric reaches or improves on the best seen so far,
the same variables are also scored on the held-out split and the result gains

* `'heldout'`: `{'split', 'mode', 'metrics', 'main_metric', 'num_examples', 'step'?}`,
* `metrics['heldout_<split>/<name>']`: the held-out metrics, so they reach the run's
  JSONL log and TensorBoard next to the selection metrics.

The trainer stores the best evaluation (with its `'heldout'` entry) in its checkpoint
meta and in `train_summary.json`'s `best_eval`: the held-out numbers reported are those of
the checkpoint chosen on the selection split. After a resume the first evaluation scores
the held-out split again (the best so far is not known here); the restored best keeps its
own held-out result.

`run_report(...)` / `write_run_report(...)` write MODEL_DIR/report.json and report.md of a
training run: selection and held-out results of the best checkpoint and the nearest
vocabulary pieces of its prompt (Lester et al. section 7).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

HELDOUT_PREFIX = "heldout_"


class SelectionWithHeldout:
    """Evaluator facade over a selection and a held-out `Evaluator` (see module doc)."""

    def __init__(self, selection, heldout):
        self.selection = selection
        self.heldout = heldout
        self.best: Optional[float] = None

    def __getattr__(self, name):  # task_name, config, examples ... of the selection split
        return getattr(self.selection, name)

    def evaluate(self, variables: Mapping[str, Any]) -> Dict[str, Any]:
        result = dict(self.selection.evaluate(variables))
        main = result.get("main_metric")
        # >=: re-evaluating the best variables (the XPrompt pipeline's final evaluation of
        # its best checkpoint) reports the held-out split too.
        if main is not None and (self.best is None or main >= self.best):
            self.best = main
            held = self.heldout.evaluate(variables)
            split = held.get("split", self.heldout.config.split)
            result["heldout"] = {"split": split, "mode": held.get("mode"),
                                 "metrics": dict(held["metrics"]),
                                 "main_metric": held.get("main_metric"),
                                 "num_examples": held.get("num_examples")}
            metrics = dict(result["metrics"])
            metrics.update({f"{HELDOUT_PREFIX}{split}/{k}": v
                            for k, v in held["metrics"].items()})
            metrics[f"{HELDOUT_PREFIX}{split}/main_metric"] = held.get("main_metric")
            result["metrics"] = metrics
        return result


def _selection_metrics(eval_result: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in (eval_result.get("metrics") or {}).items()
            if not k.startswith(HELDOUT_PREFIX)}


def run_report(summary: Mapping[str, Any], task_name: str,
               interpretability: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """report.json content of a training run (from `Trainer.run()`'s summary)."""
    best = summary.get("best_eval") or {}
    report: Dict[str, Any] = {
        "task": task_name,
        "best_step": best.get("step", summary.get("best_step")),
        "selection": {"split": best.get("split"), "mode": best.get("mode"),
                      "main_metric": best.get("main_metric"),
                      "metrics": _selection_metrics(best)} if best else None,
        "heldout": best.get("heldout"),
        "final_step": summary.get("final_step"),
        "num_trainable_params": summary.get("num_trainable_params"),
    }
    if interpretability is not None:
        report["nearest_tokens"] = dict(interpretability)
    return report


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown(report: Mapping[str, Any]) -> str:
    from ..analysis import nearest_tokens

    lines = [f"# Run report: `{report['task']}`", ""]
    sel, held = report.get("selection"), report.get("heldout")
    lines += ["| checkpoint | selection split | selection main | held-out split | "
              "held-out main |", "|---|---|---|---|---|",
              f"| {_fmt(report.get('best_step'))} | {_fmt(sel and sel.get('split'))} | "
              f"{_fmt(sel and sel.get('main_metric'))} | {_fmt(held and held.get('split'))} | "
              f"{_fmt(held and held.get('main_metric'))} |", ""]
    for title, part in (("Selection metrics", sel), ("Held-out metrics", held)):
        if part and part.get("metrics"):
            lines += [f"{title} ({part.get('split')}): " + ", ".join(
                f"{k} {_fmt(v)}" for k, v in sorted(part["metrics"].items())), ""]
    if report.get("nearest_tokens"):
        lines += nearest_tokens.markdown_lines(report["nearest_tokens"])
    return "\n".join(lines)


def write_run_report(model_dir: str, report: Mapping[str, Any]) -> None:
    from .checkpointing import write_json_atomic, write_text_atomic

    write_json_atomic(os.path.join(model_dir, "report.json"), json.loads(json.dumps(
        report, default=lambda o: np.asarray(o).tolist())))
    write_text_atomic(os.path.join(model_dir, "report.md"), markdown(report))


def trainer_interpretability(trainer, task_name: str, k: int = 5,
                             label_strings: Optional[Sequence[str]] = None,
                             trainable: Optional[Mapping[str, Any]] = None
                             ) -> Optional[Dict[str, Any]]:
    """Nearest pieces of the trainer's current (or the given `trainable`) prompt; call
    after restoring the best checkpoint.

    None when the model has no shared `[n, e]` prompt or no token embedding."""
    import seqio

    from ..analysis.nearest_tokens import interpret_prompt
    from ..export import projected_prompt

    try:
        prompt = projected_prompt(trainer.model, trainer.variables(trainable))
    except (ValueError, AttributeError, TypeError):
        return None
    embedding = trainer.frozen["params"].get("token_embedder", {}).get("embedding")
    if embedding is None:
        return None
    vocab = seqio.get_mixture_or_task(task_name).output_features["targets"].vocabulary
    if label_strings is None:
        try:
            from xprompt_jax import tasks

            label_strings = tasks.get_label_strings(task_name)
        except (ImportError, KeyError, ValueError):
            label_strings = None
    return interpret_prompt(prompt, np.asarray(embedding, np.float32), vocab,
                            label_strings, k)
