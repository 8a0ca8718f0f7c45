"""Learning-rate schedules: every one is an optax schedule, `step -> learning rate`.

`step` is the optimizer step counter (0 for the first update), as optax's
`scale_by_learning_rate` / `scale_by_schedule` pass it and as T5X evaluates its
`learning_rate_fn(step)` before incrementing the step.

- `constant(value)`: Lester et al.'s prompt-tuning schedule (constant 0.3 with Adafactor).
- `warmup_then_decay(peak_value, warmup_steps, decay=...)`: linear warmup from 0 to
  `peak_value` over `warmup_steps` steps, then `'rsqrt'` (T5X's `rsqrt_decay`, normalised
  to equal `peak_value` at the end of warmup), `'linear'` or `'cosine'` decay to `end_value`
  at `total_steps`, or `'constant'`.
- `learning_rate_grid(values)`: the list of learning rates to sweep (a plain helper for
  scripts; SWEEP trains a grid in one run, training/sweep.py; it builds no schedule).
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional

import jax.numpy as jnp
import optax

DECAYS = ("rsqrt", "linear", "cosine", "constant")

# The EPT paper's grid for prompt-based tuning (App. B.2: {3e-3, 1e-2, 3e-2, 1e-1, 3e-1},
# swept for its SuperGLUE main results; Lester et al. use a constant 0.3 with Adafactor).
DEFAULT_LR_GRID = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def constant(value: float = 0.3) -> optax.Schedule:
    """A constant schedule (`optax.constant_schedule`)."""
    return optax.constant_schedule(float(value))


def warmup_then_decay(peak_value: float = 0.3,
                      warmup_steps: int = 0,
                      decay: str = "rsqrt",
                      total_steps: Optional[int] = None,
                      end_value: float = 0.0) -> optax.Schedule:
    """Linear warmup from 0 to `peak_value`, then a decay.

    For `step < warmup_steps`: `peak_value * step / warmup_steps` (0 at step 0, as T5X's
    `linear_warmup` factor `min(1, step / warmup_steps)` and Hugging Face's
    `get_*_schedule_with_warmup`). From `step >= warmup_steps` on, with `w = warmup_steps`
    and `T = total_steps`:

    - `'rsqrt'`: `peak_value * sqrt(max(w, 1)) / sqrt(max(step, w, 1))`. This is T5X's
      `constant * linear_warmup * rsqrt_decay` with `constant = peak_value * sqrt(w)`, i.e.
      normalised so the schedule reaches `peak_value` at the end of warmup. `total_steps` and
      `end_value` are ignored. With `w = 0` it is `peak_value / sqrt(max(step, 1))`.
    - `'linear'`: from `peak_value` at `w` to `end_value` at `T`, then `end_value`.
    - `'cosine'`: `end_value + (peak_value - end_value) * (1 + cos(pi * p)) / 2` with
      `p = (step - w) / (T - w)` clipped to [0, 1].
    - `'constant'`: `peak_value`.

    `'linear'` and `'cosine'` need `total_steps > warmup_steps`.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    warmup_steps = int(warmup_steps)
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if decay in ("linear", "cosine"):
        if total_steps is None or int(total_steps) <= warmup_steps:
            raise ValueError(f"decay={decay!r} needs total_steps > warmup_steps "
                             f"(got total_steps={total_steps}, warmup_steps={warmup_steps})")
        total_steps = int(total_steps)
    peak = float(peak_value)
    end = float(end_value)

    def after_warmup(step):
        if decay == "constant":
            return jnp.full_like(step, peak)
        if decay == "rsqrt":
            ref = max(warmup_steps, 1)
            return peak * math.sqrt(ref) / jnp.sqrt(jnp.maximum(step, float(ref)))
        frac = jnp.clip((step - warmup_steps) / float(total_steps - warmup_steps), 0.0, 1.0)
        if decay == "linear":
            return peak + (end - peak) * frac
        return end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        value = after_warmup(step)
        if warmup_steps > 0:
            value = jnp.where(step < warmup_steps, peak * step / warmup_steps, value)
        return value

    return schedule


def learning_rate_grid(values: Iterable[float] = DEFAULT_LR_GRID) -> List[float]:
    """The learning rates to sweep: positive floats, order kept, duplicates dropped."""
    out: List[float] = []
    for v in values:
        v = float(v)
        if not v > 0.0 or not math.isfinite(v):
            raise ValueError(f"learning rates must be positive and finite, got {v}")
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError("learning_rate_grid needs at least one value")
    return out
