"""The frozen model and its trainable part, initialised and placed on the mesh.

`FrozenModelConfig` says where the frozen weights come from (INITIAL_CHECKPOINT_PATH,
CHECKPOINT_FORMAT), which parameters train (TRAINABLE_REGEX), the frozen weights' dtype
(FROZEN_DTYPE) and how the mesh is laid out (MESH_SHAPE, T5X's partitioning dims).
`initialize(model, pretrained_params, ...)` is the one recipe from a pretrained parameter
tree to a `FrozenModel`: the model's variables with the pretrained weights in place and only
the missing ones (the prompt) freshly initialised (`init_variables`), split into trainable
and frozen parameters, the frozen part cast and sharded by its logical axes, the other
collections (e.g. XPrompt's `prompt_masks`) replicated. The trainer builds on it; reading
a checkpoint into `pretrained_params` is `runs/frozen.py`'s job.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from ..errors import CheckpointError
from . import partitioning
from .params import DEFAULT_TRAINABLE_REGEX, cast_tree, flatten, merge_params, split_params


@dataclasses.dataclass(frozen=True)
class FrozenModelConfig:
    """The frozen model's source, split, dtype and mesh (module docstring)."""

    initial_checkpoint_path: Optional[str] = None
    checkpoint_format: str = "auto"        # 't5x' (legacy or orbax), 'hf' or 'auto'
    trainable_regex: str = DEFAULT_TRAINABLE_REGEX
    frozen_dtype: Optional[str] = None     # e.g. 'bfloat16'
    mesh_shape: Sequence[int] = (-1, 1)    # ('data', 'model')
    activation_partitioning_dims: int = 1
    parameter_partitioning_dims: int = 1

    def mesh(self):
        return partitioning.make_mesh(tuple(self.mesh_shape))

    def rules(self):
        return partitioning.standard_logical_axis_rules(self.activation_partitioning_dims,
                                                        self.parameter_partitioning_dims)


def dummy_batch(feature_lengths: Mapping[str, int], batch_size: int = 1) -> Dict[str, jnp.ndarray]:
    """All-ones model inputs `[batch_size, length]` (shapes for init and tracing)."""
    enc = jnp.ones((batch_size, feature_lengths["inputs"]), jnp.int32)
    dec = jnp.ones((batch_size, feature_lengths["targets"]), jnp.int32)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": dec}


