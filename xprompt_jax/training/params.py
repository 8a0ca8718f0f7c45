"""Trainable / frozen split of a parameter tree by a regex over '/'-joined paths.

Only the trainable part is ever differentiated or given optimizer state (DESIGN item 2).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import traverse_util

DEFAULT_TRAINABLE_REGEX = r".*prompt.*"


def flatten(tree: Mapping[str, Any]) -> dict:
    """Nested dict -> {'a/b/c': leaf}."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def unflatten(flat: Mapping[str, Any]) -> dict:
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def split_params(params: Mapping[str, Any], trainable_regex: str = DEFAULT_TRAINABLE_REGEX
                 ) -> Tuple[dict, dict]:
    """Returns (trainable, frozen) nested dicts; a path is trainable if the regex fully
    matches it. Raises if nothing is trainable (almost always a wrong regex)."""
    pattern = re.compile(trainable_regex)
    flat = flatten(params)
    trainable = {k: v for k, v in flat.items() if pattern.fullmatch(k)}
    if not trainable:
        raise ValueError(f"TRAINABLE_REGEX {trainable_regex!r} matches no parameter; "
                         f"parameters look like {sorted(flat)[:5]}")
    frozen = {k: v for k, v in flat.items() if k not in trainable}
    return unflatten(trainable), unflatten(frozen) if frozen else {}


def merge_params(trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> dict:
    """Inverse of `split_params`."""
    flat = flatten(frozen) if frozen else {}
    for key, value in flatten(trainable).items():
        if key in flat:
            raise ValueError(f"parameter {key} is both trainable and frozen")
        flat[key] = value
    return unflatten(flat)


def cast_tree(tree: Any, dtype: Optional[Any]) -> Any:
    """Casts floating leaves to `dtype` (None: unchanged). Used for bf16 frozen weights."""
    if dtype is None:
        return tree
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
