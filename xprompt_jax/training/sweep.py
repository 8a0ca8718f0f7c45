"""A sweep as one run: every configuration of `SWEEP` is an entry of a `PromptBank`
trained jointly on one frozen model, each with its own optimizer hyperparameters
(vectorised), its own seed (init and data order), its own prompt init, its own best
prompt and its own early stopping.

`SWEEP` (gin macro, default None) is a grid `{'seed': [0, 1], 'learning_rate': [0.1, 1.0]}`
(the product over its keys, the first key varying slowest) or a list of configurations
`[{'learning_rate': 0.1}, {'learning_rate': 1.0, 'weight_decay_rate': 0.01}]` (every
configuration names the same keys). The keys: scalar arguments of the run's optimizer
builder, named as `optimizers.py` names them (`learning_rate`, and the weight decay:
`weight_decay_rate` of `adafactor`, `weight_decay` of `adamw` and `sgd`); `seed` (an
entry's RANDOM_SEED); `prompt_init` (`uniform`, `sampled_vocab`, `class_labels`: as
gin/prompts/<name>.gin builds them).

How an entry equals the same configuration trained alone:

- the optimizer: `optax.inject_hyperparams` rebuilds the run's `BuiltOptimizer` (gin's
  other bindings kept) with the swept values taken from its state, and
  `bank_training.per_prompt_optimizer` vmaps it over the bank axis; the state's
  hyperparameters `[N]` hold each entry's values (float32, as the solo run's Python
  floats enter float32 arithmetic). One jitted step, no Python loop over entries.
- the init: entry k starts from the prompt a solo run of configuration k initialises (its
  seed's init rng, `trainer.seed_rngs`, and its initializer: `sweep_initial_trainable`),
  not from the bank's per-entry split of the init rng.
- the data and loss: per-entry token-mean losses, as prompt ensembles; without a `seed`
  key every entry sees the run's batches (`BankBatches` mode 'ensemble'), with one each
  entry reads the stream seqio shuffles with its seed (`data.TrainBatchIterator` with
  `entry_seeds`, mode 'entry_streams': `[B*K]` rows per step). Dropout: one stream for
  the run (not the solo runs' own).

Per entry, during training (`SweepEntries`, the trainer's eval callback): its best
evaluation and prompt (MODEL_DIR/best_per_entry/), and early stopping under PATIENCE: a
stopped entry gets zero updates and keeps its optimizer state (`SweepState.active`,
`freeze_entries`); the run stops when all have. `runs/sweep_report.py` writes the report.

Not yet: XPrompt sweeps, a shared prompt (composition), a method's own per-prompt knobs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
import os
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import ConfigError
from ..fileio import is_writer, save_npy_atomic, write_json_atomic
from ..prompts import bank as bank_lib
from ..prompts import initializers, task_init
from .bank_training import BankAndSharedState, per_prompt_optimizer
from .checkpointing import numpy_file_name, param_paths
from .frozen_model import initialize
from .optimizers import BuiltOptimizer
from .trainer import EvalAction, seed_rngs

# Scalar optimizer arguments a sweep may vary (those of the run's builder apply).
SWEEPABLE = ("learning_rate", "weight_decay_rate", "weight_decay")
SEED_KEY = "seed"  # the entry's RANDOM_SEED: its prompt init and its data order
INIT_KEY = "prompt_init"  # the entry's prompt initializer, by name (PROMPT_INITS)
PROMPT_INITS = ("uniform", "sampled_vocab", "class_labels")  # as gin/prompts/<name>.gin
SEED_ALIASES = ("random_seed", "seeds")


def _check_value(key: str, value: Any, where: str) -> Any:
    if key == SEED_KEY:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"SWEEP: {key!r}{where} is {value!r}; expected an int >= 0 "
                              "(a RANDOM_SEED)")
        return int(value)
    if key == INIT_KEY:
        if value not in PROMPT_INITS:
            raise ConfigError(f"SWEEP: {key!r}{where} is {value!r}; expected one of "
                              f"{', '.join(PROMPT_INITS)} (as gin/prompts/<name>.gin)")
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ConfigError(f"SWEEP: {key!r}{where} is {value!r}; expected a finite number")
    return float(value)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"SWEEP: key {key!r} is not a hyperparameter name")
    if key.lower() in SEED_ALIASES or (key.lower() == SEED_KEY and key != SEED_KEY):
        raise ConfigError(f"SWEEP: key {key!r}: name the seed axis {SEED_KEY!r}")
    return key


def sweep_configurations(sweep: Any) -> List[Dict[str, Any]]:
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
    names = ["+".join(f"{k}={v if isinstance(v, str) else repr(v)}"
                      for k, v in config.items()) for config in configs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"SWEEP: configuration {dup} appears more than once")
    return names


def optimizer_keys(configs: Sequence[Mapping[str, Any]]) -> List[str]:
    """The swept keys that are optimizer arguments (all but the seed and the init)."""
    return [k for k in configs[0] if k not in (SEED_KEY, INIT_KEY)]


def entry_seeds(configs: Sequence[Mapping[str, Any]], seed: int) -> List[int]:
    """Each entry's RANDOM_SEED: its `seed` key, else the run's `seed`."""
    return [int(c.get(SEED_KEY, seed)) for c in configs]


def check_keys(optimizer: Any, configs: Sequence[Mapping[str, Any]]) -> None:
    """The swept optimizer keys must be scalar arguments of the run's optimizer builder."""
    if not optimizer_keys(configs):
        return
    if not isinstance(optimizer, BuiltOptimizer):
        raise ConfigError("SWEEP needs OPTIMIZER built by optimizers.adafactor, adamw or sgd "
                          f"(got {type(optimizer).__name__})")
    builder = optimizer.builder.__name__
    allowed = [k for k in SWEEPABLE if k in inspect.signature(optimizer.builder).parameters]
    for key in optimizer_keys(configs):
        if key not in allowed:
            raise ConfigError(f"SWEEP: unknown key {key!r} for optimizers.{builder}; "
                              f"sweepable: {', '.join(allowed + [SEED_KEY, INIT_KEY])}")


