"""`StagedMaskPrompt`: XPrompt's prompt when the whole method runs inside `t5x/train.py`
(gin/t5x/xprompt.gin): the prompt, its token and piece masks and XPrompt's stage record, all
as parameters, so that T5X checkpoints them with the prompt and `t5x/eval.py` /
`t5x/infer.py` read the masks from the checkpoint (T5X's `EncoderDecoderModel` applies only
the `params` collection).

Params (all under `prompt/`):
- `prompt` `[m, e]`: the trained prompt (the only parameter the optimizer updates:
  TRAINABLE_REGEX 'prompt/prompt');
- `token_mask` gamma `[m]` and `piece_mask` zeta `[m, k]`: ones during stage 1 (plain
  prompt tuning); the searched masks from the stage boundary on. Used under
  `stop_gradient` (constants to the optimizer);
- `stage1_best` `[m, e]`: the best stage-1 prompt by the dev metric (what the rewind
  restarts from);
- `stage` (0: not started, 1: stage 1, 2: retraining with fixed masks), `first_step` (the
  step stage 1 started at), `best_step`, `best_metric` (of `stage1_best`): scalars.

    masked prompt = P * gamma[:, None] * repeat(zeta, e/k, axis=-1)

Importance scoring and the search (scoring.py, search.py) pass masks in the
`prompt_masks` collection, as for `MaskedSoftPrompt` (per example `[B, m]`, `[B, m, k]`):
there they replace the stored masks.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from ..prompts import initializers
from ..prompts.soft_prompt import PROMPT_AXES
from .masked_prompt import MASKS, TOKEN_PRUNE_MODES, apply_masks

STAGE_NOT_STARTED, STAGE1, STAGE_RETRAIN = 0, 1, 2
RECORD_PARAMS = ("stage", "first_step", "best_step", "best_metric")
MASK_PARAMS = ("token_mask", "piece_mask")
NO_METRIC = -1e30  # best_metric before the first evaluation


def _constant(value: float):
    return lambda rng, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


class StagedMaskPrompt(nn.Module):
    """Soft prompt `[length, e]` with masks and stage record as params (module doc)."""

    length: int = 20
    init: Callable = initializers.uniform()
    num_pieces: int = 16
    token_prune_mode: str = "zero"

    def _check(self, embed_dim: int) -> None:
        if self.token_prune_mode not in TOKEN_PRUNE_MODES:
            raise ValueError(f"token_prune_mode={self.token_prune_mode!r}; expected one of "
                             f"{TOKEN_PRUNE_MODES}")
        if embed_dim % self.num_pieces:
            raise ValueError(f"XPrompt pieces: embedding size {embed_dim} is not divisible by "
                             f"num_pieces k={self.num_pieces} (NUM_PIECES)")

    def _stored_masks(self):
        token = nn_partitioning.param_with_axes("token_mask", _constant(1.0), (self.length,),
                                                jnp.float32, axes=("prompt",))
        piece = nn_partitioning.param_with_axes(
            "piece_mask", _constant(1.0), (self.length, self.num_pieces), jnp.float32,
            axes=("prompt", "prompt_pieces"))
        return jax.lax.stop_gradient(token), jax.lax.stop_gradient(piece)

    @nn.compact
    def __call__(self, embedded: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, E]` -> masked prompt `[m, E]` (or `[B, m, E]` with per-example masks)."""
        embed_dim = embedded.shape[-1]
        self._check(embed_dim)
        prompt = nn_partitioning.param_with_axes("prompt", self.init, (self.length, embed_dim),
                                                 jnp.float32, axes=PROMPT_AXES)
        gamma, zeta = self._stored_masks()
        nn_partitioning.param_with_axes("stage1_best", _constant(0.0),
                                        (self.length, embed_dim), jnp.float32,
                                        axes=PROMPT_AXES)
        for name in RECORD_PARAMS:
            nn_partitioning.param_with_axes(
                name, _constant(NO_METRIC if name == "best_metric" else
                                -1.0 if name.endswith("step") else 0.0), (), jnp.float32,
                axes=())
        if self.has_variable(MASKS, "token_mask"):  # scoring / search candidates
            gamma = self.get_variable(MASKS, "token_mask")
            zeta = self.get_variable(MASKS, "piece_mask")
        return apply_masks(prompt, gamma, zeta, self.num_pieces)

    def position_mask(self, batch_size: int) -> jnp.ndarray:
        """`[B, m]` bool: False for pruned tokens (mode 'remove'); all True for 'zero'."""
        if self.token_prune_mode == "zero":
            return jnp.ones((batch_size, self.length), bool)
        gamma = self.get_variable(MASKS, "token_mask")
        if gamma is None:
            gamma = self.get_variable("params", "token_mask")
        if gamma is None:
            gamma = jnp.ones((self.length,), jnp.float32)
        return jnp.broadcast_to(gamma > 0, (batch_size, self.length))
