"""Mesh, T5X logical axis rules and the shardings they give to parameters and batches.

Mesh axes are `('data', 'model')`. Logical axis names are T5X's (`batch`, `embed`, `mlp`,
`heads`, `kv`, `joined_kv`, `vocab`, `length`, `relpos_buckets`) plus the prompt axes of
this project (`prompt`, `prompt_embed`, `prompt_pieces`, `prompt_hidden`), which stay
replicated.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..errors import ConfigError

LogicalRules = Sequence[Tuple[str, Optional[str]]]

PROMPT_AXIS_RULES: LogicalRules = (
    ("prompt", None),
    ("prompt_embed", None),
    ("prompt_pieces", None),
    ("prompt_hidden", None),
    ("prompt_hidden_in", None),
    ("prompt_bank", None),  # PromptBank's leading N axis (prompts/bank.py)
)


def standard_logical_axis_rules(activation_partitioning_dims: int = 1,
                                parameter_partitioning_dims: int = 1,
                                additional_rules: Optional[LogicalRules] = None) -> LogicalRules:
    """T5X's `partitioning.standard_logical_axis_rules` (1-D or 2-D), plus prompt axes."""
    base = [("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
            ("kv", None), ("joined_kv", "model")]
    dims = (activation_partitioning_dims, parameter_partitioning_dims)
    if dims == (1, 1):
        embed = [("embed", None)]
    elif dims == (2, 1):
        embed = [("embed", "model")]
    elif dims == (1, 2):
        embed = [("embed", "data")]
    elif dims == (2, 2):
        embed = [("embed", "model"), ("embed", "data")]
    else:
        raise ValueError(f"partitioning dims must be 1 or 2, got activation="
                         f"{activation_partitioning_dims}, parameter={parameter_partitioning_dims}")
    replicated = [("relpos_buckets", None), ("abspos_buckets", None), ("length", None),
                  ("layers", None), ("stack", None), ("mlp_activations", None)]
    rules = base + embed + replicated + list(PROMPT_AXIS_RULES)
    if additional_rules:
        rules.extend(additional_rules)
    return tuple(rules)


def make_mesh(mesh_shape: Sequence[int] = (-1, 1),
              axis_names: Sequence[str] = ("data", "model"),
              devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A device mesh; one entry of `mesh_shape` may be -1 (fill with the remaining devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(mesh_shape)
    if len(shape) != len(axis_names):
        raise ConfigError(f"MESH_SHAPE {tuple(mesh_shape)} does not match axis names "
                          f"{tuple(axis_names)}")
    if shape.count(-1) > 1:
        raise ConfigError(f"MESH_SHAPE {tuple(mesh_shape)} has more than one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ConfigError(f"MESH_SHAPE {tuple(mesh_shape)}: {len(devices)} devices cannot "
                              f"fill it ({len(devices)} is no multiple of {known})")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        if int(np.prod(shape)) > len(devices):
            raise ConfigError(f"MESH_SHAPE {tuple(shape)} needs {int(np.prod(shape))} devices, "
                              f"only {len(devices)} available")
        devices = devices[: int(np.prod(shape))]
    return Mesh(np.asarray(devices).reshape(shape), tuple(axis_names))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "BATCH_SIZE",
                     data_axis: str = "data") -> None:
    """Raises ConfigError naming `what`, the devices of the mesh's data axis and the nearest
    sizes that work when `batch_size` examples cannot be split evenly over them (each
    device holds batch_size / devices examples of every batch)."""
    devices = int(mesh.shape[data_axis])
    if batch_size % devices == 0:
        return
    lower, upper = batch_size // devices * devices, -(-batch_size // devices) * devices
    nearest = f"{lower} or {upper}" if lower else f"{upper}"
    raise ConfigError(f"{what} = {batch_size} cannot be split evenly over the {devices} devices "
                      f"of the mesh's data axis (mesh {dict(mesh.shape)}, {jax.device_count()} "
                      f"devices); use a multiple of {devices}, e.g. {nearest}, or set MESH_SHAPE")


def _axes_names(value) -> Optional[Tuple[str, ...]]:
    names = getattr(value, "names", None)
    if names is None and isinstance(value, PartitionSpec):
        names = tuple(value)
    return None if names is None else tuple(names)


def params_logical_axes(params_axes: Mapping[str, Any]) -> dict:
    """Turns a `params_axes` collection (`<name>_axes` leaves) into a tree keyed like params."""
    flat = traverse_util.flatten_dict(dict(params_axes), is_leaf=lambda k, v: _axes_names(v) is not None)
    out = {}
    for path, value in flat.items():
        *prefix, last = path
        if not last.endswith("_axes"):
            raise ValueError(f"unexpected params_axes entry {'/'.join(path)}")
        out[tuple(prefix) + (last[: -len("_axes")],)] = _axes_names(value)
    return traverse_util.unflatten_dict(out)


def logical_to_mesh_spec(names: Optional[Sequence[Optional[str]]], rules: LogicalRules) -> PartitionSpec:
    if names is None:
        return PartitionSpec()
    return nn.logical_to_mesh_axes(tuple(names), rules)


def param_shardings(params: Mapping[str, Any], params_axes: Optional[Mapping[str, Any]],
                    mesh: Mesh, rules: LogicalRules) -> Any:
    """NamedSharding tree for `params` from their logical axes; unannotated leaves replicate."""
    logical = traverse_util.flatten_dict(params_logical_axes(params_axes or {}))
    flat = traverse_util.flatten_dict(dict(params))
    shardings = {}
    for path, value in flat.items():
        names = logical.get(path)
        if names is not None and len(names) != np.ndim(value):
            raise ValueError(f"parameter {'/'.join(path)} has shape {np.shape(value)} but "
                             f"logical axes {names}")
        shardings[path] = NamedSharding(mesh, logical_to_mesh_spec(names, rules))
    return traverse_util.unflatten_dict(shardings)


def batch_sharding(mesh: Mesh, ndim: int = 2, data_axis: str = "data") -> NamedSharding:
    """Shards the leading (batch) axis over `data_axis`, replicates the rest."""
    return NamedSharding(mesh, PartitionSpec(data_axis, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def activate(mesh: Mesh, rules: LogicalRules) -> Iterator[None]:
    """Sets the mesh (`jax.set_mesh`) and flax logical axis rules for activation constraints."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
