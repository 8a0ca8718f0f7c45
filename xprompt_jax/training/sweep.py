"""A hyperparameter sweep as one run: every configuration of `SWEEP` is an entry of a
`PromptBank` trained in ensemble mode (every entry sees the same batches), each with its
own optimizer hyperparameters, vectorised.

`SWEEP` (gin macro, default None) is a grid `{'learning_rate': [0.1, 0.3, 1.0]}` (the
product over its keys, the first key varying slowest) or a list of configurations
`[{'learning_rate': 0.1}, {'learning_rate': 1.0, 'weight_decay_rate': 0.01}]` (every
configuration names the same keys). The keys are scalar arguments of the run's optimizer
builder, named as `optimizers.py` names them: `learning_rate`, and the weight decay
(`weight_decay_rate` of `adafactor`, `weight_decay` of `adamw` and `sgd`).

How an entry equals the same configuration trained alone:

- the optimizer: `optax.inject_hyperparams` rebuilds the run's `BuiltOptimizer` (gin's
  other bindings kept) with the swept values taken from its state, and
  `bank_training.per_prompt_optimizer` vmaps it over the bank axis; the state's
  hyperparameters `[N]` hold each entry's values (float32, as the solo run's Python
  floats enter float32 arithmetic). One jitted step, no Python loop over entries.
- the init: every entry starts from the prompt a solo run with the same RANDOM_SEED
  would initialise (`bank_initial_trainable`: the solo model's init, tiled `[N, ...]`),
  not from the bank's per-entry split of the init rng.
- the data and loss: `bank_training.BankBatches` in mode 'ensemble' and per-entry
  token-mean losses, as prompt ensembles.

Not yet: seeds (init and data order) as a sweep axis, per-entry early stopping / best
checkpoint.
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any, Dict, List, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import ConfigError
from ..prompts import bank as bank_lib
from .bank_training import BankAndSharedState, per_prompt_optimizer
from .frozen_model import initialize
from .optimizers import BuiltOptimizer
from .trainer import seed_rngs

# Scalar optimizer arguments a sweep may vary (those of the run's builder apply).
SWEEPABLE = ("learning_rate", "weight_decay_rate", "weight_decay")
SEED_KEYS = ("seed", "random_seed")


def _check_value(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ConfigError(f"SWEEP: {key!r}{where} is {value!r}; expected a finite number")
    return float(value)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"SWEEP: key {key!r} is not a hyperparameter name")
    if key.lower() in SEED_KEYS:
        raise ConfigError(f"SWEEP: key {key!r}: seeds as a sweep axis are not supported "
                          "yet (sweep one RANDOM_SEED per run)")
    return key


def sweep_configurations(sweep: Any) -> List[Dict[str, float]]:
    """`SWEEP` (a grid dict or a list of dicts, module docstring) -> one `{key: value}` per
    entry; ConfigError naming SWEEP and the key at fault."""
    if isinstance(sweep, Mapping):
        if not sweep:
            raise ConfigError("SWEEP: an empty grid; give e.g. {'learning_rate': [0.1, 0.3]}")
        grid = {}
        for key, values in sweep.items():
            key = _check_key(key)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                values = [values]
            if not values:
                raise ConfigError(f"SWEEP: {key!r} has an empty list of values")
            grid[key] = [_check_value(key, v, f" value #{i}") for i, v in enumerate(values)]
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    if isinstance(sweep, (list, tuple)):
        if not sweep:
            raise ConfigError("SWEEP: an empty list of configurations")
        configs, keys = [], None
        for i, config in enumerate(sweep):
            if not isinstance(config, Mapping) or not config:
                raise ConfigError(f"SWEEP: configuration #{i} is {config!r}; expected a dict "
                                  "such as {'learning_rate': 0.1}")
            names = [_check_key(k) for k in config]
            if keys is None:
                keys = names
            elif set(names) != set(keys):
                odd = sorted(set(names) ^ set(keys))[0]
                raise ConfigError(f"SWEEP: configuration #{i} names {sorted(names)}, #0 names "
                                  f"{sorted(keys)} (key {odd!r}): every configuration of a "
                                  "list names the same keys")
            configs.append({k: _check_value(k, config[k], f" of configuration #{i}")
                            for k in keys})
        return configs
    raise ConfigError(f"SWEEP is {sweep!r}; expected a grid {{'learning_rate': [0.1, 0.3]}} "
                      "or a list of configurations [{'learning_rate': 0.1}, ...]")


def entry_names(configs: Sequence[Mapping[str, float]]) -> List[str]:
    """The entry names (export files, metric names): `learning_rate=0.1`, several keys
    joined by '+' (`learning_rate=0.3+weight_decay=1.0`)."""
    names = ["+".join(f"{k}={v!r}" for k, v in config.items())
             for config in configs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"SWEEP: configuration {dup} appears more than once")
    return names


def check_keys(optimizer: Any, configs: Sequence[Mapping[str, float]]) -> None:
    """The swept keys must be scalar arguments of the run's optimizer builder."""
    if not isinstance(optimizer, BuiltOptimizer):
        raise ConfigError("SWEEP needs OPTIMIZER built by optimizers.adafactor, adamw or sgd "
                          f"(got {type(optimizer).__name__})")
    builder = optimizer.builder.__name__
    allowed = [k for k in SWEEPABLE if k in inspect.signature(optimizer.builder).parameters]
    for key in configs[0]:
        if key not in allowed:
            raise ConfigError(f"SWEEP: unknown key {key!r} for optimizers.{builder}; "
                              f"sweepable: {', '.join(allowed)}")


