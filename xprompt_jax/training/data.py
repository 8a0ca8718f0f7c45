"""Training batches from seqio and model features for evaluation.

Training: `seqio.get_dataset(..., EncDecFeatureConverter(pack=False))`, sharded by process
index, shuffled deterministically from a seed, repeated; the iterator's position (batches
consumed) is saved with checkpoints and restored by skipping that many batches of the same
deterministic stream.

Evaluation: the task's examples (raw fields kept for postprocessors and metrics) converted
to model features here, the way `EncDecFeatureConverter(pack=False)` does it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import jax
import numpy as np

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                  "decoder_loss_weights")


def _seqio():
    import seqio  # imported lazily: it pulls in tensorflow

    return seqio


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data to train on. `batch_size` is global (split over processes)."""

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    batch_size: int = 32
    split: str = "train"
    seed: int = 0
    shuffle: bool = True
    use_cached: bool = False


class TrainBatchIterator:
    """Yields host-local numpy batches `{feature: [b, L]}`; `position` counts batches."""

    def __init__(self, config: DataConfig, position: int = 0,
                 shard_index: Optional[int] = None, num_shards: Optional[int] = None):
        self.config = config
        self.position = int(position)
        self.shard_index = jax.process_index() if shard_index is None else shard_index
        self.num_shards = jax.process_count() if num_shards is None else num_shards
        if config.batch_size % self.num_shards:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                             f"{self.num_shards} processes")
        self._iterator = self._make_iterator()

    @property
    def local_batch_size(self) -> int:
        return self.config.batch_size // self.num_shards

    def _make_iterator(self):
        seqio = _seqio()
        cfg = self.config
        ds = seqio.get_dataset(
            cfg.mixture_or_task_name, dict(cfg.task_feature_lengths),
            feature_converter=seqio.EncDecFeatureConverter(pack=False),
            dataset_split=cfg.split, use_cached=cfg.use_cached, shuffle=cfg.shuffle,
            num_epochs=None, seed=cfg.seed,
            shard_info=seqio.ShardInfo(index=self.shard_index, num_shards=self.num_shards),
            verbose=False)
        ds = ds.batch(self.local_batch_size, drop_remainder=True)
        if self.position:
            ds = ds.skip(self.position)
        return ds.prefetch(2).as_numpy_iterator()

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        batch = next(self._iterator)
        self.position += 1
        return {k: batch[k] for k in MODEL_FEATURES if k in batch}

    def state(self) -> Dict[str, Any]:
        return {"position": self.position, "seed": self.config.seed}


def _pad(ids: Sequence[int], length: int, name: str) -> np.ndarray:
    ids = list(ids)[:length]
    return np.asarray(ids + [0] * (length - len(ids)), np.int32)


def examples_to_features(examples: Sequence[Mapping[str, Any]],
                         feature_lengths: Mapping[str, int], batch_size: Optional[int] = None
                         ) -> Dict[str, np.ndarray]:
    """Tokenized examples (`inputs`, `targets`) -> model features, padded to `batch_size`
    rows with all-zero examples (weights 0). Inputs/targets longer than their length are
    truncated (EOS included in the count), like seqio's trimming."""
    rows = len(examples) if batch_size is None else batch_size
    if len(examples) > rows:
        raise ValueError(f"{len(examples)} examples do not fit a batch of {rows}")
    enc_len, dec_len = feature_lengths["inputs"], feature_lengths["targets"]
    enc = np.zeros((rows, enc_len), np.int32)
    tgt = np.zeros((rows, dec_len), np.int32)
    for i, ex in enumerate(examples):
        enc[i] = _pad(ex["inputs"], enc_len, "inputs")
        tgt[i] = _pad(ex["targets"], dec_len, "targets")
    dec_in = np.concatenate([np.zeros((rows, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt,
            "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def load_examples(task, split: str, feature_lengths: Mapping[str, int],
                  max_examples: Optional[int] = None) -> List[Dict[str, Any]]:
    """The task's preprocessed examples (numpy / str fields) in file order."""
    ds = task.get_dataset(dict(feature_lengths), split=split, shuffle=False, num_epochs=1,
                          trim_output_features=True)
    if max_examples is not None:
        ds = ds.take(max_examples)
    out = []
    for ex in ds.as_numpy_iterator():
        out.append({k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in ex.items()})
    return out