def sweep_optimizer(optimizer: Any, configs: Sequence[Mapping[str, Any]]
                    ) -> optax.GradientTransformation:
    """The run's optimizer per bank entry (`per_prompt_optimizer`), entry k with the
    hyperparameters of `configs[k]` (module docstring); without swept optimizer keys the
    run's optimizer itself, per entry."""
    check_keys(optimizer, configs)
    keys = optimizer_keys(configs)
    if not keys:
        return _stoppable(per_prompt_optimizer(optimizer), len(configs))
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
        return state._replace(hyperparams={**state.hyperparams, **values})

    return _stoppable(optax.GradientTransformation(init_fn, banked.update), len(configs))


class SweepState(NamedTuple):
    """The sweep optimizer's state: the per-entry optimizer's (`inner`, every leaf
    `[N, ...]`) and which entries still train (`active` `[N]` float32, 1 or 0)."""
    inner: Any
    active: Any


def _stoppable(banked: optax.GradientTransformation, num: int
               ) -> optax.GradientTransformation:
    """`banked` (per entry, `num` entries) with per-entry stopping: an entry whose
    `active` is 0 gets zero updates and keeps its optimizer state as it was, so its
    params and state stay exactly those of its stop (`freeze_entries`). Its init checks
    the bank holds `num` entries and no shared prompt."""

    def init_fn(params):
        state = banked.init(params)
        if isinstance(state, BankAndSharedState):
            raise ConfigError("SWEEP with a shared prompt (SHARED_PROMPT) is not supported")
        sizes = {x.shape[0] for x in jax.tree_util.tree_leaves(state) if np.ndim(x)}
        if sizes - {num}:
            raise ConfigError(f"SWEEP has {num} configurations for a bank of "
                              f"{sorted(sizes - {num})[0]}")
        return SweepState(state, jnp.ones((num,), jnp.float32))

    def update_fn(updates, state, params=None):
        new_updates, inner = banked.update(updates, state.inner, params)
        on = state.active > 0

        def keep(new, old):  # entry k: the new value when active, else the old one
            return jnp.where(on.reshape((-1,) + (1,) * (jnp.ndim(new) - 1)), new, old)

        inner = jax.tree_util.tree_map(keep, inner, state.inner)
        new_updates = jax.tree_util.tree_map(lambda u: keep(u, jnp.zeros_like(u)),
                                             new_updates)
        return new_updates, SweepState(inner, state.active)

    return optax.GradientTransformation(init_fn, update_fn)