def sweep_optimizer(optimizer: BuiltOptimizer, configs: Sequence[Mapping[str, float]]
                    ) -> optax.GradientTransformation:
    """The run's optimizer per bank entry (`per_prompt_optimizer`), entry k with the
    hyperparameters of `configs[k]` (module docstring)."""
    check_keys(optimizer, configs)
    keys = list(configs[0])
    fixed = {k: v for k, v in optimizer.arguments.items() if k not in keys}

    def rebuild(**swept):
        return optimizer.builder(**fixed, **swept)

    # inject_hyperparams injects exactly the arguments of this signature: the swept keys
    rebuild.__signature__ = inspect.Signature(
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in keys])
    inner = optax.inject_hyperparams(rebuild, hyperparam_dtype=jnp.float32)(
        **{k: configs[0][k] for k in keys})
    banked = per_prompt_optimizer(inner)
    values = {k: jnp.asarray([c[k] for c in configs], jnp.float32) for k in keys}

    def init_fn(params):
        state = banked.init(params)
        if isinstance(state, BankAndSharedState):
            raise ConfigError("SWEEP with a shared prompt (SHARED_PROMPT) is not supported")
        num = jax.tree_util.tree_leaves(state.count)[0].shape[0]
        if num != len(configs):
            raise ConfigError(f"SWEEP has {len(configs)} configurations for a bank of {num}")
        return state._replace(hyperparams={**state.hyperparams, **values})

    return optax.GradientTransformation(init_fn, banked.update)


def bank_model(model, num: int):
    """`model` (a PromptedT5 with one prompt) with a bank of `num` copies of its prompt."""
    if bank_lib.num_prompts(model):
        raise ConfigError("SWEEP builds its own bank of prompts: leave out ensemble.gin / "
                          "mixed_tasks.gin")
    return model.clone(prompt=bank_lib.PromptBank(prompt=model.prompt, num_prompts=num))


def solo_initial_trainable(model, pretrained_params, feature_lengths, frozen_config,
                           seed: int) -> Dict[str, Any]:
    """The trainable params a solo run of `model` (one prompt) starts from with RANDOM_SEED
    `seed`: the trainer's own initialisation (`frozen_model.initialize`, the init rng of
    `trainer.seed_rngs`)."""
    init_rng, _ = seed_rngs(seed)
    return dict(initialize(model, pretrained_params, feature_lengths, frozen_config,
                           init_rng).trainable)


def bank_initial_trainable(solo_trainable: Mapping[str, Any], num: int) -> Dict[str, Any]:
    """A solo run's trainable params (`prompt/<leaf path>`) as the bank's
    (`prompt/bank/<leaf path>` `[num, ...]`): every entry starts where the solo run does."""
    tiled = jax.tree_util.tree_map(
        lambda x: np.broadcast_to(np.asarray(x)[None], (num,) + tuple(np.shape(x))),
        dict(solo_trainable["prompt"]))
    other = {k: v for k, v in solo_trainable.items() if k != "prompt"}
    if jax.tree_util.tree_leaves(other):
        raise ConfigError(f"SWEEP trains prompts only; trainable params outside the prompt: "
                          f"{sorted(other)}")
    return {"prompt": {bank_lib.BANK_NAME: tiled}}
