"""Prompt initializers: each returns an `init(rng, shape) -> [m, e] float32` closure.

Names (also accepted by `make_initializer`):
- `uniform`: U[-scale, scale] with scale 0.5 (the papers' wording).
- `reference_uniform`: U[0, 0.5), what google-research/prompt-tuning's code draws.
- `sampled_vocab`: rows sampled without replacement from the first `population` (5000)
  rows of the embedding table (the most frequent SentencePiece pieces).
- `class_labels`: row i = mean embedding of the subwords of label i; remaining rows
  sampled vocab (Lester et al.).
- `from_file`: a `.npy` array (shape checked).
- `from_peft`: the prompt of a Hugging Face PEFT prompt-tuning or P-tuning adapter
  directory (`adapter_config.json` + `adapter_model.safetensors`, encoder prompt; shape
  checked); `peft_prompt_length` gives its length.
- `from_text`: the embeddings of a tokenized text, repeated/truncated to m rows.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError
from ..fileio import read_npy

Initializer = Callable[[jax.Array, Sequence[int]], jax.Array]


def _check_2d(shape, name: str):
    if len(shape) != 2:
        raise ValueError(f"{name} initializer expects a [length, embed] shape, got {tuple(shape)}")


def uniform(scale: float = 0.5) -> Initializer:
    """U[-scale, scale]."""

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, shape, dtype, minval=-scale, maxval=scale)

    return init


def reference_uniform(maxval: float = 0.5) -> Initializer:
    """U[0, maxval): the distribution google-research/prompt-tuning's code actually uses."""

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, shape, dtype, minval=0.0, maxval=maxval)

    return init


def sampled_vocab(embedding, population: int = 5000) -> Initializer:
    """Rows of `embedding[:population]` `[V, e]`, sampled without replacement."""
    embedding = jnp.asarray(embedding, jnp.float32)

    def init(rng, shape, dtype=jnp.float32):
        _check_2d(shape, "sampled_vocab")
        length, dim = shape
        pool = min(population, embedding.shape[0])
        if dim != embedding.shape[1]:
            raise ValueError(f"sampled_vocab: prompt embed dim {dim} != embedding table dim "
                             f"{embedding.shape[1]}")
        if length > pool:
            raise ValueError(f"sampled_vocab: cannot sample {length} distinct rows from a "
                             f"population of {pool}")
        rows = jax.random.choice(rng, pool, (length,), replace=False)
        return embedding[rows].astype(dtype)

    return init


def class_labels(embedding, label_token_ids: Sequence[Sequence[int]],
                 population: int = 5000) -> Initializer:
    """Row i = mean of the embeddings of label i's subword ids; the rest sampled vocab."""
    embedding = jnp.asarray(embedding, jnp.float32)
    label_token_ids = [list(ids) for ids in label_token_ids]
    for i, ids in enumerate(label_token_ids):
        if not ids:
            raise ValueError(f"class_labels: label {i} has no subword ids")
    fallback = sampled_vocab(embedding, population)

    def init(rng, shape, dtype=jnp.float32):
        _check_2d(shape, "class_labels")
        length, _ = shape
        labels = label_token_ids[:length]
        label_rows = jnp.stack([embedding[jnp.asarray(ids)].mean(axis=0) for ids in labels])
        if length == len(labels):
            return label_rows.astype(dtype)
        rest = fallback(rng, (length - len(labels), shape[1]), dtype)
        return jnp.concatenate([label_rows.astype(dtype), rest], axis=0)

    return init


def from_array(value, name: str = "array") -> Initializer:
    """`value` as the initial prompt; refused (DataError naming `name`, e.g. the file) when
    it holds NaN / Inf, or values so large that the prompt's norm overflows float32: the
    first training step would then be non-finite and be blamed on the learning rate."""
    value = np.asarray(value, np.float32)
    if not np.isfinite(value).all():
        raise DataError(f"prompt init from {name}: {int((~np.isfinite(value)).sum())} values "
                        "are NaN or Inf; refusing a non-finite prompt")
    with np.errstate(over="ignore"):
        norm = np.sqrt(np.sum(np.square(value), dtype=np.float32))
    if not np.isfinite(norm):
        raise DataError(f"prompt init from {name}: values up to {float(np.abs(value).max()):.3g}"
                        "; the prompt's norm overflows float32, so training would be "
                        "non-finite from step 1 (expected values on the scale of the model's "
                        "embeddings)")

    def init(rng, shape, dtype=jnp.float32):
        del rng
        if tuple(value.shape) != tuple(shape):
            raise DataError(f"prompt init from {name}: shape {tuple(value.shape)} does not "
                             f"match the prompt shape {tuple(shape)}")
        return jnp.asarray(value, dtype)

    return init


