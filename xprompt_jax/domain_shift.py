"""Domain shift: a prompt trained on one task scored zero-shot on others (Lester et al.
section 5, Tables 1 and 2).

* QQP <-> MRPC (Table 2): the target's examples, the source's verbalizers; a generated
  (or rank-classified) ``duplicate`` counts as MRPC's ``equivalent`` (``LABEL_MAPS``).
* SQuAD -> the MRQA out-of-domain sets (Table 1: TextbookQA, BioASQ, RACE,
  RelationExtraction, DuoRC, DROP; F1): same output space, no mapping.

``run_transfers(...)`` evaluates the given variables on every target task and returns
``{task: result}``; ``transfer_markdown(...)`` renders the per-task table.
``python -m xprompt_jax.evaluate --gin.EVAL_TRANSFER_TASKS="('lester_glue_mrpc_v200',)"``
runs it after the source task's own evaluation (``transfer_results.json`` /
``transfer_results.md`` in MODEL_DIR).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

# (source task kind, target task kind) -> {source label string: target label string}
LABEL_MAPS: Dict[tuple, Dict[str, str]] = {
    ("qqp", "mrpc"): {"not_duplicate": "not_equivalent", "duplicate": "equivalent"},
    ("mrpc", "qqp"): {"not_equivalent": "not_duplicate", "equivalent": "duplicate"},
}


def lester_mrqa_targets() -> List[str]:
    """Lester et al. Table 1's out-of-domain tasks (local MRQA files)."""
    from xprompt_jax.tasks import mrqa

    return [mrqa.task_name(d) for d in mrqa.LESTER_DOMAIN_SHIFT]


def _kind(task_name: str) -> Optional[str]:
    try:
        from xprompt_jax import tasks

        return tasks.task_info(task_name).task
    except (ImportError, KeyError):
        return None


def _benchmark(task_name: str) -> Optional[str]:
    try:
        from xprompt_jax import tasks

        return tasks.task_info(task_name).benchmark
    except (ImportError, KeyError):
        return None


def label_map_for(source_task: str, target_task: str) -> Optional[Dict[str, str]]:
    """The default verbalizer mapping between two tasks (None: same label space)."""
    return LABEL_MAPS.get((_kind(source_task), _kind(target_task)))


class LabelMapped:
    """Scores a target-task `Evaluator` with the source task's verbalizers.

    Generation: a prediction equal to a source label (after stripping) becomes the mapped
    target label, anything else is left as is (and scores as an invalid label).
    Rank classification: the candidates are the source labels of the target's classes.
    """

    def __init__(self, evaluator, label_map: Mapping[str, str]):
        self.evaluator = evaluator
        self.label_map = {str(k): str(v) for k, v in label_map.items()}
        inverse = {v: k for k, v in self.label_map.items()}
        if evaluator.config.mode == "rank_classification":
            target_fn = evaluator.label_strings_fn

            def source_labels(example):
                labels = target_fn(example)
                missing = [l for l in labels if l not in inverse]
                if missing:
                    raise ValueError(f"label map {self.label_map} has no source label for "
                                     f"target label(s) {missing}")
                return [inverse[l] for l in labels]

            evaluator.label_strings_fn = source_labels

    def map_text(self, text: str) -> str:
        return self.label_map.get(text.strip(), text)

    def evaluate(self, variables) -> Dict[str, Any]:
        ev = self.evaluator
        variables = {k: v for k, v in variables.items() if k != "cache"}
        if ev.config.mode == "generation":
            texts = ev._predict_generation(variables)  # pylint: disable=protected-access
        else:
            texts = ev._predict_rank(variables)  # pylint: disable=protected-access
        result = ev.result_from_texts([self.map_text(t) for t in texts])
        result["label_map"] = dict(self.label_map)
        return result


def run_transfers(model, variables, source_task: str, target_tasks: Sequence[str],
                  feature_lengths: Mapping[str, int], eval_config,
                  label_maps: Optional[Mapping[str, Mapping[str, str]]] = None,
                  main_metric: Any = None) -> Dict[str, Dict[str, Any]]:
    """`{target task: evaluation result}` of `variables` (the source task's prompt)."""
    from .training.evaluation import Evaluator, main_metric_fn

    out: Dict[str, Dict[str, Any]] = {}
    for target in target_tasks:
        config = eval_config
        if _benchmark(target) in ("mrqa", "squad"):
            config = dataclasses.replace(eval_config, mode="generation")  # no verbalizers
        mapping = (label_maps or {}).get(target) or label_map_for(source_task, target)
        evaluator = Evaluator(model, target, feature_lengths,
                              dataclasses.replace(config),
                              main_metric_fn=main_metric_fn(target, main_metric))
        runner = LabelMapped(evaluator, mapping) if mapping else evaluator
        result = runner.evaluate(variables)
        result["source_task"] = source_task
        out[target] = result
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{float(v):.2f}"


def transfer_markdown(source_task: str, source_result: Optional[Mapping[str, Any]],
                      results: Mapping[str, Mapping[str, Any]]) -> str:
    """Per-task table: the source task (in-domain) first, then each target."""
    keys = sorted({k for r in list(results.values()) + [source_result or {}]
                   for k in (r.get("metrics") or {})})
    lines = [f"# Domain shift: prompt trained on `{source_task}`", "",
             "| task | split | mode | label map | main | " + " | ".join(keys) + " |",
             "|---|---|---|---|---|" + "---|" * len(keys)]
    rows = ([(source_task + " (in-domain)", source_result)] if source_result else [])
    rows += list(results.items())
    for name, r in rows:
        lm = r.get("label_map")
        lm_text = ", ".join(f"{a}->{b}" for a, b in lm.items()) if lm else "-"
        lines.append(f"| `{name}` | {r.get('split')} | {r.get('mode')} | {lm_text} | "
                     f"{_fmt(r.get('main_metric'))} | "
                     + " | ".join(_fmt((r.get("metrics") or {}).get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"
