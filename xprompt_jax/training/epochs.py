"""`TRAIN_EPOCHS`: a training budget in epochs, turned into steps from the training split.

    steps = ceil(epochs * n_train / batch_size)

`n_train` is the number of input examples of the task's (or mixture's member tasks')
training split as its seqio source reports it (`num_input_examples`), counted by reading
the source once when the source does not know it. The papers' budgets are in epochs
(XPrompt: 100 epochs at batch 16 for every task), so a fixed step count gives small tasks
far more epochs than large ones.
"""

from __future__ import annotations

import math
from typing import Optional


def steps_for_epochs(epochs: float, num_examples: int, batch_size: int) -> int:
    """ceil(epochs * num_examples / batch_size), at least 1."""
    if not epochs or epochs <= 0:
        raise ValueError(f"TRAIN_EPOCHS={epochs!r}: expected a positive number of epochs")
    if num_examples <= 0:
        raise ValueError(f"TRAIN_EPOCHS: the training split has {num_examples} examples")
    if batch_size <= 0:
        raise ValueError(f"TRAIN_EPOCHS: BATCH_SIZE={batch_size} must be positive")
    return max(1, int(math.ceil(float(epochs) * num_examples / batch_size - 1e-9)))


def _count_source(task, split: str) -> int:
    dataset = task.source.get_dataset(split=split, shuffle=False)
    return int(sum(1 for _ in dataset.as_numpy_iterator()))


def num_train_examples(mixture_or_task_name: str, split: str = "train") -> int:
    """Input examples of `split` of a seqio task, or the sum over a mixture's tasks."""
    import seqio

    provider = seqio.get_mixture_or_task(mixture_or_task_name)
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    total = 0
    for task in tasks:
        count: Optional[int] = None
        try:
            count = task.num_input_examples(split)
        except (KeyError, ValueError, NotImplementedError):
            count = None
        total += int(count) if count is not None else _count_source(task, split)
    return total


def train_steps_from_epochs(epochs: float, mixture_or_task_name: str, batch_size: int,
                            split: str = "train") -> int:
    """Steps for `epochs` passes over `mixture_or_task_name`'s `split` at `batch_size`."""
    return steps_for_epochs(epochs, num_train_examples(mixture_or_task_name, split),
                            batch_size)
