"""The one frozen-model loader: a pretrained checkpoint read straight onto the shardings of
the model's logical axes (as the trainer places them), then initialised with
`training.frozen_model.initialize`.

Train, evaluate, ensemble, infer, export (`--verify`) and XPrompt's T5X stage 2 all load the
frozen model here: `load_pretrained` gives the sharded parameter tree (what the trainer
takes), `load_frozen_model` the whole `FrozenModel` (frozen variables + initial trainable
params) for runs that do not train. Parameters the checkpoint has that the frozen model
does not name (the prompt inside a T5X *run* checkpoint) are read to the host and placed
with the trainable shardings.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax

from ..checkpoints import tree as tree_lib
from ..checkpoints.pretrained import load_pretrained_params
from ..training import partitioning
from ..training.frozen_model import (FrozenModel, FrozenModelConfig, abstract_variables,
                                     initialize)
from ..training.params import split_params


def frozen_shardings(model, feature_lengths: Mapping[str, int], config: FrozenModelConfig
                     ) -> Callable[[str], Optional[Any]]:
    """`path -> Sharding | None` of the frozen params (from the model's logical axes) for
    the checkpoint loaders; None for parameters outside the frozen model."""
    abstract = abstract_variables(model, feature_lengths)
    shardings = partitioning.param_shardings(abstract["params"], abstract.get("params_axes"),
                                             config.mesh(), config.rules())
    frozen = split_params(shardings, config.trainable_regex)[1]
    flat = {tree_lib.path_str(p): s for p, s in tree_lib.flatten(frozen).items()}
    return lambda path: flat.get(path)


def load_pretrained(model, config: FrozenModelConfig, feature_lengths: Mapping[str, int]):
    """The T5X-named parameter tree of `config.initial_checkpoint_path`, sharded; None
    when no checkpoint is configured (the model is then initialised at random)."""
    if not config.initial_checkpoint_path:
        return None
    return load_pretrained_params(config.initial_checkpoint_path, config.checkpoint_format,
                                  shardings=frozen_shardings(model, feature_lengths, config))


def load_frozen_model(model, config: FrozenModelConfig, feature_lengths: Mapping[str, int],
                      seed: int = 0) -> FrozenModel:
    """`model` on the mesh with the pretrained weights of `config` (the trainable params
    freshly initialised from `seed`, unless the checkpoint holds them)."""
    pretrained = load_pretrained(model, config, feature_lengths)
    return initialize(model, pretrained, feature_lengths, config, jax.random.PRNGKey(seed))