def from_file(path: str) -> Initializer:
    """A `.npy` prompt (e.g. `numpy_checkpoints/checkpoint_<step>/prompt.prompt.npy`)."""
    path = os.fspath(path)
    return from_array(read_npy(path, "prompt init file"), name=path)


def from_peft(path: str) -> Initializer:
    """The `[n, e]` encoder prompt of a PEFT prompt-tuning or P-tuning adapter directory
    (`checkpoints/peft_adapter.py`); n must equal the prompt length (PROMPT_LENGTH)."""
    from ..checkpoints.peft_adapter import read_peft_adapter

    adapter = read_peft_adapter(path)
    init = from_array(adapter.prompt, name=f"PEFT adapter {adapter.path}")
    n = adapter.prompt.shape[0]

    def checked(rng, shape, dtype=jnp.float32):
        if len(shape) == 2 and shape[0] != n:
            raise DataError(f"PROMPT_LENGTH={shape[0]} conflicts with PEFT adapter "
                            f"{adapter.path}: num_virtual_tokens={n}; leave PROMPT_LENGTH "
                            f"unset (prompts/from_peft.gin reads it from the adapter) or set "
                            f"it to {n}")
        return init(rng, shape, dtype)

    return checked


def peft_prompt_length(path: str) -> int:
    """The prompt length of a PEFT adapter (its encoder prompt's rows: num_virtual_tokens),
    what prompts/from_peft.gin binds PROMPT_LENGTH to."""
    from ..checkpoints.peft_adapter import read_peft_adapter

    return int(read_peft_adapter(path).prompt.shape[0])


def from_text(embedding, token_ids: Sequence[int]) -> Initializer:
    """Embeddings of `token_ids`, tiled to fill the prompt length (truncated if longer)."""
    embedding = jnp.asarray(embedding, jnp.float32)
    token_ids = list(token_ids)
    if not token_ids:
        raise ValueError("from_text: the text tokenized to no ids")

    def init(rng, shape, dtype=jnp.float32):
        del rng
        _check_2d(shape, "from_text")
        reps = -(-shape[0] // len(token_ids))
        ids = (token_ids * reps)[: shape[0]]
        return embedding[jnp.asarray(ids)].astype(dtype)

    return init


def make_initializer(name: str, *, embedding=None, vocabulary=None,
                     label_strings: Optional[Sequence[str]] = None, path: Optional[str] = None,
                     text: Optional[str] = None, scale: float = 0.5,
                     population: int = 5000) -> Initializer:
    """Builds an initializer by name. Embedding-based ones need `embedding` `[V, e]`;
    `class_labels` and `from_text` also need a seqio `vocabulary`."""

    def need(value, what):
        if value is None:
            raise ValueError(f"prompt init {name!r} needs {what}")
        return value

    if name == "uniform":
        return uniform(scale)
    if name == "reference_uniform":
        return reference_uniform(scale)
    if name == "sampled_vocab":
        return sampled_vocab(need(embedding, "the embedding table"), population)
    if name == "class_labels":
        vocab = need(vocabulary, "a vocabulary")
        ids = [vocab.encode(s) for s in need(label_strings, "label strings")]
        return class_labels(need(embedding, "the embedding table"), ids, population)
    if name == "from_file":
        return from_file(need(path, "a .npy path"))
    if name == "from_peft":
        return from_peft(need(path, "a PEFT adapter directory"))
    if name == "from_text":
        vocab = need(vocabulary, "a vocabulary")
        return from_text(need(embedding, "the embedding table"), vocab.encode(need(text, "text")))
    raise ValueError(f"unknown prompt init {name!r}; expected one of uniform, reference_uniform, "
                     "sampled_vocab, class_labels, from_file, from_peft, from_text")
