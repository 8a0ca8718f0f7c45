"""Export a trained prompt for inference: the prompt module's output `[n, e]` as `.npy`, an
inference gin file that loads it into a plain `SoftPrompt` (no reparameterization network),
parameter counts and a token-similarity heatmap.

    python -m xprompt_jax.export --gin_file=models/t5_1_1_base.gin --gin_file=ept.gin \
        --gin.MODEL_DIR="'/tmp/ept_run'" --output_dir=/tmp/ept_export [--checkpoint=best]

Takes the same gin files and flags as `python -m xprompt_jax.train` (the run's MODEL_DIR,
MODEL, TRAINABLE_REGEX; MIXTURE_OR_TASK_NAME is not needed) plus `--output_dir` (default
MODEL_DIR/export), `--checkpoint` ('best' | 'latest' | a step; default 'best', falling
back to the latest when no checkpoint has an eval metric) and `--verify` (also load the
frozen model from INITIAL_CHECKPOINT_PATH and check that the exported prompt in a plain
SoftPrompt model gives the same logits as the trained module).

Writes to the output directory:
- `prompt.npy`: float32 `[n, e]`, the prompt exactly as it enters the encoder
  (`PromptedT5.prompt_tokens()`).
- `inference.gin`: include after the model and method files (e.g. `models/<size>.gin ->
  ept.gin (or prompt_tuning.gin) -> <output_dir>/inference.gin`); sets MODEL to
  PromptedT5 with `SoftPrompt(length=n)` initialized from `prompt.npy`
  (`prompts/from_file.gin`), so `init_variables` puts the exported prompt in place.
- `export.json`: method and its settings, prompt shape, `param_counts` (trainable vs
  inference, per parameter), the prompt's mean token L2 norm, the checkpoint step.
- `prompt_similarity.png`: cosine similarity of the prompt tokens (EPT's Figure 3).
- with `--format=peft`, also `adapter_config.json` and `adapter_model.safetensors`: the
  output directory is then a Hugging Face PEFT prompt-tuning adapter (encoder prompt,
  `num_transformer_submodules: 1`; `PeftModel.from_pretrained(hf_t5, output_dir)`), see
  `checkpoints/peft_adapter.py`. What PEFT cannot express is written as PEFT can run it and
  said in `export.json` (`peft.notes`): XPrompt tokens removed from attention
  (`token_prune_mode='remove'`) are dropped from the adapter (PEFT attends to every virtual
  token; the shorter prompt shifts T5's relative positions, so outputs are close, not equal).

**A PromptBank** (ensemble.gin, mixed_tasks.gin, a shared + task composition included):
every bank entry is exported as its own plain prompt, exactly as it enters the encoder for
its prompt id (the shared prompt folded in): `prompts/<name>.npy` `[m, e]` and
`inference_<name>.gin` (the single-prompt inference gin for that file), names from the
run's task list (MIXED_TASKS, PROMPT_NAMES of ensemble.gin) or `prompt_<i>`; `export.json`
lists them (`prompts`: name, prompt id, files, shape). Include an `inference_<name>.gin`
without mixed_tasks.gin / ensemble.gin: it serves that one prompt on plain text (no id
token). `--verify` checks every entry against the bank model with that id.

Only the prompt's parameters are read (the frozen model is not loaded unless `--verify`).
MODEL_DIR may also be a `t5x/train.py` run (gin/t5x/ files) or one of its `checkpoint_<N>`
directories: give our own method file with the run's settings (e.g. `ept.gin`, the same
PROMPT_LENGTH / EPT_HIDDEN); 'best' is then the latest step (T5X keeps no best).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import gin_utils
from .analysis.param_counts import format_param_counts, param_counts
from .analysis.prompt_similarity import plot_prompt_similarity
from .prompts import bank as bank_lib
from .prompts import initializers
from .prompts.soft_prompt import SoftPrompt
from .training.params import (DEFAULT_TRAINABLE_REGEX, flatten, merge_params, split_params,
                              unflatten)

logger = logging.getLogger("xprompt_jax")

PROMPT_FILE = "prompt.npy"
BANK_PROMPTS_DIR = "prompts"  # a bank's prompts/<name>.npy
INFERENCE_GIN = "inference.gin"
EXPORT_JSON = "export.json"
SIMILARITY_PNG = "prompt_similarity.png"
EXPORT_FORMATS = ("npy", "peft")
# Shapes of params do not depend on sequence lengths: a small dummy batch is enough.
_FEATURE_LENGTHS = {"inputs": 4, "targets": 2}


# ----------------------------------------------------------------------------- pieces
def projected_prompt(model, variables: Mapping[str, Any]) -> np.ndarray:
    """The prompt as it enters the encoder, `[n, e]` float32 (the frozen model's params may
    be absent from `variables`). Per-example prompts (`[B, m, e]`) cannot be exported."""
    tokens = np.asarray(jax.device_get(model.apply(dict(variables), method=model.prompt_tokens)),
                        np.float32)
    if tokens.ndim != 2:
        raise ValueError(f"the prompt module returns shape {tokens.shape}; only a prompt "
                         "shared by all examples ([n, e]) can be exported")
    return tokens


def inference_model(model, prompt) -> Any:
    """`model` with its prompt module replaced by `SoftPrompt(n)` initialized to `prompt`."""
    prompt = np.asarray(prompt, np.float32)
    return model.clone(prompt=SoftPrompt(length=prompt.shape[0],
                                         init=initializers.from_array(prompt, "exported prompt")))


def inference_variables(variables: Mapping[str, Any], prompt) -> Dict[str, Any]:
    """`variables` with `params['prompt']` replaced by `{'prompt': prompt}` (the
    network dropped), for `inference_model`."""
    out = {k: v for k, v in variables.items() if k != "params_axes"}
    params = dict(out["params"])
    params["prompt"] = {"prompt": jnp.asarray(prompt, jnp.float32)}
    out["params"] = params
    return out


def inference_gin_text(prompt_path: str, length: int, method: str) -> str:
    """The inference gin file: MODEL = PromptedT5 + SoftPrompt(length) from `prompt_path`."""
    return f"""\