def _init_args(feature_lengths):
    batch = dummy_batch(feature_lengths)
    return (batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"])


def abstract_variables(model, feature_lengths: Mapping[str, int]) -> Dict[str, Any]:
    """Shapes and dtypes (`jax.ShapeDtypeStruct`) of every variable of `model` and their
    logical axes (`params_axes`); nothing is allocated."""
    args = _init_args(feature_lengths)
    return jax.eval_shape(lambda r: model.init(r, *args, enable_dropout=False),
                          jax.random.PRNGKey(0))


def init_variables(model, pretrained_params: Optional[Mapping[str, Any]],
                   feature_lengths: Mapping[str, int], rng: jax.Array) -> Dict[str, Any]:
    """Variables of `model` with `pretrained_params` in place; only missing parameters (the
    prompt) are freshly initialized (no throw-away init of the frozen model)."""
    args = _init_args(feature_lengths)
    if pretrained_params is None:
        return dict(jax.jit(lambda r: model.init(r, *args, enable_dropout=False))(rng))

    def fill(params, r):
        _, variables = model.apply({"params": params}, *args, enable_dropout=False,
                                   mutable=True, rngs={"params": r})
        return variables

    abstract = jax.eval_shape(lambda r: model.init(r, *args, enable_dropout=False), rng)
    check_pretrained_fits(pretrained_params, abstract["params"])
    variables = jax.jit(fill)(pretrained_params, rng)
    _check_shapes(variables["params"], abstract["params"])
    return dict(variables)


def _count_layers(flat: Mapping[str, Any], stack: str) -> int:
    return len({k.split("/")[1] for k in flat if k.startswith(stack + "/layers_")})


def model_dims(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """emb_dim, vocab_size and layer counts read off a flat T5X-named param tree."""
    dims: Dict[str, Any] = {}
    emb = flat.get("token_embedder/embedding")
    if emb is not None:
        dims["vocab_size"], dims["emb_dim"] = (int(d) for d in emb.shape)
    dims["num_encoder_layers"] = _count_layers(flat, "encoder")
    dims["num_decoder_layers"] = _count_layers(flat, "decoder")
    return dims


def check_pretrained_fits(params, expected, where: str = "the pretrained checkpoint") -> None:
    """Before any apply: every pretrained parameter the model has must have its shape;
    raises CheckpointError naming emb_dim / vocab_size / layers of both sides."""
    got, want = flatten(params), flatten(expected)
    mismatched = [k for k in got if k in want and tuple(got[k].shape) != tuple(want[k].shape)]
    have, need = model_dims(got), model_dims(want)
    differ = [k for k in need if k in have and have[k] != need[k]]
    if differ or mismatched:
        detail = ", ".join(f"{k} {have[k]} (config: {need[k]})" for k in differ)
        if not detail:
            k = mismatched[0]
            detail = (f"parameter {k} has shape {tuple(got[k].shape)} (model: "
                      f"{tuple(want[k].shape)})")
        raise CheckpointError(f"{where} does not fit MODEL_CONFIG: checkpoint has {detail}")


def _check_shapes(params, expected):
    got, want = flatten(params), flatten(expected)
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    if missing or unexpected:
        raise CheckpointError(f"pretrained parameters do not match the model: missing "
                              f"{missing[:10]}, unexpected {unexpected[:10]}")
    for key, spec in want.items():
        if tuple(got[key].shape) != tuple(spec.shape):
            raise CheckpointError(f"parameter {key}: checkpoint shape {tuple(got[key].shape)} != "
                                  f"model shape {tuple(spec.shape)}")


@dataclasses.dataclass
class FrozenModel:
    """A model's variables on the mesh: `frozen` (`{'params': frozen params (cast,
    sharded), <collection>: ... (replicated)}`), the initial `trainable` params, and the
    parameters' logical axes (`params_axes`)."""

    model: Any
    config: FrozenModelConfig
    mesh: Any
    rules: Any
    frozen: Dict[str, Any]
    trainable: Dict[str, Any]
    params_axes: Dict[str, Any]

    def activate(self) -> contextlib.AbstractContextManager:
        """The mesh and logical axis rules, for jitted calls on these variables."""
        return partitioning.activate(self.mesh, self.rules)

    @property
    def replicated(self):
        return partitioning.replicated(self.mesh)

    def variables(self, trainable: Optional[Mapping[str, Any]] = None,
                  collections: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Full variables: the frozen params merged with `trainable` (default the initial
        ones), the collections (`collections` replace same-named ones)."""
        out = dict(self.frozen)
        if collections:
            out.update({name: jax.device_put(value, self.replicated)
                        for name, value in collections.items()})
        out["params"] = merge_params(self.trainable if trainable is None else trainable,
                                     self.frozen["params"])
        return out


def initialize(model, pretrained_params: Optional[Mapping[str, Any]],
               feature_lengths: Mapping[str, int], config: FrozenModelConfig, rng: jax.Array,
               *, extra_variables: Optional[Mapping[str, Any]] = None,
               initial_trainable: Optional[Mapping[str, Any]] = None) -> FrozenModel:
    """`model`'s variables from `pretrained_params` (module docstring). `extra_variables`:
    collections to use instead of the freshly initialised ones (e.g. fixed masks);
    `initial_trainable`: values for the trainable params (e.g. a rewound prompt)."""
    mesh, rules = config.mesh(), config.rules()
    with partitioning.activate(mesh, rules):
        variables = init_variables(model, pretrained_params, feature_lengths, rng)
    params_axes = variables.pop("params_axes", {})
    variables.pop("cache", None)
    params = variables.pop("params")
    collections = dict(extra_variables or {})
    for name, value in variables.items():  # e.g. prompt_masks created at init
        collections.setdefault(name, value)
    trainable, frozen = split_params(params, config.trainable_regex)
    if initial_trainable is not None:
        trainable = jax.tree_util.tree_map(lambda a, b: jnp.asarray(b, a.dtype), trainable,
                                           dict(initial_trainable))
    frozen = cast_tree(frozen, config.frozen_dtype)
    frozen_sharding = partitioning.param_shardings(frozen, params_axes, mesh, rules)
    replicated = partitioning.replicated(mesh)
    placed = {"params": jax.device_put(frozen, frozen_sharding)}
    for name, value in collections.items():
        placed[name] = jax.device_put(value, replicated)
    return FrozenModel(model, config, mesh, rules, placed, trainable, params_axes)
