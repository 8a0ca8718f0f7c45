"""Training N prompts of a `PromptBank` jointly, each as if it were trained alone.

Three pieces make a joint step equal N separate steps (up to float summation order):

- `per_prompt_optimizer(inner)`: the optimizer `jax.vmap`ped over the bank axis, so each
  prompt has its own optimizer state (Adafactor's factored moments, update clipping and
  step count are per prompt, never pooled across the bank). Trainable params outside the
  bank (a composed bank's shared prompt `prompt/shared/prompt` `[m_s, e]`) get `inner`
  itself: their own ordinary state, their gradient the sum over every prompt's loss.
- `BankBatches`: a host-side batch transform. Mode `'ensemble'` repeats every example once
  per prompt (`[B, ...]` -> `[B*N, ...]`, row `b*N + k` with prompt k: K seeds of one task
  see the same data, as separate runs with one data seed would); mode `'ids_in_data'`
  keeps the batch (the id token is already there, e.g. a mixture whose tasks prepend their
  own id); mode `'entry_streams'` takes a batch that already holds each prompt's own
  examples (`[B*N, ...]`, row `b*N + k` for prompt k: a sweep over seeds, each entry with
  its own data order, `data.TrainBatchIterator` with `entry_seeds`) and prepends the ids.
  All rescale `decoder_loss_weights` per prompt (`bank.per_prompt_loss_weights`)
  and the loss normalization is `'sum'`, so each prompt's loss is its own token mean.
- `bank_numpy_params`: the per-prompt numpy export
  (`numpy_checkpoints/checkpoint_<step>/<name>.npy`, one file per prompt).

`BankConfig` says how a bank trains (gin: ensemble.gin, mixed_tasks.gin) and
`bank_trainer_parts` gives the trainer its bank arguments; mixed-task training keeps each
task's best prompt (`BestPerTaskPrompts`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np
import optax

from .. import _moved
from ..fileio import check_name, is_writer, read_json, save_npy_atomic, write_json_atomic
from ..prompts import bank as bank_lib
from .params import flatten, merge_params, unflatten

BANK_MODES = ("ensemble", "ids_in_data", "entry_streams")


class BankAndSharedState(NamedTuple):
    """`per_prompt_optimizer`'s state when some trainable params are outside the bank."""
    bank: Any  # inner's state, vmapped: every leaf [N, ...]
    shared: Any  # inner's ordinary state of the other params


def _is_bank_path(path: str) -> bool:
    return bank_lib.BANK_NAME in path.split("/")


def _split_bank(tree) -> Tuple[dict, dict]:
    """(bank leaves, other leaves) of a trainable params-shaped tree, as nested dicts."""
    flat = flatten(tree)
    return (unflatten({k: v for k, v in flat.items() if _is_bank_path(k)}),
            unflatten({k: v for k, v in flat.items() if not _is_bank_path(k)}))