# Inference config written by `python -m xprompt_jax.export`: the projected prompt of a
# {method} run, as a plain SoftPrompt (no reparameterization network) loaded from
# {os.path.basename(prompt_path)}.
#
# Provides: MODEL (PromptedT5 + SoftPrompt), PROMPT_LENGTH ({length}), PROMPT_FILE,
#   PROMPT_INIT (from_file).
# Requires: MODEL_CONFIG (a models/*.gin file first); the run settings of a method file.
# Include order: models/<size>.gin -> the run's method file (or prompt_tuning.gin) -> this
#   file -> flags (--gin.PROMPT_FILE=... if the .npy file has moved).
from __gin__ import dynamic_registration
from xprompt_jax.models import prompted
from xprompt_jax.prompts import soft_prompt

include 'prompts/from_file.gin'

PROMPT_FILE = {str(prompt_path)!r}
PROMPT_LENGTH = {int(length)}
MODEL = @prompted.PromptedT5()
prompted.PromptedT5:
  config = %MODEL_CONFIG
  prompt = @soft_prompt.SoftPrompt()
soft_prompt.SoftPrompt:
  length = %PROMPT_LENGTH
  init = %PROMPT_INIT
"""


def _module_settings(module) -> Dict[str, Any]:
    out = {}
    for field in dataclasses.fields(module):
        if field.name in ("parent", "name", "init"):
            continue
        value = getattr(module, field.name)
        out[field.name] = value if isinstance(value, (bool, int, float, str, type(None))) \
            else repr(value)
    return out


def peft_prompt(model, variables: Mapping[str, Any], prompt) -> tuple:
    """What a PEFT prompt-tuning adapter can hold of the exported `prompt` `[n, e]`:
    `(tokens [n', e], info)`. Tokens the prompt module removes from attention (XPrompt's
    `token_prune_mode='remove'`) are dropped - PEFT attends to every virtual token; the
    tokens after them and the input then sit closer together, which changes T5's relative
    position biases, so the outputs are close to the trained model's but not identical.
    `info` records the dropped indices and notes for export.json."""
    prompt = np.asarray(prompt, np.float32)
    n = prompt.shape[0]
    keep = np.asarray(jax.device_get(model.apply(dict(variables), 1, n,
                                                 method=model.prompt_valid_mask)))[0]
    if not keep.any():
        raise ValueError("every prompt token is removed from attention: nothing to export")
    dropped = [int(i) for i in np.flatnonzero(~keep)]
    tokens = prompt[keep]
    notes = []
    if dropped:
        notes.append(f"{len(dropped)} of {n} prompt tokens are removed from attention by the "
                     f"prompt module (XPrompt token_prune_mode='remove'); PEFT attends to every "
                     f"virtual token, so they are dropped: the adapter holds the {len(tokens)} "
                     "surviving tokens of the masked prompt. Not identical to the trained "
                     "model: without the removed positions, later tokens and the input move "
                     "closer together, which changes T5's relative position biases")
    zero_rows = int(np.sum(~tokens.any(axis=-1)))
    if zero_rows:
        notes.append(f"{zero_rows} exported tokens are zero vectors (pruned with "
                     "token_prune_mode='zero'): kept, they take attention weight in PEFT as "
                     "in training")
    if type(model.prompt).__name__ not in ("SoftPrompt", "MaskedSoftPrompt", "FixedMaskPrompt"):
        notes.append(f"{type(model.prompt).__name__}: the projected prompt is exported; PEFT's "
                     "prompt-tuning adapter has no reparameterization network")
    notes.append("the adapter prefixes the encoder only (num_transformer_submodules: 1); "
                 "PeftModel.from_pretrained needs the same frozen T5 weights in HF format")
    return tokens, {"num_virtual_tokens": int(tokens.shape[0]), "dropped_tokens": dropped,
                    "notes": notes}


# ----------------------------------------------------------------------------- export
def export_prompt(model, variables: Mapping[str, Any], output_dir: str, *,
                  trainable_regex: str = DEFAULT_TRAINABLE_REGEX, plot: bool = True,
                  extra_info: Optional[Mapping[str, Any]] = None, export_format: str = "npy",
                  peft_base_model: Optional[str] = None) -> Dict[str, Any]:
    """Writes `prompt.npy`, `inference.gin`, `export.json` (and `prompt_similarity.png` if
    `plot`) for a prompted `model` with (trained) `variables` into `output_dir`;
    `export_format='peft'` adds a PEFT prompt-tuning adapter (`peft_prompt`) there, with
    `base_model_name_or_path=peft_base_model`.

    Returns the JSON record, plus `'prompt'`: the exported `[n, e]` array."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export format {export_format!r}; expected one of {EXPORT_FORMATS}")
    prompt = projected_prompt(model, variables)
    counts = param_counts(model, variables, trainable_regex)
    method = type(model.prompt).__name__
    output_dir = os.path.abspath(os.fspath(output_dir))
    files = {"prompt": os.path.join(output_dir, PROMPT_FILE),
             "inference_gin": os.path.join(output_dir, INFERENCE_GIN),
             "json": os.path.join(output_dir, EXPORT_JSON)}
    if plot:
        files["similarity_png"] = os.path.join(output_dir, SIMILARITY_PNG)
    record = {
        "method": method,
        "prompt_settings": _module_settings(model.prompt),
        "prompt_shape": list(prompt.shape),
        "param_counts": counts,
        "prompt_mean_norm": float(np.mean(np.linalg.norm(prompt.astype(np.float64), axis=-1))),
        "files": files,
        **dict(extra_info or {}),
    }
    if export_format == "peft":
        peft_tokens, record["peft"] = peft_prompt(model, variables, prompt)
        record["peft"]["base_model_name_or_path"] = peft_base_model
    if jax.process_index() == 0:
        os.makedirs(output_dir, exist_ok=True)
        if export_format == "peft":
            from .checkpoints.peft_adapter import write_peft_adapter

            files.update(write_peft_adapter(
                output_dir, peft_tokens, base_model_name_or_path=peft_base_model,
                num_attention_heads=model.config.num_heads,
                num_layers=model.config.num_encoder_layers))
        np.save(files["prompt"], prompt, allow_pickle=False)
        with open(files["inference_gin"], "w") as f:
            f.write(inference_gin_text(files["prompt"], prompt.shape[0], method))
        if plot:
            plot_prompt_similarity(prompt, files["similarity_png"],
                                   title=f"{method}: prompt token cosine similarity")
        with open(files["json"], "w") as f:
            json.dump(record, f, indent=2, sort_keys=True, default=str)
    return {**record, "prompt": prompt}


