"""Mixed-task training with a PromptBank: a seqio mixture whose tasks each carry their own
prompt id, so every task trains its own bank entry in the same batches.

`register_bank_mixture(tasks, model)` registers, for task i of `tasks`, a copy
`<task>_bank<N>_id<i>` whose preprocessing prepends the prompt-id token
`id_token_base + i` to the tokenized `inputs` (before the EOS is appended: the id takes
one position of the `inputs` length, and seqio's trimming keeps it first), and a mixture
`bank<N>_<task>+...` of those copies (rates: their number of train examples, as seqio's
`rate_num_examples`; `rate='equal'` for equal rates). The copies work under `t5x/train.py`
too: the id is an ordinary input token there.

Training (`BankBatches(mode='ids_in_data')`) gives each task's prompt its own token-mean
loss; evaluation (`MultiTaskBankEvaluator`) scores every task's dev split with its own
prompt, records `<task>/<metric>`, selects the run's checkpoint on the tasks' mean main
metric, and keeps each task's best prompt (`MODEL_DIR/best_per_task/<task>.npy` and
`best_per_task.json`: step and metric of each task's best evaluation).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..prompts import bank as bank_lib


def prepend_prompt_id(dataset, output_features=None, *, token: int):
    """seqio preprocessor: `inputs` `[L]` -> `[1 + L]` with `token` first."""
    import tensorflow as tf

    def fn(ex):
        ex = dict(ex)
        ex["inputs"] = tf.concat([tf.constant([token], ex["inputs"].dtype), ex["inputs"]], 0)
        return ex

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def id_task_name(task: str, index: int, num: int) -> str:
    return f"{task}_bank{num}_id{index}"


def register_bank_mixture(tasks: Sequence[str], model, rate: str = "num_examples") -> str:
    """Registers the id-carrying copies of `tasks` (task i -> prompt id i) and their
    mixture; returns the mixture's name (idempotent)."""
    import functools

    import seqio

    tasks = list(tasks)
    num = bank_lib.num_prompts(model)
    if num != len(tasks):
        raise ValueError(f"{len(tasks)} tasks for a PromptBank of {num} prompts: set "
                         f"NUM_PROMPTS={len(tasks)}")
    base = bank_lib.id_token_base(model)
    names = []
    for i, name in enumerate(tasks):
        task = seqio.get_mixture_or_task(name)
        if not isinstance(task, seqio.Task):
            raise ValueError(f"{name!r} is a mixture; list its tasks")
        new = id_task_name(name, i, num)
        names.append(new)
        if new in seqio.TaskRegistry.names():
            continue
        pre = list(task.preprocessors)
        at = next((j for j, p in enumerate(pre)
                   if getattr(p, "__name__", "") == "append_eos_after_trim"), len(pre))
        pre.insert(at, functools.partial(prepend_prompt_id, token=base + i))
        seqio.TaskRegistry.add(
            new, source=task.source, output_features=task.output_features,
            preprocessors=pre, postprocess_fn=getattr(task, "_postprocess_fn", None),
            metric_fns=list(task.metric_fns), shuffle_buffer_size=task.shuffle_buffer_size)
    mixture = f"bank{num}_" + "+".join(tasks)
    if mixture not in seqio.MixtureRegistry.names():
        if rate == "equal":
            seqio.MixtureRegistry.add(mixture, [(n, 1.0) for n in names])
        else:
            seqio.MixtureRegistry.add(mixture, names,
                                      default_rate=seqio.mixing_rate_num_examples)
    return mixture


class MultiTaskBankEvaluator:
    """Each task's dev split with its own prompt (a `BankEvaluator` with that one id)."""

    def __init__(self, model, tasks: Sequence[str], feature_lengths: Mapping[str, int], config,
                 model_dir: Optional[str] = None, main_metric_fns=None):
        from .bank_evaluation import BankEvaluator

        self.tasks = list(tasks)
        self.config = config
        self.model_dir = model_dir
        self.composition = getattr(model.prompt, "composition", None)  # shared + task
        self.evaluators = [
            BankEvaluator(model, task, feature_lengths, config, prompt_ids=[i],
                          prompt_names=[task],
                          **({"main_metric_fn": main_metric_fns[i]} if main_metric_fns else {}))
            for i, task in enumerate(self.tasks)]
        self.best: Dict[str, Dict[str, Any]] = {}
        if model_dir and os.path.exists(self._best_json()):
            with open(self._best_json()) as f:
                self.best = json.load(f)
        self.step_fn = None  # set by bank_trainer_parts: () -> current step

    def _best_json(self) -> str:
        return os.path.join(self.model_dir, "best_per_task.json")

    def main_metric_fn(self, metrics: Mapping[str, float]) -> float:
        mains = [ev.main_metric_fn({k[len(t) + 1:]: v for k, v in metrics.items()
                                    if k.startswith(t + "/")})
                 for t, ev in zip(self.tasks, self.evaluators)]
        return float(np.mean(mains))

    def evaluate(self, variables: Mapping[str, Any]) -> Dict[str, Any]:
        metrics: Dict[str, float] = {}
        per_task = {}
        for i, (task, ev) in enumerate(zip(self.tasks, self.evaluators)):
            result = ev.evaluate(variables)
            main = result["per_prompt_main"][0]
            per_task[task] = main
            metrics.update({m: v for m, v in result["metrics"].items()
                            if m.startswith(task + "/")})
            self._keep_best(i, task, main, variables)
        mains = [v for v in per_task.values() if v is not None]
        return {"mode": self.config.mode, "split": self.config.split, "metrics": metrics,
                "main_metric": float(np.mean(mains)) if mains else None,
                "per_task_main": per_task,
                "num_examples": sum(len(ev.examples) for ev in self.evaluators)}

    def _keep_best(self, index: int, task: str, main, variables) -> None:
        import jax

        if self.model_dir is None or main is None or jax.process_index() != 0:
            return
        if task in self.best and main <= self.best[task]["main_metric"]:
            return
        from .checkpointing import write_json_atomic

        step = None if self.step_fn is None else int(self.step_fn())
        from .bank_training import bank_entry_prompts

        composed = bank_entry_prompts(variables["params"], self.composition)
        if composed is not None:  # the prompt as it enters the encoder (shared folded in)
            leaves = [composed[index]]
        else:
            entry = jax.tree_util.tree_map(
                lambda x: np.asarray(x)[index],
                variables["params"]["prompt"][bank_lib.BANK_NAME])
            leaves = jax.tree_util.tree_leaves(entry)
        directory = os.path.join(self.model_dir, "best_per_task")
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{task}.npy.tmp")
        with open(tmp, "wb") as f:
            np.save(f, leaves[0] if len(leaves) == 1 else np.concatenate(
                [np.ravel(x) for x in leaves]))
        os.replace(tmp, os.path.join(directory, f"{task}.npy"))
        self.best[task] = {"main_metric": float(main), "step": step, "prompt_id": index}
        write_json_atomic(self._best_json(), self.best)
