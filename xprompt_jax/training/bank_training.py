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
  own id). Both rescale `decoder_loss_weights` per prompt (`bank.per_prompt_loss_weights`)
  and the loss normalization is `'sum'`, so each prompt's loss is its own token mean.
- `bank_numpy_params`: the per-prompt numpy export
  (`numpy_checkpoints/checkpoint_<step>/<name>.npy`, one file per prompt).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np
import optax

from ..prompts import bank as bank_lib
from .params import flatten, merge_params, unflatten

BANK_MODES = ("ensemble", "ids_in_data")


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


def stack_prompt_files(paths: Sequence[str]) -> np.ndarray:
    """K separately trained prompts (`.npy` `[m, e]`, e.g. `export` output or a run's
    numpy checkpoint) -> `[K, m, e]` for a soft-prompt bank."""
    from ..errors import ConfigError

    arrays = []
    for path in paths:
        try:
            value = np.load(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"prompt file {path}: {e}") from None
        if value.ndim != 2:
            raise ConfigError(f"{path}: expected a [m, e] prompt, got shape {value.shape}")
        if arrays and value.shape != arrays[0].shape:
            raise ConfigError(f"{path}: shape {value.shape} differs from {paths[0]}'s "
                             f"{arrays[0].shape}")
        arrays.append(value.astype(np.float32))
    if not arrays:
        raise ConfigError("no prompt files given")
    return np.stack(arrays)


def bank_trainer_parts(model, optimizer, evaluator, loss_normalization,
                       trainer_kwargs: Dict[str, Any]):
    """`train.build_trainer`'s settings for a PromptBank model: the per-prompt optimizer,
    the bank evaluator (all prompts in each eval batch), loss normalization `'sum'` over
    per-prompt rescaled weights, the batch transform and the per-prompt numpy export.

    gin (extra `build_trainer` arguments, popped from `trainer_kwargs`): `bank_mode`
    ('ensemble' | 'ids_in_data': mixed-task training, `bank_tasks.py`), `bank_tasks` (the
    tasks of prompt ids 0..N-1 with 'ids_in_data'), `prompt_names` (file / metric names;
    default the tasks, else `prompt_<k>`)."""
    from .bank_evaluation import BankEvaluator
    from .evaluation import Evaluator

    from .bank_tasks import MultiTaskBankEvaluator

    mode = trainer_kwargs.pop("bank_mode", "ensemble")
    tasks = trainer_kwargs.pop("bank_tasks", None)
    names = prompt_names(model, trainer_kwargs.pop("prompt_names", None) or tasks)
    if loss_normalization not in ("mean_tokens", "num_real_target_tokens"):
        raise ValueError(f"a PromptBank trains with per-prompt token-mean losses; "
                         f"LOSS_NORMALIZATION={loss_normalization!r} is not supported with it")
    if isinstance(evaluator, MultiTaskBankEvaluator):
        pass
    elif isinstance(evaluator, Evaluator):
        evaluator = BankEvaluator.from_evaluator(evaluator, prompt_names=names)
    elif evaluator is not None:
        raise ValueError("EVAL_HELDOUT_SPLIT is not supported with a PromptBank yet")
    trainer_kwargs["batch_transform"] = BankBatches(model, mode)
    composition = getattr(model.prompt, "composition", None)
    trainer_kwargs["numpy_params_fn"] = lambda params: bank_numpy_params(params, names,
                                                                         composition)
    return per_prompt_optimizer(optimizer), evaluator, "sum"