def bank_prompts(model, variables: Mapping[str, Any]) -> np.ndarray:
    """Every entry of the model's PromptBank as it enters the encoder, `[N, m, e]` float32
    (a composed bank's shared prompt folded in)."""
    tokens = np.asarray(jax.device_get(model.apply(dict(variables),
                                                   method=model.prompt_tokens)), np.float32)
    return tokens[None] if tokens.ndim == 2 else tokens  # a bank of one gives [m, e]


def export_bank(model, variables: Mapping[str, Any], output_dir: str, *,
                prompt_names: Optional[Sequence[str]] = None,
                trainable_regex: str = DEFAULT_TRAINABLE_REGEX,
                extra_info: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Writes `prompts/<name>.npy` `[m, e]` and `inference_<name>.gin` per bank entry and
    `export.json` for a PromptBank `model` (module docstring). Returns the JSON record,
    plus `'prompts'`'s arrays under `'arrays'` (`{name: [m, e]}`)."""
    num = bank_lib.num_prompts(model)
    bank = model.prompt
    if hasattr(type(bank.prompt), "position_mask"):
        raise ValueError(f"bank export: {type(bank.prompt).__name__} removes prompt positions "
                         "from attention, which a plain SoftPrompt can not express")
    names = list(prompt_names) if prompt_names else [f"prompt_{i}" for i in range(num)]
    if len(names) != num or len(set(names)) != num:
        raise ValueError(f"bank export: {len(names)} prompt names {names} for a bank of "
                         f"{num} prompts (one distinct name each)")
    prompts = bank_prompts(model, variables)
    counts = param_counts(model, variables, trainable_regex)
    method = f"PromptBank({type(bank.prompt).__name__})"
    output_dir = os.path.abspath(os.fspath(output_dir))
    entries = []
    for i, name in enumerate(names):
        entries.append({
            "name": name, "prompt_id": i, "shape": list(prompts[i].shape),
            "mean_norm": float(np.mean(np.linalg.norm(prompts[i].astype(np.float64), axis=-1))),
            "file": os.path.join(output_dir, BANK_PROMPTS_DIR, f"{name}.npy"),
            "inference_gin": os.path.join(output_dir, f"inference_{name}.gin")})
    record = {
        "method": method,
        "num_prompts": num,
        "composition": getattr(bank, "composition", None),
        "prompt_settings": _module_settings(bank.prompt),
        "prompt_shape": list(prompts.shape[1:]),
        "param_counts": counts,
        "prompts": entries,
        "files": {"json": os.path.join(output_dir, EXPORT_JSON),
                  "prompts_dir": os.path.join(output_dir, BANK_PROMPTS_DIR)},
        **dict(extra_info or {}),
    }
    if jax.process_index() == 0:
        os.makedirs(os.path.join(output_dir, BANK_PROMPTS_DIR), exist_ok=True)
        for i, entry in enumerate(entries):
            np.save(entry["file"], prompts[i], allow_pickle=False)
            with open(entry["inference_gin"], "w") as f:
                f.write(f"# Prompt id {i} ({entry['name']}) of a {method} run (composition: "
                        f"{record['composition']}), as it\n# enters the encoder. Include it "
                        "without mixed_tasks.gin / ensemble.gin: inputs carry no id token.\n")
                f.write(inference_gin_text(entry["file"], prompts.shape[1], method))
        with open(record["files"]["json"], "w") as f:
            json.dump(record, f, indent=2, sort_keys=True, default=str)
    return {**record, "arrays": {name: prompts[i] for i, name in enumerate(names)}}


def _check_batch(vocab: int, seed: int):
    """A random batch of 2 examples for the `--verify` logit checks: encoder tokens `[2, 8]`
    (the second padded after 5), decoder inputs and targets `[2, 4]`."""
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, vocab, (2, 8))
    enc[1, 5:] = 0
    tgt = rng.randint(2, vocab, (2, 4))
    dec = np.concatenate([np.zeros((2, 1), tgt.dtype), tgt[:, :-1]], axis=1)
    return enc, dec, tgt


