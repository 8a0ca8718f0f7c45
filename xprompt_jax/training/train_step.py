"""Train state and the jitted, sharded train step (gradients of the trainable subtree only).

`frozen` is a variables dict: `{'params': frozen_params, <other collections>...}` (e.g. the
XPrompt `prompt_masks`). It is closed over as a plain (non-differentiated) argument, so
gradients of frozen weights are never formed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import flax.struct
import jax
import jax.numpy as jnp
import optax

from . import losses
from .params import merge_params

Batch = Mapping[str, jnp.ndarray]


class TrainState(flax.struct.PyTreeNode):
    """Step counter, trainable params and their optimizer state (nothing frozen)."""

    step: jnp.ndarray
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Cross-entropy options (T5X semantics).

    `normalization`: 'mean_tokens' (sum over target tokens / their count, like Hugging Face),
    'sum' (T5X's default with no normalizing factor), 'mean_examples', or a float divisor.
    """

    label_smoothing: float = 0.0
    z_loss: float = 0.0
    normalization: Union[str, float] = "mean_tokens"

    def normalizer(self, weight_sum, num_examples):
        if self.normalization == "mean_tokens":
            return jnp.maximum(weight_sum, 1.0)
        if self.normalization == "sum":
            return jnp.ones_like(weight_sum)
        if self.normalization == "mean_examples":
            return jnp.asarray(num_examples, weight_sum.dtype)
        if isinstance(self.normalization, (int, float)):
            return jnp.asarray(float(self.normalization), weight_sum.dtype)
        raise ValueError(f"unknown loss normalization {self.normalization!r}")


def batch_loss_sums(model, variables: Mapping[str, Any], batch: Batch, rng: Optional[jax.Array],
                    loss_config: LossConfig, enable_dropout: bool):
    """(loss_sum, z_loss_sum, weight_sum) of one batch under `variables`."""
    rngs = {"dropout": rng} if (enable_dropout and rng is not None) else {}
    logits = model.apply(variables, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"], enable_dropout=enable_dropout, rngs=rngs)
    weights = batch.get("decoder_loss_weights")
    if weights is None:
        weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
    loss_sum, z_sum, weight_sum = losses.compute_weighted_cross_entropy(
        logits, batch["decoder_target_tokens"], weights,
        label_smoothing=loss_config.label_smoothing, z_loss=loss_config.z_loss)
    return loss_sum, z_sum, weight_sum


def make_train_step(model, optimizer: optax.GradientTransformation,
                    loss_config: LossConfig = LossConfig(), num_microbatches: int = 1,
                    enable_dropout: bool = True) -> Callable:
    """Returns `step(state, frozen, batch, rng) -> (state, metrics)` (not yet jitted).

    With `num_microbatches > 1` the batch is split along axis 0 and gradients of the
    trainable params are accumulated in a `lax.scan` before one optimizer update.

    Non-finite guard: when the loss, the gradient norm or the updated trainable params
    hold a NaN/Inf, the update is dropped (params and optimizer state stay those of the
    previous step; the step counter still advances, as the data did) and
    `metrics['nonfinite']` is 1.0 (else 0.0). The trainer stops or counts the skip
    (`TrainerConfig.on_nonfinite`); the state never holds a non-finite value.
    """

    def sums_and_grads(trainable, frozen, batch, rng):
        def loss_fn(trainable_params):
            variables = dict(frozen)
            variables["params"] = merge_params(trainable_params, frozen.get("params", {}))
            loss_sum, z_sum, weight_sum = batch_loss_sums(model, variables, batch, rng,
                                                          loss_config, enable_dropout)
            return loss_sum, (z_sum, weight_sum)

        (loss_sum, (z_sum, weight_sum)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable)
        return loss_sum, z_sum, weight_sum, grads

    def step(state: TrainState, frozen: Mapping[str, Any], batch: Batch, rng: jax.Array
             ) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
        rng = jax.random.fold_in(rng, state.step)
        num_examples = batch["decoder_target_tokens"].shape[0]
        if num_microbatches <= 1:
            loss_sum, z_sum, weight_sum, grads = sums_and_grads(state.params, frozen, batch, rng)
        else:
            if num_examples % num_microbatches:
                raise ValueError(f"batch size {num_examples} is not divisible by "
                                 f"num_microbatches={num_microbatches}")
            micro = jax.tree_util.tree_map(
                lambda x: x.reshape((num_microbatches, -1) + x.shape[1:]), dict(batch))

            def body(carry, inputs):
                index, microbatch = inputs
                out = sums_and_grads(state.params, frozen, microbatch,
                                     jax.random.fold_in(rng, index))
                return jax.tree_util.tree_map(jnp.add, carry, out), None

            zeros = (jnp.zeros(()), jnp.zeros(()), jnp.zeros(()),
                     jax.tree_util.tree_map(jnp.zeros_like, state.params))
            (loss_sum, z_sum, weight_sum, grads), _ = jax.lax.scan(
                body, zeros, (jnp.arange(num_microbatches), micro))
        normalizer = loss_config.normalizer(weight_sum, num_examples)
        grads = jax.tree_util.tree_map(lambda g: g / normalizer, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm, trainable_norm = optax.tree.norm(grads), optax.tree.norm(params)
        finite = (jnp.isfinite(loss_sum) & jnp.isfinite(z_sum) & jnp.isfinite(grad_norm)
                  & jnp.isfinite(trainable_norm))
        keep = lambda new, old: jnp.where(finite, new, old)
        params = jax.tree_util.tree_map(keep, params, state.params)
        opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
        metrics = {
            **prompt_metrics(model, frozen, params),
            "loss": loss_sum / normalizer,
            "z_loss": z_sum / normalizer,
            "num_target_tokens": weight_sum,
            "grad_norm": grad_norm,
            "trainable_norm": trainable_norm,
            "nonfinite": 1.0 - finite.astype(jnp.float32),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def prompt_metrics(model, frozen: Mapping[str, Any], trainable: Any) -> Dict[str, jnp.ndarray]:
    """`prompt_mean_norm`: mean L2 norm of the prompt tokens that enter the encoder (EPT's
    mu_t), for models with a `prompt_tokens` method; {} otherwise."""
    if not hasattr(model, "prompt_tokens"):
        return {}
    variables = dict(frozen)
    variables["params"] = merge_params(trainable, frozen.get("params", {}))
    tokens = model.apply(variables, method=model.prompt_tokens).astype(jnp.float32)
    return {"prompt_mean_norm": jnp.mean(jnp.linalg.norm(tokens, axis=-1))}


def jit_train_step(step_fn: Callable, state_shardings: Any, frozen_shardings: Any,
                   batch_shardings: Any, replicated_sharding: Any, donate: bool = True):
    """`jax.jit` with NamedSharding in/out shardings; the train state is donated."""
    return jax.jit(step_fn,
                   in_shardings=(state_shardings, frozen_shardings, batch_shardings,
                                 replicated_sharding),
                   out_shardings=(state_shardings, replicated_sharding),
                   donate_argnums=(0,) if donate else ())