def per_prompt_optimizer(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` applied independently to each bank entry (params under `.../bank/...`, the
    bank axis N first); any other trainable param (a composed bank's shared prompt) gets
    `inner` unbatched, with its own state (`BankAndSharedState`). Without such params the
    state is the vmapped state alone (as before composition existed: old checkpoints
    resume)."""

    def vmapped_update(updates, state, params):
        if params is None:
            return jax.vmap(lambda u, s: inner.update(u, s))(updates, state)
        return jax.vmap(inner.update)(updates, state, params)

    def init_fn(params):
        bank, other = _split_bank(params)
        if not jax.tree_util.tree_leaves(other):
            return jax.vmap(inner.init)(params)
        return BankAndSharedState(jax.vmap(inner.init)(bank), inner.init(other))

    def update_fn(updates, state, params=None):
        if not isinstance(state, BankAndSharedState):
            return vmapped_update(updates, state, params)
        bank_u, other_u = _split_bank(updates)
        bank_p, other_p = (None, None) if params is None else _split_bank(params)
        bank_u, bank_s = vmapped_update(bank_u, state.bank, bank_p)
        other_u, other_s = inner.update(other_u, state.shared, other_p)
        return merge_params(bank_u, other_u), BankAndSharedState(bank_s, other_s)

    return optax.GradientTransformation(init_fn, update_fn)


class BankBatches:
    """Callable host batch transform `{feature: [B, L]}` -> batch for the bank (see module
    docstring)."""

    def __init__(self, model, mode: str = "ensemble"):
        if mode not in BANK_MODES:
            raise ValueError(f"bank training mode {mode!r}; expected one of {BANK_MODES}")
        self.num = bank_lib.num_prompts(model)
        if not self.num:
            raise ValueError("BankBatches needs a PromptedT5 whose prompt is a PromptBank")
        self.base = bank_lib.id_token_base(model)
        self.mode = mode

    def __call__(self, batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.mode == "ensemble":
            out = bank_lib.tile_for_prompts(batch, range(self.num), self.base, self.num)
        elif self.mode == "entry_streams":
            rows = np.shape(batch["encoder_input_tokens"])[0]
            if rows % self.num:
                raise ValueError(f"bank mode 'entry_streams': a batch of {rows} rows does "
                                 f"not hold the same number of rows for each of {self.num} "
                                 "prompts")
            out = bank_lib.with_prompt_ids(batch, np.tile(np.arange(self.num), rows // self.num),
                                           self.base, self.num)
        else:
            out = dict(batch)
        ids = bank_lib.check_prompt_ids(out["encoder_input_tokens"][:, 0] - self.base,
                                        self.num, "training batch")
        weights = out.get("decoder_loss_weights")
        if weights is None:
            weights = (np.asarray(out["decoder_target_tokens"]) > 0).astype(np.float32)
        out["decoder_loss_weights"] = bank_lib.per_prompt_loss_weights(weights, ids, self.num)
        return out


def prompt_names(model, names: Optional[Sequence[str]] = None):
    num = bank_lib.num_prompts(model)
    names = list(names) if names else [f"prompt_{k}" for k in range(num)]
    if len(names) != num:
        raise ValueError(f"{len(names)} prompt names for a bank of {num} prompts")
    return names


def bank_entry_prompts(trainable: Mapping[str, Any], composition: Optional[str] = None):
    """Host side: each entry of a soft-prompt bank (`prompt/bank/prompt` `[N, m, e]`) as it
    enters the encoder, the shared prompt of a composed bank folded in (`[N, m', e]`);
    None for a reparameterized bank (several leaves per entry: run the model instead)."""
    prompt = trainable["prompt"]
    leaves = jax.tree_util.tree_leaves(prompt[bank_lib.BANK_NAME])
    if len(leaves) != 1:
        return None
    entries = np.asarray(jax.device_get(leaves[0]))
    if composition is None:
        return entries
    shared = np.asarray(jax.device_get(prompt[bank_lib.SHARED_NAME]["prompt"]))
    return bank_lib.compose(shared, entries, composition)


def bank_numpy_params(trainable: Mapping[str, Any], names: Sequence[str],
                      composition: Optional[str] = None) -> Dict[str, Any]:
    """`{name: entry k}` of the bank params (`prompt/bank/...` `[N, ...]`): one `<name>.npy`
    per prompt for a soft-prompt bank, the shared prompt of a composed bank folded in (the
    prompt as it enters the encoder); reparameterized banks: `<name>.<leaf path>.npy`, and
    a composed one's shared prompt as `shared.prompt.npy`."""
    composed = bank_entry_prompts(trainable, composition)
    if composed is not None:
        return {name: composed[k] for k, name in enumerate(names)}
    bank = trainable["prompt"][bank_lib.BANK_NAME]
    out = {name: jax.tree_util.tree_map(lambda x, k=k: x[k], bank)
           for k, name in enumerate(names)}
    if composition is not None:
        out[bank_lib.SHARED_NAME] = trainable["prompt"][bank_lib.SHARED_NAME]
    return out


@dataclasses.dataclass(frozen=True)
class BankConfig:
    """How a PromptBank model trains (gin: ensemble.gin, mixed_tasks.gin).

    `mode`: 'ensemble' (every example once per prompt), 'ids_in_data' (each example
    carries its prompt id: mixed-task training, `bank_tasks.py`) or 'entry_streams' (each
    prompt its own examples: a sweep over seeds); `tasks`: the tasks of
    prompt ids 0..N-1 with 'ids_in_data'; `prompt_names`: file and metric names (default
    the tasks, else `prompt_<k>`)."""

    mode: str = "ensemble"
    tasks: Optional[Sequence[str]] = None
    prompt_names: Optional[Sequence[str]] = None

    def __post_init__(self):
        if self.mode not in BANK_MODES:
            raise ValueError(f"bank training mode {self.mode!r}; expected one of {BANK_MODES}")
        if self.mode == "ids_in_data" and not self.tasks:
            raise ValueError("bank mode 'ids_in_data' needs the tasks of its prompt ids "
                             "(MIXED_TASKS)")

    def names(self, model) -> list:
        """One name per prompt of `model`'s bank."""
        num = bank_lib.num_prompts(model)
        names = list(self.prompt_names or self.tasks or [f"prompt_{k}" for k in range(num)])
        if len(names) != num:
            raise ValueError(f"{len(names)} prompt names for a bank of {num} prompts")
        return [check_name(name, f"bank prompt name #{k}") for k, name in enumerate(names)]


def bank_loss_normalization(normalization) -> str:
    """The loss normalization of joint training ('sum' over per-prompt rescaled weights,
    so each prompt's loss is its own token mean); the run's must be a token mean."""
    if normalization not in ("mean_tokens", "num_real_target_tokens"):
        raise ValueError(f"a PromptBank trains with per-prompt token-mean losses; "
                         f"LOSS_NORMALIZATION={normalization!r} is not supported with it")
    return "sum"


class BestPerTaskPrompts:
    """Trainer `eval_callback` of mixed-task training: keeps each task's best prompt (as it
    enters the encoder, the shared prompt folded in) in MODEL_DIR/best_per_task/<task>.npy
    and `best_per_task.json` (step, metric and prompt id of each task's best evaluation)."""

    def __init__(self, model_dir: str, tasks: Sequence[str], composition: Optional[str]):
        self.model_dir = model_dir
        self.tasks = [check_name(t, "task name") for t in tasks]  # best_per_task/<task>.npy
        self.composition = composition
        self.best: Dict[str, Dict[str, Any]] = {}
        if os.path.exists(self._json()):
            self.best = read_json(self._json(), "best-per-task record")

    def _json(self) -> str:
        return os.path.join(self.model_dir, "best_per_task.json")

    def __call__(self, step: int, result: Mapping[str, Any], trainable: Mapping[str, Any]):
        per_task = result.get("per_task_main") or {}
        improved = [t for t in self.tasks if per_task.get(t) is not None and (
            t not in self.best or per_task[t] > self.best[t]["main_metric"])]
        if not improved or not is_writer():
            return
        composed = bank_entry_prompts(trainable, self.composition)
        for task in improved:
            index = self.tasks.index(task)
            if composed is not None:  # the prompt as it enters the encoder
                value = composed[index]
            else:
                leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
                    lambda x: np.asarray(x)[index], trainable["prompt"][bank_lib.BANK_NAME]))
                value = leaves[0] if len(leaves) == 1 else np.concatenate(
                    [np.ravel(x) for x in leaves])
            save_npy_atomic(os.path.join(self.model_dir, "best_per_task", f"{task}.npy"),
                            value)
            self.best[task] = {"main_metric": float(per_task[task]), "step": int(step),
                               "prompt_id": index}
        write_json_atomic(self._json(), self.best)


def bank_trainer_parts(model, bank: BankConfig, model_dir: str) -> Dict[str, Any]:
    """The Trainer arguments of a PromptBank model (besides `per_prompt_optimizer` and
    `bank_loss_normalization`): the batch transform, the per-prompt numpy export and, for
    mixed-task training, the best prompt of each task."""
    names = bank.names(model)
    composition = getattr(model.prompt, "composition", None)
    parts: Dict[str, Any] = {
        "batch_transform": BankBatches(model, bank.mode),
        "numpy_params_fn": lambda params: bank_numpy_params(params, names, composition)}
    if bank.mode == "ids_in_data":
        parts["eval_callback"] = BestPerTaskPrompts(model_dir, bank.tasks, composition)
    return parts


# Names that moved elsewhere: an import names their new home.
__getattr__ = _moved.module_getattr(__name__)