def max_bank_logit_difference(model, variables: Mapping[str, Any], prompts,
                              seed: int = 0) -> float:
    """Max over the entries i of |logits(bank model, id i) - logits(SoftPrompt with
    `prompts[i]`)| on a random batch of 2 examples (full `variables`, no dropout)."""
    enc, dec, tgt = _check_batch(model.config.vocab_size, seed)
    variables = {k: v for k, v in variables.items() if k != "params_axes"}
    base, num = bank_lib.id_token_base(model), bank_lib.num_prompts(model)
    diff = 0.0
    for i, prompt in enumerate(prompts):
        ids_enc = bank_lib.prepend_id_tokens(enc, i, base, num)
        trained = model.apply(variables, ids_enc, dec, tgt, enable_dropout=False)
        plain = inference_model(model, prompt).apply(inference_variables(variables, prompt),
                                                      enc, dec, tgt, enable_dropout=False)
        diff = max(diff, float(jnp.max(jnp.abs(trained.astype(jnp.float32)
                                               - plain.astype(jnp.float32)))))
    return diff


# ----------------------------------------------------------------------------- runs
def _dummy_args(model):
    from .training.trainer import dummy_batch

    batch = dummy_batch(_FEATURE_LENGTHS)
    return (batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"])


def abstract_trainable(model, trainable_regex: str = DEFAULT_TRAINABLE_REGEX) -> Dict[str, Any]:
    """Shapes/dtypes (`jax.ShapeDtypeStruct`) of the model's trainable params (no
    allocation)."""
    args = _dummy_args(model)
    abstract = jax.eval_shape(lambda r: model.init(r, *args, enable_dropout=False),
                              jax.random.PRNGKey(0))
    return split_params(abstract["params"], trainable_regex)[0]


def restore_trainable(model, model_dir: str, checkpoint: Union[str, int] = "best",
                      trainable_regex: str = DEFAULT_TRAINABLE_REGEX,
                      with_collections: bool = False):
    """The trainable params of a run's checkpoint ('best' (else latest) | 'latest' | step),
    checked against the model's; returns `(trainable, step)`, or
    `(trainable, step, collections)` (saved non-trainable collections, e.g. masks)."""
    from .training.trainer import restored_params_and_collections

    from .training.checkpointing import RunCheckpointer

    t5x_path = _t5x_run_checkpoint(model_dir, checkpoint)
    if t5x_path is not None:
        return _restore_t5x_trainable(model, t5x_path, trainable_regex, with_collections)
    checkpointer = RunCheckpointer(model_dir, read_only=True)
    if checkpoint == "best":
        step = checkpointer.best_step() or checkpointer.latest_step()
    elif checkpoint == "latest":
        step = checkpointer.latest_step()
    else:
        step = int(checkpoint)
    if step is None:
        raise FileNotFoundError(f"no checkpoint to export in {model_dir}")
    restored = checkpointer.restore(step)
    if restored is None:
        raise FileNotFoundError(f"checkpoint {step} not found in {model_dir}")
    saved, collections = restored_params_and_collections(restored[0])
    trainable = _checked_trainable(model, saved, trainable_regex, f"checkpoint {step} in {model_dir}")
    if with_collections:
        collections = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), collections)
        return trainable, int(step), collections
    return trainable, int(step)


