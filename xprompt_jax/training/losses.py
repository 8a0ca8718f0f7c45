"""Cross-entropy losses with T5X semantics (z-loss, label smoothing, loss weights).

Shapes: `logits` `[B, T, V]` (cast to float32 here), `targets` int `[B, T]`, `weights`
`[B, T]` float with 0 on padding (the batch's `decoder_loss_weights`).

- `cross_entropy_with_logits`: T5X's per-token loss with z-loss (plain autodiff; T5X's
  custom VJP gives the same gradient of the first output).
- `compute_weighted_cross_entropy`: T5X's `losses.compute_weighted_cross_entropy`
  (sum of weighted per-token losses, label-smoothing normalising constant subtracted).
- `normalized_cross_entropy` / `token_mean_loss`: the training loss with a normalisation
  (`'mean_tokens'` by default = loss per real target token = Hugging Face's mean over
  non-ignored labels; `'sum'` = T5X's default; `'mean_examples'` = T5X's
  `AVERAGE_PER_SEQUENCE`; or a float = T5X's `loss_normalizing_factor`).
- `per_example_loss`: `[B]` losses, used by XPrompt importance scoring.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
LossNormalization = Union[str, float, int, None]

NORMALIZATIONS = ("mean_tokens", "sum", "mean_examples", "mean_total_tokens")

# T5X's `SpecialLossNormalizingFactor` names, accepted as aliases.
_T5X_NAMES = {
    "num_real_target_tokens": "mean_tokens",
    "num_total_target_tokens": "mean_total_tokens",
    "average_per_sequence": "mean_examples",
}


def cross_entropy_with_logits(logits: Array, targets_onehot: Array,
                              z_loss: float = 0.0) -> Tuple[Array, Array]:
    """Per-token cross entropy with T5X's auxiliary z-loss.

    `loss = -sum(targets * log_softmax(logits)) + z_loss * log_z**2` with
    `log_z = logsumexp(logits)` (`= log_z - sum(targets * logits)` for targets summing to 1).
    Returns `(loss, z_loss_term)`, both `[B, T]`; the z-loss term is already included in
    `loss` and is returned separately for logging.
    """
    logits = jnp.asarray(logits, jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_softmax = logits - log_z[..., None]
    loss = -jnp.sum(targets_onehot * log_softmax, axis=-1)
    total_z_loss = z_loss * jnp.square(log_z)
    return loss + total_z_loss, total_z_loss


def _smoothing(label_smoothing: float, vocab_size: int) -> Tuple[float, float, float]:
    """(confidence, low_confidence, normalizing_constant) exactly as T5X computes them."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    confidence = 1.0 - label_smoothing
    low_confidence = (1.0 - confidence) / (vocab_size - 1)
    normalizing_constant = -(confidence * math.log(confidence) +
                             (vocab_size - 1) * low_confidence * math.log(low_confidence + 1e-20))
    return confidence, low_confidence, normalizing_constant


def _token_losses(logits: Array, targets: Array, label_smoothing: float,
                  z_loss: float) -> Tuple[Array, Array]:
    """Unweighted per-token `(loss, z_loss_term)` `[B, T]`, smoothing constant subtracted.

    Equal to `cross_entropy_with_logits(logits, onehot(targets, on=confidence,
    off=low_confidence), z_loss)` minus T5X's normalizing constant, computed with a gather
    instead of a `[B, T, V]` one-hot.
    """
    if logits.ndim != targets.ndim + 1:
        raise ValueError(f"Incorrect shapes. Got shape {logits.shape} logits and "
                         f"{targets.shape} targets")
    logits = jnp.asarray(logits, jnp.float32)
    vocab_size = logits.shape[-1]
    confidence, low_confidence, normalizing_constant = _smoothing(label_smoothing, vocab_size)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32),
                                       axis=-1)[..., 0]
    # sum(soft_targets * logits) with soft targets summing to 1.
    soft_logit = confidence * target_logit
    if low_confidence:
        soft_logit = soft_logit + low_confidence * (jnp.sum(logits, axis=-1) - target_logit)
    total_z_loss = z_loss * jnp.square(log_z)
    loss = log_z - soft_logit + total_z_loss - normalizing_constant
    return loss, total_z_loss


def compute_weighted_cross_entropy(logits: Array,
                                   targets: Array,
                                   weights: Optional[Array] = None,
                                   label_smoothing: float = 0.0,
                                   z_loss: float = 0.0,
                                   loss_normalizing_factor: Optional[float] = None
                                   ) -> Tuple[Array, Array, Array]:
    """T5X's `compute_weighted_cross_entropy`: `(total_loss, total_z_loss, weight_sum)`.

    Label smoothing: soft targets `confidence = 1 - label_smoothing` on the target and
    `label_smoothing / (V - 1)` elsewhere; the constant
    `-(confidence * log(confidence) + (V - 1) * low * log(low + 1e-20))` (the entropy of the
    soft targets) is subtracted, so a perfect prediction of the soft targets gives 0.
    `total_loss` (which includes the z-loss) and `total_z_loss` are sums of the weighted
    per-token values, divided by `loss_normalizing_factor` if given. `weight_sum` is
    `sum(weights)`, or `B * T` without weights.
    """
    loss, zl = _token_losses(logits, targets, label_smoothing, z_loss)
    weight_sum = np.prod(targets.shape)
    if weights is not None:
        weights = jnp.asarray(weights, jnp.float32)
        loss = loss * weights
        zl = zl * weights
        weight_sum = jnp.sum(weights)
    if loss_normalizing_factor is not None:
        loss = loss / loss_normalizing_factor
        zl = zl / loss_normalizing_factor
    return jnp.sum(loss), jnp.sum(zl), jnp.asarray(weight_sum, jnp.float32)


