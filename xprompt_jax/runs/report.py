"""Reports: report.json and report.md of a run, written once, composed of sections.

A report is a body (what the run itself knows: the training run's selection and held-out
results, or the XPrompt pipeline's stages) plus `Section`s that callers add before it is
written: a summary above the body (the quickstart's references and result table) or a next
step below it (XPrompt's T5X stage 2: the rewind command). Each section may carry data
under its own key of report.json. Nothing rewrites a report after it is written.

The training run's body (`run_report`): the best checkpoint's selection and held-out
results and the nearest vocabulary pieces of its prompt (Lester et al. section 7).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..evaluation.evaluator import HELDOUT_PREFIX
from ..fileio import is_writer, jsonable_loose, write_json_atomic, write_text_atomic
from ..markdown import cell

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclasses.dataclass
class Section:
    """Markdown `lines` of a report; `data` under `key` of report.json (when `key`);
    `first`: above the body (a summary), else below it."""

    lines: Sequence[str]
    key: Optional[str] = None
    data: Any = None
    first: bool = False


# A function of the finished body (report.json's content) that returns a section.
SectionFn = Callable[[Mapping[str, Any]], Section]


def compose(body: Mapping[str, Any], body_lines: Sequence[str],
            sections: Sequence[Section] = ()) -> tuple:
    """(report.json content, report.md text) of a body and its sections."""
    data = dict(body)
    for section in sections:
        if section.key is not None:
            data[section.key] = section.data
    lines: List[str] = []
    for section in (s for s in sections if s.first):
        lines += list(section.lines)
    lines += list(body_lines)
    for section in (s for s in sections if not s.first):
        lines += list(section.lines)
    return data, "\n".join(lines).rstrip("\n") + "\n"


def write_report(model_dir: str, body: Mapping[str, Any], body_lines: Sequence[str],
                 sections: Sequence[Section] = ()) -> Dict[str, Any]:
    """Writes MODEL_DIR/report.json and report.md (process 0, atomically); returns the
    JSON content."""
    data, text = compose(body, body_lines, sections)
    data = jsonable_loose(data)
    if is_writer():
        write_json_atomic(os.path.join(model_dir, REPORT_JSON), data)
        write_text_atomic(os.path.join(model_dir, REPORT_MD), text)
    return data


# ----------------------------------------------------------------------------- training run
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


def run_markdown(report: Mapping[str, Any]) -> List[str]:
    """report.md lines of a training run's body."""
    from ..analysis import nearest_tokens

    lines = [f"# Run report: `{report['task']}`", ""]
    sel, held = report.get("selection"), report.get("heldout")
    lines += ["| checkpoint | selection split | selection main | held-out split | "
              "held-out main |", "|---|---|---|---|---|",
              f"| {cell(report.get('best_step'))} | {cell(sel and sel.get('split'))} | "
              f"{cell(sel and sel.get('main_metric'))} | {cell(held and held.get('split'))} | "
              f"{cell(held and held.get('main_metric'))} |", ""]
    for title, part in (("Selection metrics", sel), ("Held-out metrics", held)):
        if part and part.get("metrics"):
            lines += [f"{title} ({part.get('split')}): " + ", ".join(
                f"{k} {cell(v)}" for k, v in sorted(part["metrics"].items())), ""]
    if report.get("nearest_tokens"):
        lines += nearest_tokens.markdown_lines(report["nearest_tokens"])
    return lines


def prompt_interpretability(model, variables: Mapping[str, Any], task_name: str,
                            k: int = 5, label_strings: Optional[Sequence[str]] = None
                            ) -> Optional[Dict[str, Any]]:
    """Nearest vocabulary pieces of the prompt in `variables` (frozen model included);
    None when the model has no shared `[n, e]` prompt or no token embedding."""
    import seqio

    from ..analysis.nearest_tokens import interpret_prompt
    from ..models.prompted import projected_prompt

    try:
        prompt = projected_prompt(model, variables)
    except (ValueError, AttributeError, TypeError):
        return None
    embedding = variables["params"].get("token_embedder", {}).get("embedding")
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