def _t5x_run_checkpoint(model_dir: str, checkpoint: Union[str, int]) -> Optional[str]:
    """The T5X checkpoint directory to export when `model_dir` is a `t5x/train.py` run
    (`checkpoint_<N>/` directories, no `checkpoints/` of our own trainer) or one of its
    `checkpoint_<N>` directories; None otherwise. T5X keeps no best checkpoint: 'best' is
    the latest (export a numpy export of another step with `prompts/from_file.gin`)."""
    from .checkpoints import t5x as t5x_checkpoints

    if os.path.isdir(os.path.join(model_dir, "checkpoints")):
        return None
    if checkpoint not in ("best", "latest"):
        candidate = os.path.join(model_dir, f"checkpoint_{int(checkpoint)}")
        return candidate if os.path.isdir(candidate) else None
    try:
        t5x_checkpoints.find_t5x_checkpoint(model_dir)
    except FileNotFoundError:
        return None
    if t5x_checkpoints.latest_checkpoint_dir(model_dir) is None:
        return model_dir  # a checkpoint_<N> directory itself
    return t5x_checkpoints.latest_checkpoint_dir(model_dir)


def _restore_t5x_trainable(model, path: str, trainable_regex: str, with_collections: bool):
    """The trainable params of a T5X run checkpoint (read without t5x)."""
    from .checkpoints import load_t5x_checkpoint

    ckpt = load_t5x_checkpoint(path)
    saved, _ = split_params(ckpt.params, trainable_regex)
    trainable = _checked_trainable(model, saved, trainable_regex, f"T5X checkpoint {path}")
    logger.info("exporting the prompt of T5X checkpoint %s (step %s)", path, ckpt.step)
    if with_collections:
        return trainable, int(ckpt.step), {}
    return trainable, int(ckpt.step)


