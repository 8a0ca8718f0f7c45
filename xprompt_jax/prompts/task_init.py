"""Prompt initializers that need a seqio task (its vocabulary and verbalizers).

Kept apart from `initializers` so that module stays free of seqio / tensorflow imports.
"""

from __future__ import annotations

from typing import Optional, Sequence

from . import initializers


def _task(task_name: str):
    import seqio

    return seqio.get_mixture_or_task(task_name)


def _vocabulary(task_name: str):
    return _task(task_name).output_features["targets"].vocabulary


def class_labels_for_task(embedding, task_name: str,
                          label_strings: Optional[Sequence[str]] = None,
                          population: int = 5000) -> initializers.Initializer:
    """`class_labels` init with the task's verbalizers (or the given label strings).

    Tasks without static labels take Lester et al.'s footnote-7 words where defined (WSC:
    "commonsense, pronoun, resolution"; ReCoRD: "commonsense, reasoning, reading,
    comprehension"; `tasks.paper_settings.lester_init_words`)."""
    if label_strings is None:
        from xprompt_jax import tasks

        label_strings = tasks.get_label_strings(task_name)
        if not label_strings:
            label_strings = tasks.paper_settings.lester_init_words(task_name)
        if not label_strings:
            raise ValueError(f"task {task_name!r} has no static label strings; pass "
                             "label_strings for class_labels init")
    vocab = _vocabulary(task_name)
    ids = [vocab.encode(s) for s in label_strings]
    return initializers.class_labels(embedding, ids, population)


def lester_prompt_init(embedding, task_name: str, population: int = 5000
                       ) -> initializers.Initializer:
    """Lester et al.'s initialisation: class labels with
    `tasks.paper_settings.lester_init_words` (the verbalizers, or footnote 7's words), the
    rest sampled vocabulary; sampled vocabulary for tasks without words (QA)."""
    from xprompt_jax.tasks import paper_settings

    words = paper_settings.lester_init_words(task_name)
    if not words:
        return initializers.sampled_vocab(embedding, population)
    return class_labels_for_task(embedding, task_name, label_strings=words,
                                 population=population)


def from_text_for_task(embedding, text: str, task_name: str) -> initializers.Initializer:
    """`from_text` init, tokenized with the task's vocabulary."""
    return initializers.from_text(embedding, _vocabulary(task_name).encode(text))
