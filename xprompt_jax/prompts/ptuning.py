"""`PTuningPrompt`: P-Tuning (Liu et al. 2021), with the architecture of HF PEFT's
`PromptEncoder` (`peft/tuners/p_tuning/model.py`), so the two can be compared numerically.

The raw prompt `P` `[n, e]` (PEFT: `embedding.weight`; PEFT looks up all n rows, so the
encoder input is `P` itself) goes through a network that is trained with it:

- `encoder='mlp'`: `Linear(e, H) -> ReLU -> Linear(H, H) -> ReLU -> Linear(H, e)`, all with
  bias (PEFT's `mlp_head.0/2/4`; here `mlp_0/1/2`).
- `encoder='lstm'`: a `lstm_layers`-layer (PEFT default 2) bidirectional LSTM with hidden H
  over the n tokens (`lstm`), then `Linear(2H, 2H) -> ReLU -> Linear(2H, e)` (PEFT's
  `mlp_head.0/2`; here `mlp_0/1`). PEFT's `encoder_dropout` (LSTM inter-layer dropout,
  default 0) is not supported.

`hidden` is PEFT's `encoder_hidden_size`; None means e (the original P-Tuning's choice).
Initialization: the raw prompt from `init` (default U[-0.5, 0.5]; PEFT draws N(0, 1) from
`nn.Embedding`); network weights and biases as PyTorch's defaults (`layers.torch_uniform`:
U[+-1/sqrt(fan_in)] for linear layers, U[+-1/sqrt(H)] for the LSTM).

Params (under the prompted model's `prompt/`): `prompt` `[n, e]`
`('prompt', 'prompt_embed')`; `mlp_<i>/kernel` `[in, out]`, `mlp_<i>/bias` `[out]`;
`lstm/layer_<k>_{forward,backward}/{w_ih, w_hh, b_ih, b_hh}` (see `lstm.py`).
`params_from_peft` converts a PEFT `PromptEncoder` state dict into this tree.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import initializers
from .layers import Dense, param
from .lstm import BiLSTM
from .soft_prompt import PROMPT_AXES

ENCODERS = ("mlp", "lstm")


class PTuningPrompt(nn.Module):
    """`[B, T, E]` -> projected prompt `[n, E]` float32 (see module docstring)."""

    length: int = 10
    encoder: str = "mlp"
    hidden: Optional[int] = None
    lstm_layers: int = 2
    init: Callable = initializers.uniform()

    def _check(self):
        if self.length <= 0:
            raise ValueError(f"PTuningPrompt.length must be positive, got {self.length}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"PTuningPrompt.encoder must be one of {ENCODERS}, got "
                             f"{self.encoder!r}")
        if self.hidden is not None and self.hidden <= 0:
            raise ValueError(f"PTuningPrompt.hidden must be positive (or None for the embed "
                             f"size), got {self.hidden}")

    @nn.compact
    def __call__(self, embedded: jnp.ndarray) -> jnp.ndarray:
        self._check()
        embed = embedded.shape[-1]
        hidden = self.hidden or embed
        raw = param(self, "prompt", self.init, (self.length, embed), PROMPT_AXES)  # [n, e]
        if self.encoder == "mlp":
            x = jax.nn.relu(Dense(hidden, kernel_axes=("prompt_embed", "prompt_hidden"),
                                  name="mlp_0")(raw))
            x = jax.nn.relu(Dense(hidden, kernel_axes=("prompt_hidden_in", "prompt_hidden"),
                                  name="mlp_1")(x))
            return Dense(embed, kernel_axes=("prompt_hidden", "prompt_embed"), name="mlp_2")(x)
        x = BiLSTM(hidden, self.lstm_layers, name="lstm")(raw)  # [n, 2H]
        x = jax.nn.relu(Dense(2 * hidden, kernel_axes=("prompt_hidden_in", "prompt_hidden"),
                              name="mlp_0")(x))
        return Dense(embed, kernel_axes=("prompt_hidden", "prompt_embed"), name="mlp_1")(x)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float32)


_LSTM_KEY = re.compile(r"^lstm_head\.(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$")


def params_from_peft(state_dict: Mapping[str, Any], encoder: str,
                     prefix: str = "") -> Dict[str, Any]:
    """A PEFT `PromptEncoder` state dict (`embedding.weight`, `mlp_head.<i>.weight|bias`,
    `lstm_head.weight_ih_l<k>[_reverse]`, ...; keys after `prefix`, e.g.
    `'prompt_encoder.default.'` for a whole PEFT model) -> this module's params tree
    (torch `[out, in]` weights transposed to `[in, out]` kernels).

    Raises ValueError naming missing or unrecognized keys (PEFT checkpoints saved with
    `save_pretrained` hold only `embedding.weight`: the network is lost there)."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    items = {k[len(prefix):]: _to_numpy(v) for k, v in state_dict.items() if k.startswith(prefix)}
    mlp_names = ({"0": "mlp_0", "2": "mlp_1", "4": "mlp_2"} if encoder == "mlp"
                 else {"0": "mlp_0", "2": "mlp_1"})
    out: Dict[str, Any] = {}
    unknown = []
    for key, value in items.items():
        if key == "embedding.weight":
            out["prompt"] = value
            continue
        match = re.fullmatch(r"mlp_head\.(\d+)\.(weight|bias)", key)
        if match and match.group(1) in mlp_names:
            layer = out.setdefault(mlp_names[match.group(1)], {})
            layer["kernel" if match.group(2) == "weight" else "bias"] = (
                value.T if match.group(2) == "weight" else value)
            continue
        match = _LSTM_KEY.fullmatch(key)
        if match and encoder == "lstm":
            kind, which, layer_index, reverse = match.groups()
            name = f"layer_{layer_index}_{'backward' if reverse else 'forward'}"
            direction = out.setdefault("lstm", {}).setdefault(name, {})
            direction[("w_" if kind == "weight" else "b_") + which] = (
                value.T if kind == "weight" else value)
            continue
        unknown.append(key)
    if unknown:
        raise ValueError(f"params_from_peft(encoder={encoder!r}): unrecognized keys "
                         f"{sorted(unknown)}")
    missing = [name for name in ["prompt", *mlp_names.values()] if name not in out]
    if encoder == "lstm" and "lstm" not in out:
        missing.append("lstm")
    if missing:
        raise ValueError(f"params_from_peft(encoder={encoder!r}): the state dict lacks "
                         f"{missing} (keys given: {sorted(items)[:12]})")
    return jax.tree_util.tree_map(jnp.asarray, out)