def _checked_trainable(model, saved, trainable_regex: str, what: str):
    """`saved` checked against the model's trainable params (names and shapes)."""
    expected = flatten(abstract_trainable(model, trainable_regex))
    got = flatten(dict(saved))
    if set(got) != set(expected):
        raise ValueError(f"{what} does not match the model's "
                         f"trainable params: missing {sorted(set(expected) - set(got))[:10]}, "
                         f"unexpected {sorted(set(got) - set(expected))[:10]} (same method gin "
                         "file and TRAINABLE_REGEX as the run?)")
    for key, spec in expected.items():
        if tuple(np.shape(got[key])) != tuple(spec.shape):
            raise ValueError(f"{what}: parameter {key} has shape "
                             f"{tuple(np.shape(got[key]))}, the model expects {tuple(spec.shape)}")
    return unflatten({k: jnp.asarray(np.asarray(got[k]), expected[k].dtype) for k in expected})


def max_logit_difference(model, variables: Mapping[str, Any], prompt,
                         batch: Optional[Mapping[str, Any]] = None, seed: int = 0) -> float:
    """Max |logits(trained module) - logits(SoftPrompt with `prompt`)| on `batch` (default:
    a random batch of 2 examples), without dropout. `variables` must hold the full model."""
    if batch is None:
        enc, dec, tgt = _check_batch(model.config.vocab_size, seed)
        batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
                 "decoder_target_tokens": tgt}
    args = (jnp.asarray(batch["encoder_input_tokens"]), jnp.asarray(batch["decoder_input_tokens"]),
            jnp.asarray(batch["decoder_target_tokens"]))
    variables = {k: v for k, v in variables.items() if k != "params_axes"}
    trained = model.apply(variables, *args, enable_dropout=False)
    exported = inference_model(model, prompt).apply(inference_variables(variables, prompt),
                                                    *args, enable_dropout=False)
    return float(jnp.max(jnp.abs(trained.astype(jnp.float32) - exported.astype(jnp.float32))))


