"""Trainable versus inference parameter counts of a prompt method (EPT's Table 1,
"param/task").

Training a reparameterized prompt updates the raw prompt and its network (`trainable`);
at inference only the projected prompt is kept, since the network's output can be computed
once and stored (see `xprompt_jax.export`): `inference` = n * e, or e for a prompt whose n
rows are one broadcast vector (EPT / EPT*: the paper's "2.3K/768", Table 4), which declares
it by `inference_rows()`; `inference_exported` = n * e, the size of the exported `[n, e]`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import jax
import numpy as np

from ..training.params import DEFAULT_TRAINABLE_REGEX, flatten, split_params


def param_counts(model, variables: Mapping[str, Any],
                 trainable_regex: str = DEFAULT_TRAINABLE_REGEX) -> Dict[str, Any]:
    """Counts for a prompted `model` with `variables` (`{'params': ...}`; the frozen model's
    params may be absent: only the prompt's shape is evaluated).

    Returns `{'trainable': int, 'inference': int, 'inference_exported': int,
    'prompt_shape': [n, e], 'trainable_by_param': {path: size}}`: trainable = every param
    whose '/'-joined path matches `trainable_regex` (fully), inference_exported = the size
    of `model.prompt_tokens()`, inference = the rows the prompt module stores
    (`inference_rows()`, default n) x e.
    """
    params = variables.get("params")
    if params is None:
        raise ValueError("param_counts: variables have no 'params' collection")
    trainable, _ = split_params(params, trainable_regex)
    by_param = {path: int(np.size(v)) for path, v in sorted(flatten(trainable).items())}
    tokens = jax.eval_shape(lambda v: model.apply(v, method=model.prompt_tokens), dict(variables))
    shape = [int(s) for s in tokens.shape]
    rows_fn = getattr(getattr(model, "prompt", None), "inference_rows", None)
    rows = int(rows_fn()) if rows_fn is not None else shape[0]
    return {"trainable": int(sum(by_param.values())), "inference": rows * shape[-1],
            "inference_exported": int(np.prod(shape)),
            "prompt_shape": shape, "trainable_by_param": by_param}


def format_param_counts(counts: Mapping[str, Any], name: str = "prompt") -> str:
    """One line, e.g. `EPTPrompt: trainable 1,536 / inference 512 (prompt [1, 512])`."""
    shape = ", ".join(str(s) for s in counts["prompt_shape"])
    return (f"{name}: trainable {counts['trainable']:,} / inference {counts['inference']:,} "
            f"(prompt [{shape}])")
