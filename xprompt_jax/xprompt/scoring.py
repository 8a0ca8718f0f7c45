"""Importance scores over mask variables: I = E_x |dL(x) / d mask| (XPrompt eq. 4-5).

Per example (default, Michel et al.): the token mask `[m]` and piece mask `[m, k]` are
broadcast to `[B, m]` / `[B, m, k]`; the loss is the *sum* of per-example losses, so the
gradient with respect to row b of the broadcast mask is exactly dL(x_b)/dmask, and one
backward pass per batch yields every example's gradient. `per_example=False` takes the
absolute value of the batch-mean gradient instead (the only public third-party code's
choice). L(x) is the example's mean target-token cross-entropy (no dropout).

Cost and reuse: one scoring of N examples is one forward and backward pass per batch of
the frozen model, about N / batch_size train steps (no optimizer update). `ScoreBatches`
draws the N examples once and every rescoring of the XPrompt search reuses them (numpy
batches cut to their longest input / target, `data.trim_batch`): no new input pipeline
per pruning step, the same examples for every step, compiled shapes reused. Exactly
`num_examples` examples count: rows of the last batch beyond them get zero loss weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..training import data as data_lib
from ..training import losses
from ..training.params import merge_params
from .masked_prompt import MASKS


@dataclasses.dataclass
class ImportanceScores:
    """Mean |gradient| per token `[m]` and per piece `[m, k]` over `num_examples`."""

    token: np.ndarray
    piece: np.ndarray
    num_examples: int
    per_example: bool

    def to_json(self) -> Dict[str, Any]:
        return {"token": self.token.tolist(), "piece": self.piece.tolist(),
                "num_examples": self.num_examples, "per_example": self.per_example}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ImportanceScores":
        return cls(np.asarray(data["token"], np.float64), np.asarray(data["piece"], np.float64),
                   int(data["num_examples"]), bool(data["per_example"]))


def mask_variables(token_mask, piece_mask) -> Dict[str, Any]:
    """The `prompt_masks` collection for a PromptedT5 whose prompt child is `prompt`."""
    return {"prompt": {"token_mask": token_mask, "piece_mask": piece_mask}}


def _example_losses(model, variables, batch) -> jnp.ndarray:
    logits = model.apply(variables, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"], enable_dropout=False)
    weights = batch.get("decoder_loss_weights")
    if weights is None:
        weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
    return losses.per_example_loss(logits, batch["decoder_target_tokens"], weights,
                                   normalize="mean_per_example")


def make_mask_gradient_fn(model, per_example: bool = True):
    """`fn(trainable, frozen, token_mask [m], piece_mask [m,k], batch) ->
    (sum_b |dL_b/dgamma| [m], sum_b |dL_b/dzeta| [m, k], n)` over the n rows of the batch
    that have target tokens (rows with all-zero `decoder_loss_weights` do not count); with
    per_example=False the sums are n * |d mean_b L_b / d mask| (so dividing by the example
    count is uniform)."""

    def fn(trainable, frozen, token_mask, piece_mask, batch):
        batch_size = batch["decoder_target_tokens"].shape[0]
        weights = batch.get("decoder_loss_weights")
        if weights is None:
            weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
        count = jnp.sum(jnp.any(weights > 0, axis=-1).astype(jnp.float32))
        base = dict(frozen)
        base["params"] = merge_params(trainable, frozen.get("params", {}))

        def total_loss(gamma, zeta):
            variables = dict(base)
            variables[MASKS] = mask_variables(gamma, zeta)
            per_ex = _example_losses(model, variables, batch)  # 0 for rows without weights
            return jnp.sum(per_ex) if per_example else jnp.sum(per_ex) / jnp.maximum(count, 1)

        if per_example:
            gamma = jnp.broadcast_to(token_mask, (batch_size,) + token_mask.shape)
            zeta = jnp.broadcast_to(piece_mask, (batch_size,) + piece_mask.shape)
            g_gamma, g_zeta = jax.grad(total_loss, argnums=(0, 1))(gamma, zeta)
            return (jnp.sum(jnp.abs(g_gamma), axis=0), jnp.sum(jnp.abs(g_zeta), axis=0),
                    count)
        g_gamma, g_zeta = jax.grad(total_loss, argnums=(0, 1))(token_mask, piece_mask)
        return jnp.abs(g_gamma) * count, jnp.abs(g_zeta) * count, count

    return fn


Batch = Mapping[str, np.ndarray]


class ScoreBatches:
    """The examples importance scoring runs over, drawn once from `make_iterator()` (a
    factory of host-local batch iterators, e.g. `TrainBatchIterator`) and reused by every
    `ImportanceScorer.score` call that gets this object.

    `take(n)` returns the first n examples as numpy batches (drawing more on first need;
    in a run of P processes each process takes n / P rows of its own shard, so that the
    global batches hold exactly n examples, as in one process):
    each cut to its longest input / target (`data.trim_batch`, when `trim`; default: in
    single-process runs, where no other host's shard must have the same shape), the rows of
    the last batch beyond n with zero loss weights (they do not count)."""

    def __init__(self, make_iterator: Callable[[], Iterator[Batch]],
                 trim: Optional[bool] = None):
        self._make_iterator = make_iterator
        self._iterator = None
        self.trim = jax.process_count() == 1 if trim is None else trim
        self._raw: List[Dict[str, np.ndarray]] = []
        self._rows = 0
        self._taken: Dict[int, List[Dict[str, np.ndarray]]] = {}

    def take(self, num_examples: int) -> List[Dict[str, np.ndarray]]:
        if num_examples <= 0:
            raise ValueError(f"importance scoring needs num_examples > 0, got {num_examples}")
        if num_examples in self._taken:
            return self._taken[num_examples]
        total, processes = num_examples, jax.process_count()
        if total % processes:
            raise ValueError(f"importance scoring over {total} examples in {processes} "
                             f"processes: NUM_SCORE_EXAMPLES must be a multiple of the "
                             f"process count")
        num_examples = total // processes  # this process's rows
        while self._rows < num_examples:
            if self._iterator is None:
                self._iterator = iter(self._make_iterator())
            try:
                batch = {k: np.asarray(v) for k, v in next(self._iterator).items()}
            except StopIteration:
                raise ValueError(f"importance scoring asked for {num_examples} examples; the "
                                 f"batches ran out after {self._rows}") from None
            self._raw.append(batch)
            self._rows += batch["decoder_target_tokens"].shape[0]
        out, rows = [], 0
        for batch in self._raw:
            if rows >= num_examples:
                break
            size = batch["decoder_target_tokens"].shape[0]
            batch = dict(batch)
            if rows + size > num_examples:  # only the examples asked for count
                weights = batch.get("decoder_loss_weights")
                if weights is None:
                    weights = (batch["decoder_target_tokens"] > 0).astype(np.float32)
                weights = np.array(weights, np.float32)
                weights[num_examples - rows:] = 0.0
                batch["decoder_loss_weights"] = weights
            out.append(data_lib.trim_batch(batch) if self.trim else batch)
            rows += size
        self._taken[total] = out
        return out


class ImportanceScorer:
    """Accumulates importance over batches with a jitted, sharded gradient function."""

    def __init__(self, model, trainable, frozen: Mapping[str, Any], batch_sharding=None,
                 per_example: bool = True):
        self.per_example = per_example
        self.trainable = trainable
        self.frozen = {k: v for k, v in frozen.items() if k != MASKS}
        fn = make_mask_gradient_fn(model, per_example)
        self._fn = jax.jit(fn, static_argnums=())
        self.batch_sharding = batch_sharding

    def score(self, token_mask, piece_mask,
              batches: Union[ScoreBatches, Iterator[Mapping[str, np.ndarray]]],
              num_examples: int, bar=None) -> ImportanceScores:
        """Mean importance over exactly `num_examples` examples of `batches` (a
        `ScoreBatches`, reused, or an iterator of batches, read once); `bar` (a tqdm bar or
        None) advances by the examples seen."""
        if not isinstance(batches, ScoreBatches):
            iterator = batches
            batches = ScoreBatches(lambda: iterator)
        token_sum, piece_sum, seen = 0.0, 0.0, 0
        token_mask = jnp.asarray(token_mask, jnp.float32)
        piece_mask = jnp.asarray(piece_mask, jnp.float32)
        for batch in batches.take(num_examples):
            if self.batch_sharding is not None:
                batch = {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
                         for k, v in batch.items()}
            g_token, g_piece, count = self._fn(self.trainable, self.frozen, token_mask,
                                               piece_mask, batch)
            token_sum = token_sum + np.asarray(g_token, np.float64)
            piece_sum = piece_sum + np.asarray(g_piece, np.float64)
            seen += int(count)
            if bar is not None:
                bar.update(int(count))
        return ImportanceScores(np.asarray(token_sum) / seen, np.asarray(piece_sum) / seen, seen,
                                self.per_example)