def export_run(*, model, model_dir: str, output_dir: Optional[str] = None,
               checkpoint: Union[str, int] = "best",
               trainable_regex: str = DEFAULT_TRAINABLE_REGEX,
               initial_checkpoint_path: Optional[str] = None, checkpoint_format: str = "auto",
               mesh_shape: Sequence[int] = (-1, 1), verify: bool = False,
               plot: bool = True, export_format: str = "npy",
               peft_base_model: Optional[str] = None,
               prompt_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Exports the prompt of the run in `model_dir` (see the module docstring); for a
    PromptBank model every entry (`export_bank`, `prompt_names` naming them)."""
    gin_utils.check_required("export", dict(model=model, model_dir=model_dir))
    # The saved non-trainable collections (XPrompt masks) shape the exported prompt.
    trainable, step, collections = restore_trainable(model, model_dir, checkpoint,
                                                     trainable_regex, with_collections=True)
    variables = {"params": trainable, **collections}
    extra = {"checkpoint_step": step, "model_dir": os.path.abspath(model_dir)}
    if verify:
        variables, extra["verify_max_abs_logit_diff"] = _verify(
            model, trainable, initial_checkpoint_path, checkpoint_format, mesh_shape,
            trainable_regex)
        variables = {**variables, **collections}
    output_dir = output_dir or os.path.join(model_dir, "export")
    if bank_lib.num_prompts(model):
        if export_format != "npy":
            raise ValueError(f"--format={export_format}: a PromptBank exports .npy prompts "
                             "(export one of them to PEFT from its prompts/<name>.npy)")
        return export_bank(model, variables, output_dir, prompt_names=prompt_names,
                           trainable_regex=trainable_regex, extra_info=extra)
    return export_prompt(model, variables, output_dir, trainable_regex=trainable_regex,
                         plot=plot, extra_info=extra, export_format=export_format,
                         peft_base_model=peft_base_model or initial_checkpoint_path)


def _verify(model, trainable, initial_checkpoint_path, checkpoint_format, mesh_shape,
            trainable_regex):
    """Loads the frozen model, compares trained-module and exported-prompt logits."""
    from .train import frozen_shardings
    from .training import partitioning
    from .training.pretrained import load_pretrained_params
    from .training.trainer import init_variables

    if not initial_checkpoint_path:
        raise ValueError("--verify needs INITIAL_CHECKPOINT_PATH (the frozen model)")
    mesh = partitioning.make_mesh(tuple(mesh_shape))
    rules = partitioning.standard_logical_axis_rules()
    shardings = frozen_shardings(model, _FEATURE_LENGTHS, mesh, rules, trainable_regex)
    pretrained = load_pretrained_params(initial_checkpoint_path, checkpoint_format,
                                        shardings=shardings)
    with partitioning.activate(mesh, rules):
        variables = init_variables(model, pretrained, _FEATURE_LENGTHS, jax.random.PRNGKey(0))
    variables.pop("params_axes", None)
    _, frozen = split_params(variables["params"], trainable_regex)
    variables["params"] = merge_params(trainable, frozen)
    # Op by op, outside the mesh context: no fusion, so the two must agree exactly.
    if bank_lib.num_prompts(model):
        diff = max_bank_logit_difference(model, variables, bank_prompts(model, variables))
    else:
        diff = max_logit_difference(model, variables, projected_prompt(model, variables))
    if not diff <= 1e-5:
        raise RuntimeError(f"exported prompt does not reproduce the trained module's logits: "
                           f"max |difference| = {diff}")
    return variables, diff


# ----------------------------------------------------------------------------- CLI
_BINDINGS = """
from __gin__ import dynamic_registration
from xprompt_jax import export as export_lib
export_lib.export_run:
  model = %MODEL
  model_dir = %MODEL_DIR
  trainable_regex = %TRAINABLE_REGEX
  initial_checkpoint_path = %INITIAL_CHECKPOINT_PATH
  checkpoint_format = %CHECKPOINT_FORMAT
  mesh_shape = %MESH_SHAPE
"""


def _define_flags(flags) -> None:
    if "output_dir" not in flags.FLAGS:
        flags.DEFINE_string("output_dir", None, "export directory (default MODEL_DIR/export)")
        flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step")
        flags.DEFINE_bool("verify", False, "load the frozen model and check that the "
                          "exported prompt reproduces the trained module's logits")
        flags.DEFINE_enum("format", "npy", list(EXPORT_FORMATS), "'npy' (prompt.npy + "
                          "inference.gin) or 'peft' (also a Hugging Face PEFT prompt-tuning "
                          "adapter: adapter_config.json + adapter_model.safetensors)")
        flags.DEFINE_string("peft_base_model", None, "base_model_name_or_path of the PEFT "
                            "adapter (default: INITIAL_CHECKPOINT_PATH)")


def main(argv: Sequence[str]) -> None:
    import gin

    from .train import configure_from_argv

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    FLAGS = configure_from_argv(argv, extra_flags=_define_flags)
    gin.parse_config(_BINDINGS)
    from xprompt_jax import export as export_lib  # the registered function (not __main__'s)

    checkpoint = FLAGS.checkpoint
    if checkpoint not in ("best", "latest"):
        checkpoint = int(checkpoint)
    configured = gin.get_configurable(export_lib.export_run)
    names = run_prompt_names()
    record = gin_utils.call_configured(
        lambda: configured(output_dir=FLAGS.output_dir, checkpoint=checkpoint,
                           verify=FLAGS.verify, export_format=FLAGS.format,
                           peft_base_model=FLAGS.peft_base_model, prompt_names=names),
        "xprompt_jax.export",
        not_needed=("MIXTURE_OR_TASK_NAME",))  # only the prompt's parameters are read
    print(format_param_counts(record["param_counts"], record["method"]))
    keys = ("method", "prompt_shape", "checkpoint_step", "files") + (
        ("prompts",) if "prompts" in record else ())
    print(json.dumps({k: record[k] for k in keys}, indent=2))


def run_prompt_names() -> Optional[list]:
    """The names of a bank run's prompts in the parsed gin: `build_trainer.prompt_names`
    (PROMPT_NAMES of ensemble.gin), else `build_trainer.bank_tasks` (MIXED_TASKS of
    mixed_tasks.gin); None when neither is bound to a list."""
    for param in ("prompt_names", "bank_tasks"):
        for value in gin_utils.bound_values("build_trainer", param):
            if isinstance(value, (list, tuple)) and value and \
                    all(isinstance(v, str) for v in value):
                return list(value)
    return None


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.export")


if __name__ == "__main__":
    console_entry()
