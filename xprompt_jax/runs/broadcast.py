"""EPT's Figure 4: one token P_i of a trained prompt broadcast to a prompt of its own,
P_c = [P_i, P_i, ..., P_i] `[l, e]`, scored for each concatenated length l on the run's
evaluation split with no training (the paper: "selecting one P_i from original soft prompts
P and concatenating it"). The trained prompt is a `[n, e]` `.npy` (export's prompt.npy or a
numpy checkpoint: the prompt as it enters the encoder, so any method's projected prompt).

`evaluate_broadcast(run, prompt_file, token, lengths)` loads the frozen model once, scores
each P_c as a plain soft prompt of length l, writes MODEL_DIR/broadcast_results.json and
broadcast_report.md (length -> main metric, the full prompt's row for reference) and
returns the results.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..evaluation.evaluator import Evaluator
from ..fileio import is_writer, jsonable_loose, write_json_atomic, write_text_atomic
from ..markdown import cell
from ..prompts import initializers
from ..prompts.soft_prompt import SoftPrompt
from .config import RunConfig
from .flags import import_task_module
from .frozen import load_frozen_model
from .prompt_files import stack_prompt_files


def broadcast_prompt(prompt: np.ndarray, token: int, length: int) -> np.ndarray:
    """`[length, e]`: row `token` of `prompt` `[n, e]` repeated `length` times."""
    prompt = np.asarray(prompt, np.float32)
    if not 0 <= token < prompt.shape[0]:
        raise ConfigError(f"broadcast token {token}: the prompt has {prompt.shape[0]} "
                          f"tokens (0..{prompt.shape[0] - 1})")
    if length < 1:
        raise ConfigError(f"broadcast length {length}: expected >= 1")
    return np.repeat(prompt[token:token + 1], length, axis=0)


def _soft_prompt_model(model, prompt: np.ndarray):
    return model.clone(prompt=SoftPrompt(prompt.shape[0], initializers.from_array(prompt)))


def evaluate_broadcast(run: RunConfig, prompt_file: str, token: int = 0,
                       lengths: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Scores P_c = [P_token] * l for each l of `lengths` (default 1..n) and the full
    prompt; writes the results to MODEL_DIR (module docstring)."""
    import_task_module(run.task_module, run.task_name)
    prompt = stack_prompt_files([prompt_file])[0]                      # [n, e]
    if prompt.shape[1] != run.model.config.emb_dim:
        raise ConfigError(f"{prompt_file}: embedding size {prompt.shape[1]}; the model's is "
                          f"{run.model.config.emb_dim}")
    lengths = list(lengths) if lengths else list(range(1, prompt.shape[0] + 1))
    frozen = load_frozen_model(_soft_prompt_model(run.model, prompt), run.frozen,
                               run.feature_lengths, run.data.seed)

    def score(p: np.ndarray) -> Dict[str, Any]:
        model = _soft_prompt_model(run.model, p)
        evaluator = Evaluator(model, run.task_name, run.feature_lengths, run.evaluation)
        with frozen.activate():
            return evaluator.evaluate(frozen.variables({"prompt": {"prompt": jnp.asarray(p)}}))

    rows: List[Dict[str, Any]] = []
    for length in lengths:
        result = score(broadcast_prompt(prompt, token, length))
        rows.append({"length": int(length), "main_metric": result["main_metric"],
                     "metrics": result["metrics"],
                     "predictions_sample": result["predictions_sample"]})
    full = score(prompt)
    out = {"task": run.task_name, "prompt_file": prompt_file, "token": int(token),
           "mode": run.evaluation.mode, "split": run.evaluation.split, "broadcast": rows,
           "full_prompt": {"length": int(prompt.shape[0]), "main_metric": full["main_metric"],
                           "metrics": full["metrics"]}}
    if is_writer():
        write_json_atomic(os.path.join(run.model_dir, "broadcast_results.json"),
                          jsonable_loose(out))
        write_text_atomic(os.path.join(run.model_dir, "broadcast_report.md"),
                          broadcast_markdown(out))
    return out


def broadcast_markdown(result: Dict[str, Any]) -> str:
    """EPT Figure 4 as a table: concatenated length -> main metric, then the full prompt."""
    lines = [f"# Broadcast prompts of token {result['token']} on {result['task']} "
             f"({result['mode']}, split {result['split']})", "",
             "| prompt | length | main metric |", "|---|---|---|"]
    for row in result["broadcast"]:
        lines.append(f"| [P_{result['token']}] x {row['length']} | {row['length']} | "
                     f"{cell(row['main_metric'], missing='n/a')} |")
    full = result["full_prompt"]
    lines += [f"| full prompt | {full['length']} | {cell(full['main_metric'], missing='n/a')} |",
              ""]
    return "\n".join(lines)