def freeze_entries(opt_state: Any, stopped: Sequence[int]) -> Any:
    """`opt_state` (holding a `SweepState`, possibly inside a chain's tuple) with the
    entries `stopped` inactive."""
    if isinstance(opt_state, SweepState):
        active = np.ones(np.shape(opt_state.active), np.float32)
        active[list(stopped)] = 0.0
        return opt_state._replace(active=jnp.asarray(active))
    if isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields"):
        return tuple(freeze_entries(s, stopped) for s in opt_state)
    return opt_state


def bank_model(model, num: int):
    """`model` (a PromptedT5 with one prompt) with a bank of `num` copies of its prompt."""
    if bank_lib.num_prompts(model):
        raise ConfigError("SWEEP builds its own bank of prompts: leave out ensemble.gin / "
                          "mixed_tasks.gin")
    return model.clone(prompt=bank_lib.PromptBank(prompt=model.prompt, num_prompts=num))


def entry_model(model, config: Mapping[str, Any], embedding_fn, task_name: str):
    """The solo model of one configuration: `model` (one prompt) with the prompt initializer
    its `prompt_init` names, built as gin/prompts/<name>.gin builds it (population 5000,
    uniform scale 0.5); `model` itself without that key. `embedding_fn()`: the frozen
    model's embedding table `[V, e]` (read once, when an init needs it)."""
    kind = config.get(INIT_KEY)
    if kind is None:
        return model
    if not any(f.name == "init" for f in dataclasses.fields(model.prompt)):
        raise ConfigError(f"SWEEP: {INIT_KEY!r} needs a prompt module with an `init` "
                          f"initializer ({type(model.prompt).__name__} has none)")
    if kind == "uniform":
        init = initializers.uniform(0.5)
    elif kind == "sampled_vocab":
        init = initializers.sampled_vocab(embedding_fn(), population=5000)
    else:
        init = task_init.class_labels_for_task(embedding_fn(), task_name, population=5000)
    return model.clone(prompt=model.prompt.clone(init=init))


def sweep_initial_trainable(model, configs: Sequence[Mapping[str, Any]], seed: int,
                            init_fn: Callable[[Any, int], Mapping[str, Any]],
                            embedding_fn: Callable[[], Any], task_name: str
                            ) -> Dict[str, Any]:
    """The bank's trainable params (`prompt/bank/<leaf path>` `[N, ...]`): entry k starts
    exactly where a solo run of configuration k starts, its own RANDOM_SEED (`seed` key,
    else `seed`) and prompt init (`prompt_init` key, else the run's).
    `init_fn(solo model, seed)`: that run's trainable params (`solo_initial_trainable`);
    one call per distinct (seed, init)."""
    solos: Dict[Any, Mapping[str, Any]] = {}
    entries = []
    embedding = functools.lru_cache(maxsize=None)(embedding_fn)
    for config, entry_seed in zip(configs, entry_seeds(configs, seed)):
        key = (entry_seed, config.get(INIT_KEY))
        if key not in solos:
            solos[key] = init_fn(entry_model(model, config, embedding, task_name), entry_seed)
        entries.append(solos[key])
    return bank_initial_trainable(entries)


def solo_initial_trainable(model, pretrained_params, feature_lengths, frozen_config,
                           seed: int) -> Dict[str, Any]:
    """The trainable params a solo run of `model` (one prompt) starts from with RANDOM_SEED
    `seed`: the trainer's own initialisation (`frozen_model.initialize`, the init rng of
    `trainer.seed_rngs`)."""
    init_rng, _ = seed_rngs(seed)
    return dict(initialize(model, pretrained_params, feature_lengths, frozen_config,
                           init_rng).trainable)


