"""Optimizer builders (optax): T5X-style Adafactor with Lester et al.'s defaults, AdamW, SGD.

Every builder is a plain function with keyword arguments, so gin files configure it with
dynamic registration::

    from __gin__ import dynamic_registration
    from xprompt_jax.training import optimizers
    from xprompt_jax.training import schedules
    OPTIMIZER = @optimizers.adafactor()
    optimizers.adafactor.learning_rate = 0.3
    # or a schedule:
    # optimizers.adafactor.learning_rate = @schedules.warmup_then_decay()

`learning_rate` is a float or an optax schedule (`step -> lr`, see `schedules.py`).

The caller passes only the *trainable* subtree to `init` (DESIGN.md, decision 2), so the
optimizer state holds slots for trainable leaves only; nothing here ever sees the frozen
model.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

ScalarOrSchedule = Union[float, Callable[[Any], Any]]

__all__ = ["adafactor", "adamw", "sgd", "with_gradient_clipping", "create", "OPTIMIZERS",
           "BuiltOptimizer"]


class BuiltOptimizer(optax.GradientTransformation):
    """An optax transformation that remembers how it was built: `builder` (the plain
    builder function below) and `arguments` (every argument, gin's bindings included), so
    a sweep can rebuild it with other hyperparameters (`training/sweep.py`). Behaves as
    the `GradientTransformation` it wraps."""

    builder: Callable[..., optax.GradientTransformation]
    arguments: dict


def _rebuildable(builder):
    """Makes `builder` return a `BuiltOptimizer` (same init / update)."""
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def build(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        tx = builder(**bound.arguments)
        out = BuiltOptimizer(tx.init, tx.update)
        out.builder, out.arguments = builder, dict(bound.arguments)
        return out

    return build


# --------------------------------------------------------------------------------------
# Small transformations used to follow T5X's Adafactor where optax has no exact match.
# --------------------------------------------------------------------------------------

def _in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Run `inner` on float32 copies of grads and params (T5X keeps Adafactor state in f32).

    optax's factored-RMS state takes the parameter dtype; T5X casts the gradient to float32
    and stores `v`, `v_row`, `v_col` in float32 whatever the parameter dtype. The returned
    updates are float32; `optax.apply_updates` casts the new parameters back to their dtype.
    """

    def cast(tree):
        return jax.tree.map(
            lambda x: x.astype(jnp.float32)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def init_fn(params):
        return inner.init(cast(params))

    def update_fn(updates, state, params=None):
        return inner.update(cast(updates), state, None if params is None else cast(params))

    return optax.GradientTransformation(init_fn, update_fn)


def _scale_by_param_rms(epsilon2: float = 1e-3,
                        max_parameter_scale: Optional[float] = None
                        ) -> optax.GradientTransformation:
    """Multiply each leaf's update by `clip(rms(param), epsilon2, max_parameter_scale)` (T5X)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("multiply_by_parameter_scale needs params")

        def scale(u, p):
            s = jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(p))), epsilon2)
            if max_parameter_scale is not None:
                s = jnp.minimum(s, max_parameter_scale)
            return u * s

        return jax.tree.map(scale, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


class _CountState(NamedTuple):
    count: jax.Array


def _t5x_weight_decay(weight_decay_rate: Optional[ScalarOrSchedule],
                      learning_rate: ScalarOrSchedule,
                      lr_exponent: Optional[float],
                      mask: Any = None) -> Optional[optax.GradientTransformation]:
    """Adds `rate * param` to the (positive) update, i.e. `new = (1 - rate) * param - step`.

    Without `lr_exponent` this is `optax.add_decayed_weights(weight_decay_rate)`; with it the
    rate is `weight_decay_rate * lr_t ** lr_exponent` (`weight_decay_rate=None` counts as
    1.0), with `lr_t` the learning rate of the current step, as T5X's
    `weight_decay_rate_lr_exponent`.
    """
    if not lr_exponent:  # T5X tests truthiness: None and 0 disable the lr factor.
        if weight_decay_rate is None:
            return None
        return optax.add_decayed_weights(weight_decay_rate, mask=mask)

    def init_fn(params):
        del params
        return _CountState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs params")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        if weight_decay_rate is None:
            base_rate = 1.0
        elif callable(weight_decay_rate):
            base_rate = weight_decay_rate(state.count)
        else:
            base_rate = weight_decay_rate
        rate = base_rate * jnp.asarray(lr, jnp.float32) ** lr_exponent
        updates = jax.tree.map(lambda u, p: u + (rate * p).astype(u.dtype), updates, params)
        return updates, _CountState(count=optax.safe_increment(state.count))

    tx = optax.GradientTransformation(init_fn, update_fn)
    return optax.masked(tx, mask) if mask is not None else tx


def _skip_nan_updates(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """T5X's `skip_nan_updates`: where an update (or a state entry) is NaN, keep the old value.

    Element-wise, as T5X: NaN entries of the update become 0 (the parameter keeps its value)
    and NaN entries of float state leaves keep their previous value.
    """

    def update_fn(updates, state, params=None):
        new_updates, new_state = inner.update(updates, state, params)
        new_updates = jax.tree.map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u),
                                   new_updates)

        def keep(new, old):
            if (hasattr(new, "dtype") and jnp.issubdtype(new.dtype, jnp.floating)
                    and getattr(old, "shape", None) == new.shape):
                return jnp.where(jnp.isnan(new), old, new)
            return new

        new_state = jax.tree.map(keep, new_state, state)
        return new_updates, new_state

    return optax.GradientTransformation(inner.init, update_fn)


# --------------------------------------------------------------------------------------
# Adafactor
# --------------------------------------------------------------------------------------

@_rebuildable
def adafactor(learning_rate: ScalarOrSchedule = 0.3,
              decay_rate: float = 0.8,
              step_offset: int = 0,
              multiply_by_parameter_scale: bool = False,
              weight_decay_rate: Optional[ScalarOrSchedule] = 1e-5,
              clipping_threshold: Optional[float] = 1.0,
              min_dim_size_to_factor: int = 128,
              momentum: Optional[float] = None,
              dtype_momentum: Any = jnp.float32,
              epsilon1: float = 1e-30,
              epsilon2: float = 1e-3,
              factored: bool = True,
              weight_decay_rate_lr_exponent: Optional[float] = None,
              global_norm_clip_threshold: Optional[float] = None,
              max_parameter_scale: Optional[float] = None,
              skip_nan_updates: bool = False,
              weight_decay_mask: Any = None,
              beta1: Optional[float] = None) -> optax.GradientTransformation:
    """Adafactor following T5X's `t5x.adafactor.Adafactor`, with Lester et al.'s defaults.

    Defaults are the prompt-tuning recipe (google-research/prompt-tuning
    `configs/models/t5_1_1_prompt.gin` + `runs/prompt_finetune.gin`): constant learning
    rate 0.3, `decay_rate=0.8`, `step_offset=0`, `multiply_by_parameter_scale=False`,
    `weight_decay_rate=1e-5`, `clipping_threshold=1.0`, no momentum. (T5X's own class
    defaults differ: `multiply_by_parameter_scale=True`, `weight_decay_rate=None`.)

    Update rule for one leaf `p` with gradient `g`, at step `s = 0, 1, ...` (T5X's
    `apply_param_gradient`; the optax chain below performs exactly these operations):

    0. optional (`global_norm_clip_threshold`): `g *= min(1, thr / global_norm(grads))`.
    1. `beta2 = 1 - (s - step_offset + 1) ** -decay_rate` (`decay_rate` is an exponent: 0 at
       the first step, so the first step uses `g**2` alone); `G = g**2 + epsilon1`.
    2. second moment: if `factored` and the second-largest dim of `p` is
       `>= min_dim_size_to_factor`, factor over the two largest dims `(r, c)`:
       `v_row = beta2 * v_row + (1 - beta2) * mean_c(G)`, `v_col = ... mean_r(G)`,
       `u = g / sqrt(outer(v_row / mean(v_row), v_col))`; else
       `v = beta2 * v + (1 - beta2) * G`, `u = g / sqrt(v)`.
    3. update clipping (`clipping_threshold`): `u /= max(1, rms(u) / clipping_threshold)`,
       rms over the whole leaf.
    4. `step = lr_s * u`, times `clip(rms(p), epsilon2, max_parameter_scale)` if
       `multiply_by_parameter_scale`.
    5. momentum (`momentum`, T5X's `beta1`): `m = beta1 * m + (1 - beta1) * step`
       (no bias correction), `step = m`; `m` stored in `dtype_momentum`.
    6. weight decay: **`p_new = (1 - weight_decay_rate) * p - step`**. The decay is *not*
       multiplied by the learning rate (unlike AdamW / `torch.optim.AdamW`, where it is
       `lr * wd * p`), is applied to the parameter before this step's update, and bypasses
       clipping and momentum. With the defaults every step shrinks the prompt by a factor
       `1 - 1e-5`. With `weight_decay_rate_lr_exponent=e` (T5X option) the rate becomes
       `weight_decay_rate * lr_s ** e` (`weight_decay_rate=None` counts as 1.0, as in T5X;
       deviation: an explicit `weight_decay_rate=0.0` stays 0, where T5X's `(rate or 1.0)`
       would turn it into 1.0). `weight_decay_mask` (optax-style mask) limits the decay to
       some leaves; T5X decays every optimized leaf.

    Supported T5X options: `learning_rate` (float or schedule), `factored`,
    `multiply_by_parameter_scale` (bool only, not T5X's `HParamMap`), `beta1`/`momentum`,
    `decay_rate`, `step_offset`, `clipping_threshold`, `weight_decay_rate`,
    `min_dim_size_to_factor`, `epsilon1`, `epsilon2`, `dtype_momentum`,
    `weight_decay_rate_lr_exponent`, `global_norm_clip_threshold`, `max_parameter_scale`,
    `skip_nan_updates`. State is float32 whatever the parameter dtype (as T5X).

    Not supported: `factor_map` / `logical_factor_rules`. For leaves of rank <= 2 (prompts
    `[m, e]`, MLP/LSTM weights of reparameterized prompts) T5X ignores those rules and uses
    the same heuristic as here, so results agree. For rank > 2 leaves T5X needs an explicit
    rule; here they are factored over their two largest dims with rms taken over the whole
    leaf (optax's heuristic) - pass `factored=False` to avoid factoring them.

    Built from optax components (`scale_by_factored_rms`, `clip_by_block_rms`,
    `scale_by_learning_rate`, `ema`, `add_decayed_weights`) whose order matches T5X; the
    T5X-only options are small custom transformations in this module.
    """
    if learning_rate is None:
        raise ValueError("adafactor needs a learning_rate (float or schedule)")
    if beta1 is not None:
        if momentum is not None and momentum != beta1:
            raise ValueError("give either momentum or its T5X name beta1, not both")
        momentum = beta1
    if clipping_threshold is not None and clipping_threshold < 1.0:
        raise ValueError(f"clipping_threshold must be >= 1 or None, got {clipping_threshold}")

    txs = []
    if global_norm_clip_threshold:
        txs.append(optax.clip_by_global_norm(global_norm_clip_threshold))
    txs.append(optax.scale_by_factored_rms(
        factored=factored, decay_rate=decay_rate, step_offset=step_offset,
        min_dim_size_to_factor=min_dim_size_to_factor, epsilon=epsilon1))
    if clipping_threshold is not None:
        txs.append(optax.clip_by_block_rms(clipping_threshold))
    txs.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        txs.append(_scale_by_param_rms(epsilon2, max_parameter_scale))
    if momentum is not None:
        txs.append(optax.ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    decay = _t5x_weight_decay(weight_decay_rate, learning_rate, weight_decay_rate_lr_exponent,
                              weight_decay_mask)
    if decay is not None:
        txs.append(decay)
    txs.append(optax.scale(-1.0))
    tx = optax.chain(*txs)
    if skip_nan_updates:
        tx = _skip_nan_updates(tx)
    return _in_float32(tx)


# --------------------------------------------------------------------------------------
# AdamW, SGD, clipping
# --------------------------------------------------------------------------------------

def with_gradient_clipping(tx: optax.GradientTransformation,
                           max_grad_norm: Optional[float] = None
                           ) -> optax.GradientTransformation:
    """`optax.chain(clip_by_global_norm(max_grad_norm), tx)`; `tx` itself when None or 0.

    Clips the raw gradients by their global L2 norm over the trainable tree, as
    `torch.nn.utils.clip_grad_norm_` before `optimizer.step()` in Hugging Face's Trainer.
    """
    if not max_grad_norm:
        return tx
    if max_grad_norm < 0:
        raise ValueError(f"max_grad_norm must be positive, got {max_grad_norm}")
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)


@_rebuildable
def adamw(learning_rate: ScalarOrSchedule = 0.3,
          b1: float = 0.9,
          b2: float = 0.999,
          eps: float = 1e-8,
          weight_decay: float = 0.01,
          max_grad_norm: Optional[float] = None,
          weight_decay_mask: Any = None,
          mu_dtype: Any = None) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay), as `torch.optim.AdamW` / `optax.adamw`.

    Per step: `m, v` Adam moments with bias correction, and
    `p_new = p - lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)`, i.e. the decay is
    scaled by the learning rate (torch: `p *= 1 - lr * weight_decay`). `weight_decay=0.01`
    as in the EPT paper (and torch's default). `max_grad_norm` clips the gradients by global
    norm first (see `with_gradient_clipping`). The default learning rate 0.3 is the usual
    soft-prompt rate; set the value of the paper being reproduced.
    """
    tx = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     mask=weight_decay_mask, mu_dtype=mu_dtype)
    return with_gradient_clipping(tx, max_grad_norm)


@_rebuildable
def sgd(learning_rate: ScalarOrSchedule = 0.3,
        momentum: Optional[float] = None,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        max_grad_norm: Optional[float] = None) -> optax.GradientTransformation:
    """SGD with optional (Nesterov) momentum, as `optax.sgd` / `torch.optim.SGD`.

    `weight_decay` is coupled L2 as in `torch.optim.SGD` (adds `weight_decay * p` to the
    gradient before momentum). `max_grad_norm` clips the raw gradients by global norm first.
    """
    tx = optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)
    if not isinstance(weight_decay, (int, float)) or weight_decay:  # arrays: sweep values
        tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    return with_gradient_clipping(tx, max_grad_norm)


OPTIMIZERS = {"adafactor": adafactor, "adamw": adamw, "sgd": sgd}


def create(name: str = "adafactor", **kwargs) -> optax.GradientTransformation:
    """Builds an optimizer by name (`adafactor`, `adamw`, `sgd`) with keyword overrides."""
    try:
        builder = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}") from None
    return builder(**kwargs)
