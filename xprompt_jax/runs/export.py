"""Export a trained prompt for inference: the prompt as it enters the encoder `[n, e]` as
`.npy`, an inference gin file that loads it into a plain `SoftPrompt` (no reparameterization
network), parameter counts and a token-similarity heatmap.

Writes to the output directory (default MODEL_DIR/export):
- `prompt.npy`: float32 `[n, e]`, the prompt exactly as it enters the encoder
  (`PromptedT5.prompt_tokens()`).
- `inference.gin`: include after the model and method files (e.g. `models/<size>.gin ->
  ept.gin (or prompt_tuning.gin) -> <output_dir>/inference.gin`); sets MODEL to
  PromptedT5 with `SoftPrompt(length=n)` initialized from `prompt.npy`
  (`prompts/from_file.gin`), so the exported prompt is put in place at init.
- `export.json`: method and its settings, prompt shape, `param_counts` (trainable vs
  inference, per parameter), the prompt's mean token L2 norm, the checkpoint step.
- `prompt_similarity.png`: cosine similarity of the prompt tokens (EPT's Figure 3).
- with `export_format='peft'`, also `adapter_config.json` and `adapter_model.safetensors`: the
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
run's bank settings (MIXED_TASKS, PROMPT_NAMES of ensemble.gin) or `prompt_<i>`;
`export.json` lists them (`prompts`: name, prompt id, files, shape). Include an
`inference_<name>.gin` without mixed_tasks.gin / ensemble.gin: it serves that one prompt on
plain text (no id token). `verify` checks every entry against the bank model with that id.

Only the prompt's parameters are read (the frozen model is not loaded unless `verify`).
MODEL_DIR may also be a `t5x/train.py` run or one of its `checkpoint_<N>` directories
(`restore.py`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from .. import gin_utils, interrupts
from ..analysis.param_counts import param_counts
from ..analysis.prompt_similarity import plot_prompt_similarity
from ..errors import ConfigError
from ..fileio import (absolute, check_name, is_writer, jsonable_loose, save_npy_atomic,
                      staged_files, write_json_atomic, write_text_atomic)
from ..models.prompted import projected_prompt
from ..prompts import bank as bank_lib
from ..prompts import initializers
from ..prompts.soft_prompt import SoftPrompt
from ..training.params import DEFAULT_TRAINABLE_REGEX
from .build import bank_config
from .config import RunConfig
from .frozen import load_frozen_model
from .restore import SHAPE_FEATURE_LENGTHS, restore_trainable, t5x_run_checkpoint

PROMPT_FILE = "prompt.npy"
BANK_PROMPTS_DIR = "prompts"  # a bank's prompts/<name>.npy
INFERENCE_GIN = "inference.gin"
EXPORT_JSON = "export.json"
SIMILARITY_PNG = "prompt_similarity.png"
EXPORT_FORMATS = ("npy", "peft")


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
    output_dir = absolute(output_dir)  # a gs:// URL stays one
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
    if is_writer():
        # All files or none: an interrupted or failed export leaves an earlier one whole.
        with staged_files(output_dir, "export", last=EXPORT_JSON) as stage:
            def staged(key):
                return os.path.join(stage, os.path.basename(files[key]))

            if export_format == "peft":
                from ..checkpoints.peft_adapter import write_peft_adapter

                written = write_peft_adapter(
                    stage, peft_tokens, base_model_name_or_path=peft_base_model,
                    num_attention_heads=model.config.num_heads,
                    num_layers=model.config.num_encoder_layers)
                files.update({k: os.path.join(output_dir, os.path.basename(v))
                              for k, v in written.items()})
            save_npy_atomic(staged("prompt"), prompt)
            write_text_atomic(staged("inference_gin"),
                              inference_gin_text(files["prompt"], prompt.shape[0], method))
            if plot:
                plot_prompt_similarity(prompt, staged("similarity_png"),
                                       title=f"{method}: prompt token cosine similarity")
            write_json_atomic(staged("json"), jsonable_loose(record))
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
    for i, name in enumerate(names):  # each becomes a file name and a gin comment line
        check_name(name, f"bank export: prompt name #{i}")
    if len(names) != num or len(set(names)) != num:
        raise ValueError(f"bank export: {len(names)} prompt names {names} for a bank of "
                         f"{num} prompts (one distinct name each)")
    prompts = bank_prompts(model, variables)
    counts = param_counts(model, variables, trainable_regex)
    method = f"PromptBank({type(bank.prompt).__name__})"
    output_dir = absolute(output_dir)
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
    if is_writer():
        # All files or none: an interrupted or failed export leaves an earlier one whole.
        with staged_files(output_dir, "export", last=EXPORT_JSON) as stage:
            def staged(path):
                return os.path.join(stage, os.path.relpath(path, output_dir))

            for i, entry in enumerate(entries):
                save_npy_atomic(staged(entry["file"]), prompts[i])
                write_text_atomic(staged(entry["inference_gin"]), (
                    f"# Prompt id {i} ({entry['name']}) of a {method} run (composition: "
                    f"{record['composition']}), as it\n# enters the encoder. Include it "
                    "without mixed_tasks.gin / ensemble.gin: inputs carry no id token.\n")
                    + inference_gin_text(entry["file"], prompts.shape[1], method))
            write_json_atomic(staged(record["files"]["json"]), jsonable_loose(record))
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


def export_run(run: RunConfig, *, output_dir: Optional[str] = None,
               checkpoint: Union[str, int] = "best", verify: bool = False, plot: bool = True,
               export_format: str = "npy", peft_base_model: Optional[str] = None
               ) -> Dict[str, Any]:
    """Exports the prompt of the run in `run.model_dir` (module docstring); for a PromptBank
    model every entry (`export_bank`, named by the run's bank settings)."""
    output_dir = output_dir or os.path.join(run.model_dir, "export")
    with interrupts.phase(f"the export to {output_dir}",
                          "nothing of this export was written, an earlier export there is "
                          "unchanged; rerun the same command to export"):
        return _export_run(run, output_dir, checkpoint, verify, plot, export_format,
                           peft_base_model)


def _export_run(run: RunConfig, output_dir: str, checkpoint, verify: bool, plot: bool,
                export_format: str, peft_base_model: Optional[str]) -> Dict[str, Any]:
    model = run.model
    gin_utils.check_required("export", {"model": model, "model_dir": run.model_dir})
    regex = run.frozen.trainable_regex
    # The saved non-trainable collections (XPrompt masks) shape the exported prompt.
    restored = restore_trainable(model, run.model_dir, checkpoint, regex)
    variables = {"params": restored.trainable, **restored.collections}
    extra = {"checkpoint_step": restored.step, "model_dir": absolute(run.model_dir)}
    if verify:
        variables, extra["verify_max_abs_logit_diff"] = verified_variables(
            run, restored, t5x_run_checkpoint(run.model_dir, checkpoint))
    if bank_lib.num_prompts(model):
        if export_format != "npy":
            raise ValueError(f"--format={export_format}: a PromptBank exports .npy prompts "
                             "(export one of them to PEFT from its prompts/<name>.npy)")
        return export_bank(model, variables, output_dir, prompt_names=bank_config(run).names(
            model), trainable_regex=regex, extra_info=extra)
    return export_prompt(model, variables, output_dir, trainable_regex=regex, plot=plot,
                         extra_info=extra, export_format=export_format,
                         peft_base_model=peft_base_model or run.frozen.initial_checkpoint_path)


def verified_variables(run: RunConfig, restored, t5x_checkpoint: Optional[str] = None
                       ) -> tuple:
    """(full variables, max |logit difference|): the frozen model loaded, the trained
    module's logits compared with the exported prompt's in a plain SoftPrompt model.

    The frozen model comes from INITIAL_CHECKPOINT_PATH; for a `t5x/train.py` run without
    it, from the run's own checkpoint `t5x_checkpoint` (a T5X run checkpoint holds the
    whole model: the frozen weights it was trained on and the prompt)."""
    frozen_config = run.frozen
    if not frozen_config.initial_checkpoint_path:
        if not t5x_checkpoint:
            raise ConfigError("--verify needs INITIAL_CHECKPOINT_PATH (the frozen model)")
        frozen_config = dataclasses.replace(frozen_config, initial_checkpoint_path=t5x_checkpoint,
                                            checkpoint_format="t5x")
    frozen = load_frozen_model(run.model, frozen_config, SHAPE_FEATURE_LENGTHS)
    variables = frozen.variables(restored.trainable, restored.collections)
    # Op by op, outside the mesh context: no fusion, so the two must agree exactly.
    if bank_lib.num_prompts(run.model):
        diff = max_bank_logit_difference(run.model, variables,
                                         bank_prompts(run.model, variables))
    else:
        diff = max_logit_difference(run.model, variables,
                                    projected_prompt(run.model, variables))
    if not diff <= 1e-5:
        raise RuntimeError(f"exported prompt does not reproduce the trained module's logits: "
                           f"max |difference| = {diff}")
    return variables, diff