def bank_initial_trainable(solo_trainables: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Solo runs' trainable params (`prompt/<leaf path>`, one per entry) as the bank's
    (`prompt/bank/<leaf path>` `[N, ...]`, entry k from `solo_trainables[k]`)."""
    for solo in solo_trainables:
        other = {k: v for k, v in solo.items() if k != "prompt"}
        if jax.tree_util.tree_leaves(other):
            raise ConfigError(f"SWEEP trains prompts only; trainable params outside the "
                              f"prompt: {sorted(other)}")
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                                     *[dict(solo["prompt"]) for solo in solo_trainables])
    return {"prompt": {bank_lib.BANK_NAME: stacked}}


BEST_DIR = "best_per_entry"  # MODEL_DIR/best_per_entry/<entry>.npy (+ .<leaf path>)
BEST_FILE = "best_per_entry.json"


class SweepEntries:
    """Trainer `eval_callback` of a sweep: each entry's own evaluation record, best
    prompt and early stopping, as a solo run of that configuration keeps them.

    After each evaluation, every entry still training compares its own main metric
    (`result['per_prompt_main']`) with its best: a better one writes its prompt (the
    entry's numpy export, `numpy_fn`) to MODEL_DIR/best_per_entry/<entry>.npy
    (`<entry>.<leaf path>.npy` for a reparameterised prompt); `patience` evaluations
    without improvement stop the entry at that step (`freeze_entries`: from then on its
    params and optimizer state stay those of its stop), and when every entry has stopped
    the run stops. best_per_entry.json holds, per entry, its index in the sweep, its
    configuration, best metric and step (and, with EVAL_HELDOUT_SPLIT, its held-out main
    metric there), last metric and step, and stop step; the same record travels in each
    checkpoint's meta (`meta` / `load_meta`), so a resumed run continues from the
    checkpoint's record."""

    def __init__(self, model_dir: str, names: Sequence[str],
                 configs: Sequence[Mapping[str, Any]], patience: Optional[int],
                 numpy_fn: Callable[[Any], Mapping[str, Any]]):
        self.model_dir = model_dir
        self.names = list(names)
        self.configs = [dict(c) for c in configs]
        self.patience = patience
        self.numpy_fn = numpy_fn
        self.entries: Dict[str, Dict[str, Any]] = {}
        self.load_meta(None)

    def meta(self) -> Dict[str, Any]:
        return {name: dict(entry) for name, entry in self.entries.items()}

    def load_meta(self, meta: Optional[Mapping[str, Any]]) -> None:
        fresh = {"best_metric": None, "best_step": None, "best_heldout": None,
                 "last_metric": None, "last_step": None, "evals_without_improvement": 0,
                 "stopped_at": None}
        meta = meta if isinstance(meta, Mapping) else {}
        self.entries = {}
        for index, (name, config) in enumerate(zip(self.names, self.configs)):
            saved = meta.get(name) if isinstance(meta.get(name), Mapping) else {}
            self.entries[name] = {"index": index, "config": config,
                                  **{k: saved.get(k, v) for k, v in fresh.items()}}

    def stopped(self) -> List[int]:
        return [k for k, name in enumerate(self.names)
                if self.entries[name]["stopped_at"] is not None]

    def __call__(self, step: int, result: Mapping[str, Any], trainable: Any):

        mains = list(result.get("per_prompt_main") or [None] * len(self.names))
        improved = []
        for k, name in enumerate(self.names):
            entry = self.entries[name]
            if entry["stopped_at"] is not None:
                continue  # frozen: its evaluation is that of its stop
            main = mains[k]
            main = None if main is None or not math.isfinite(float(main)) else float(main)
            entry["last_metric"], entry["last_step"] = main, int(step)
            if main is not None and (entry["best_metric"] is None
                                     or main > entry["best_metric"]):
                held = (result.get("heldout_per_prompt") or {}).get(name)
                entry.update(best_metric=main, best_step=int(step),
                             evals_without_improvement=0, best_heldout=None if held is None
                             else {"split": held["split"],
                                   "main_metric": held["main_metric"]})
                improved.append(name)
            else:
                entry["evals_without_improvement"] += 1
                if self.patience is not None and \
                        entry["evals_without_improvement"] >= self.patience:
                    entry["stopped_at"] = int(step)
        self._write(improved, trainable)
        stopped = self.stopped()
        if not stopped:
            return None
        return EvalAction(
            update_state=lambda state: state.replace(
                opt_state=freeze_entries(state.opt_state, stopped)),
            stop=len(stopped) == len(self.names),
            reason=f"every sweep entry stopped (no improvement in {self.patience} "
                   "evaluations)")

    def _write(self, improved: Sequence[str], trainable: Any) -> None:
        if not is_writer():
            return
        if improved:
            exported = self.numpy_fn(trainable)
            for name in improved:
                for path, value in param_paths({name: exported[name]}).items():
                    save_npy_atomic(os.path.join(self.model_dir, BEST_DIR,
                                                 numpy_file_name(path, ".npy")),
                                    np.asarray(jax.device_get(value)), np.float32)
        write_json_atomic(os.path.join(self.model_dir, BEST_FILE), self.meta())
