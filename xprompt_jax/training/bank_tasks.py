"""Mixed-task training with a PromptBank: a seqio mixture whose tasks each carry their own
prompt id, so every task trains its own bank entry in the same batches.

`register_bank_mixture(tasks, model)` registers, for task i of `tasks`, a copy
`<task>_bank<N>_id<i>` whose preprocessing prepends the prompt-id token
`id_token_base + i` to the tokenized `inputs` (before the EOS is appended: the id takes
one position of the `inputs` length, and seqio's trimming keeps it first), and a mixture
`bank<N>_<task>+...` of those copies (rates: their number of train examples, as seqio's
`rate_num_examples`; `rate='equal'` for equal rates). The copies work under `t5x/train.py`
too: the id is an ordinary input token there.

Training (`bank_training.BankBatches(mode='ids_in_data')`) gives each task's prompt its own
token-mean loss; evaluation (`evaluation.MultiTaskEvaluator`) scores every task's dev split
with its own prompt, records `<task>/<metric>` and selects the run's checkpoint on the
tasks' mean main metric; `bank_training.BestPerTaskPrompts` keeps each task's best prompt
(`MODEL_DIR/best_per_task/<task>.npy` and `best_per_task.json`).
"""

from __future__ import annotations

from typing import Sequence

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
