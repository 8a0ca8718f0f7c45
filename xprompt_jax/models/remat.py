"""Activation rematerialisation of T5 layers: the `T5Config.remat_policy` names.

`remat_policy` picks what the backward pass keeps from each encoder/decoder layer's forward
pass (`nn.remat`, i.e. `jax.checkpoint`, around the layer; the layer keeps its T5X name
`layers_{i}`, so parameter trees and checkpoints are unchanged):

- `'none'` - no rematerialisation: every layer's activations are kept (fastest, most memory).
- `'full'` - nothing saved inside a layer (only its `[B, T, E]` input); the layer is
  recomputed in the backward pass (least memory, about one extra forward pass).
- `'dots_with_no_batch_dims_saveable'` (alias `'minimal'`, T5X/flaxformer's name) - keeps
  the outputs of matmuls without batch dimensions (the dense projections `[B, T, *]`),
  recomputes attention scores/softmax and elementwise ops.
- `'dots_saveable'` - keeps every matmul output, attention scores `[B, H, Q, K]` included.

Gradients are the same under every policy (tests/test_remat.py); only memory and time differ.
"""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax

_POLICIES = {
    "none": None,
    "full": None,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}

REMAT_POLICIES = tuple(_POLICIES)


def check_policy(name: str) -> str:
    if name not in _POLICIES:
        raise ValueError(f"T5Config.remat_policy={name!r}; expected one of {list(REMAT_POLICIES)}")
    return name


def checkpoint_policy(name: str) -> Optional[Callable]:
    """The `jax.checkpoint` policy function for `name` (None for 'full' and 'none')."""
    return _POLICIES[check_policy(name)]


def remat_layer(layer_cls, name: str, static_argnums):
    """`layer_cls` wrapped in `nn.remat` under policy `name` (unchanged for 'none').

    `static_argnums` counts `self` as argument 0 (flax's convention): the Python bools
    `deterministic` / `decode` must be static.
    """
    if check_policy(name) == "none":
        return layer_cls
    return nn.remat(layer_cls, policy=checkpoint_policy(name), prevent_cse=True,
                    static_argnums=tuple(static_argnums))
