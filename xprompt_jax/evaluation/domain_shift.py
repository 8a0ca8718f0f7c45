"""Domain shift: a prompt trained on one task scored zero-shot on others (Lester et al.
section 5, Tables 1 and 2).

* QQP <-> MRPC (Table 2): the target's examples, the source's verbalizers; a generated
  (or rank-classified) ``duplicate`` counts as MRPC's ``equivalent`` (``LABEL_MAPS``,
  the evaluator's `label_map` option).
* SQuAD -> the MRQA out-of-domain sets (Table 1: TextbookQA, BioASQ, RACE,
  RelationExtraction, DuoRC, DROP; F1): same output space, no mapping.

``run_transfers(...)`` evaluates the given variables on every target task and returns
``{task: result}``; ``transfer_markdown(...)`` renders the per-task table.
``python -m xprompt_jax.evaluate --gin.EVAL_TRANSFER_TASKS="('lester_glue_mrpc_v200',)"``
runs it after the source task's own evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..markdown import cell
from .evaluator import EvalConfig, Evaluator

# (source task kind, target task kind) -> {source label string: target label string}
LABEL_MAPS: Dict[tuple, Dict[str, str]] = {
    ("qqp", "mrpc"): {"not_duplicate": "not_equivalent", "duplicate": "equivalent"},
    ("mrpc", "qqp"): {"not_equivalent": "not_duplicate", "equivalent": "duplicate"},
}


def lester_mrqa_targets() -> List[str]:
    """Lester et al. Table 1's out-of-domain tasks (local MRQA files)."""
    from xprompt_jax.tasks import mrqa

    return [mrqa.task_name(d) for d in mrqa.LESTER_DOMAIN_SHIFT]


def _task_info(task_name: str, field: str) -> Optional[str]:
    try:
        from xprompt_jax import tasks

        return getattr(tasks.task_info(task_name), field)
    except (ImportError, KeyError):
        return None


def label_map_for(source_task: str, target_task: str) -> Optional[Dict[str, str]]:
    """The default verbalizer mapping between two tasks (None: same label space)."""
    return LABEL_MAPS.get((_task_info(source_task, "task"), _task_info(target_task, "task")))


def run_transfers(model, variables, source_task: str, target_tasks: Sequence[str],
                  feature_lengths: Mapping[str, int], eval_config: EvalConfig,
                  label_maps: Optional[Mapping[str, Mapping[str, str]]] = None
                  ) -> Dict[str, Dict[str, Any]]:
    """`{target task: evaluation result}` of `variables` (the source task's prompt)."""
    out: Dict[str, Dict[str, Any]] = {}
    config = dataclasses.replace(eval_config, heldout_split=None, main_metric=None)
    for target in target_tasks:
        target_config = config
        if _task_info(target, "benchmark") in ("mrqa", "squad"):
            target_config = dataclasses.replace(config, mode="generation")  # no verbalizers
        mapping = (label_maps or {}).get(target) or label_map_for(source_task, target)
        evaluator = Evaluator(model, target, feature_lengths, target_config,
                              label_map=mapping or None)
        result = evaluator.evaluate(variables)
        result["source_task"] = source_task
        out[target] = result
    return out


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
                     f"{cell(r.get('main_metric'))} | "
                     + " | ".join(cell((r.get("metrics") or {}).get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"