def _default_weights(targets: Array, weights: Optional[Array]) -> Array:
    # T5X: without `decoder_loss_weights`, non-padding (id > 0) target tokens carry the loss.
    if weights is None:
        return jnp.asarray(targets > 0, jnp.float32)
    return jnp.asarray(weights, jnp.float32)


def _safe_div(x: Array, d: Array) -> Array:
    return x / jnp.where(d > 0, d, 1.0)


def per_example_loss(logits: Array,
                     targets: Array,
                     weights: Optional[Array] = None,
                     label_smoothing: float = 0.0,
                     z_loss: float = 0.0,
                     normalize: str = "mean_per_example") -> Array:
    """Per-example loss `[B]`.

    `normalize='mean_per_example'`: weighted sum over the example's tokens divided by its
    weight sum (0 for an example without target tokens); `'sum'`: the weighted sum.
    `weights=None` means `targets > 0` (T5X's padding convention).
    """
    if normalize not in ("mean_per_example", "sum"):
        raise ValueError(f"normalize must be 'mean_per_example' or 'sum', got {normalize!r}")
    weights = _default_weights(targets, weights)
    loss, _ = _token_losses(logits, targets, label_smoothing, z_loss)
    total = jnp.sum(loss * weights, axis=-1)
    if normalize == "sum":
        return total
    return _safe_div(total, jnp.sum(weights, axis=-1))


def _canonical_normalization(loss_normalization: LossNormalization) -> Union[str, float]:
    if loss_normalization is None:
        return "sum"
    if isinstance(loss_normalization, str):
        name = loss_normalization.lower()
        name = _T5X_NAMES.get(name, name)
        if name not in NORMALIZATIONS:
            raise ValueError(f"loss_normalization must be one of {NORMALIZATIONS}, a T5X "
                             f"SpecialLossNormalizingFactor name or a number, got "
                             f"{loss_normalization!r}")
        return name
    factor = float(loss_normalization)
    if not factor > 0:
        raise ValueError(f"a numeric loss_normalization must be > 0, got {factor}")
    return factor


def normalized_cross_entropy(logits: Array,
                             targets: Array,
                             weights: Optional[Array] = None,
                             label_smoothing: float = 0.0,
                             z_loss: float = 0.0,
                             loss_normalization: LossNormalization = "mean_tokens"
                             ) -> Tuple[Array, Array, Array]:
    """Weighted cross entropy with a normalisation: `(loss, z_loss, weight_sum)`.

    `loss` includes the z-loss term, as in T5X. `weight_sum` is the sum of the token
    weights (for metrics). `weights=None` means `targets > 0`. `loss_normalization`:

    - `'mean_tokens'` (T5X `NUM_REAL_TARGET_TOKENS`): divide by `sum(weights)` - the mean
      over real target tokens, Hugging Face's `CrossEntropyLoss(ignore_index=-100)` mean.
    - `'sum'` or `None`: no normalisation (T5X's default `loss_normalizing_factor=None`).
    - `'mean_examples'` (T5X `AVERAGE_PER_SEQUENCE`): each example's weights are divided by
      its weight sum, then the total is divided by the number of examples with targets -
      the mean over examples of each example's token mean.
    - `'mean_total_tokens'` (T5X `NUM_TOTAL_TARGET_TOKENS`): divide by `B * T`.
    - a number: divide by it (T5X's numeric `loss_normalizing_factor`).

    A zero divisor (no target tokens) is replaced by 1, so the loss is 0, not NaN.
    """
    norm = _canonical_normalization(loss_normalization)
    weights = _default_weights(targets, weights)
    loss, zl = _token_losses(logits, targets, label_smoothing, z_loss)
    weight_sum = jnp.sum(weights)
    if norm == "mean_examples":
        eff = _safe_div(weights, jnp.sum(weights, axis=-1, keepdims=True))
        divisor = jnp.sum(eff)
    else:
        eff = weights
        if norm == "mean_tokens":
            divisor = weight_sum
        elif norm == "mean_total_tokens":
            divisor = jnp.asarray(float(np.prod(targets.shape)), jnp.float32)
        elif norm == "sum":
            divisor = jnp.asarray(1.0, jnp.float32)
        else:
            divisor = jnp.asarray(norm, jnp.float32)
    total = _safe_div(jnp.sum(loss * eff), divisor)
    total_z = _safe_div(jnp.sum(zl * eff), divisor)
    return total, total_z, weight_sum


def token_mean_loss(logits: Array,
                    targets: Array,
                    weights: Optional[Array] = None,
                    label_smoothing: float = 0.0,
                    z_loss: float = 0.0,
                    loss_normalization: LossNormalization = "mean_tokens") -> Array:
    """The scalar training loss: `normalized_cross_entropy(...)[0]`.

    By default the total weighted loss divided by the number of target tokens
    (`sum(weights)`); see `normalized_cross_entropy` for the other normalisations.
    """
    return normalized_cross_entropy(logits, targets, weights, label_smoothing, z_loss,
                                    loss_normalization)[0]
