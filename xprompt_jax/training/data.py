"""Training batches from seqio and model features for evaluation.

Training: `seqio.get_dataset(..., EncDecFeatureConverter(pack=False))`, sharded by process
index, shuffled deterministically from a seed, repeated; the iterator's position (batches
consumed) is saved with checkpoints and restored by skipping that many batches of the same
deterministic stream.

Evaluation: the task's examples (raw fields kept for postprocessors and metrics) converted
to model features here, the way `EncDecFeatureConverter(pack=False)` does it. Less padding
(results identical, attention masks and T5's relative positions make padding inert):
`length_sorted_batches` groups examples of similar input length, and `trim=True` /
`trim_batch` cut a batch to its longest row, rounded up to one of a few bucket lengths
(`bucket_length`) so that only a handful of shapes is compiled. `option_features` lays an
example's L verbalizers side by side in one decoder row (`decoder_segment_ids` 1..L) for
shared-encoder rank classification (`training/evaluation.py`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

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
    # a sweep over seeds: entry k of a bank reads its own stream, shuffled with
    # entry_seeds[k] (exactly the stream of a run with seed entry_seeds[k]); batches hold
    # every entry's `batch_size` examples interleaved, row b*K + k = entry k's example b
    entry_seeds: Optional[Tuple[int, ...]] = None


class TrainBatchIterator:
    """Yields host-local numpy batches `{feature: [b, L]}`; `position` counts batches.
    With `entry_seeds` (K of them) `{feature: [b*K, L]}`: the batches of K streams, each
    shuffled with its own seed, interleaved (row i*K + k = row i of stream k)."""

    def __init__(self, config: DataConfig, position: int = 0,
                 shard_index: Optional[int] = None, num_shards: Optional[int] = None):
        self.config = config
        self.position = int(position)
        self.shard_index = jax.process_index() if shard_index is None else shard_index
        self.num_shards = jax.process_count() if num_shards is None else num_shards
        if config.batch_size % self.num_shards:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                             f"{self.num_shards} processes")
        seeds = config.entry_seeds
        self.entry_seeds = None if seeds is None else [int(x) for x in seeds]
        if self.entry_seeds is None:
            self._iterator = self._make_iterator(config.seed)
        else:  # one stream per distinct seed, shared by the entries of that seed
            self._streams = {seed: self._make_iterator(seed)
                             for seed in dict.fromkeys(self.entry_seeds)}

    @property
    def local_batch_size(self) -> int:
        return self.config.batch_size // self.num_shards

    def _make_iterator(self, seed: int):
        seqio = _seqio()
        cfg = self.config
        ds = seqio.get_dataset(
            cfg.mixture_or_task_name, dict(cfg.task_feature_lengths),
            feature_converter=seqio.EncDecFeatureConverter(pack=False),
            dataset_split=cfg.split, use_cached=cfg.use_cached, shuffle=cfg.shuffle,
            num_epochs=None, seed=seed,
            shard_info=seqio.ShardInfo(index=self.shard_index, num_shards=self.num_shards),
            verbose=False)
        ds = ds.batch(self.local_batch_size, drop_remainder=True)
        if self.position:
            ds = ds.skip(self.position)
        return ds.prefetch(2).as_numpy_iterator()

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        if self.entry_seeds is None:
            batch = next(self._iterator)
        else:
            drawn = {seed: next(stream) for seed, stream in self._streams.items()}
            batch = {k: np.stack([drawn[seed][k] for seed in self.entry_seeds], axis=1)
                     for k in MODEL_FEATURES if k in drawn[self.entry_seeds[0]]}
            batch = {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}
        self.position += 1
        return {k: batch[k] for k in MODEL_FEATURES if k in batch}

    def state(self) -> Dict[str, Any]:
        state = {"position": self.position, "seed": self.config.seed}
        if self.entry_seeds is not None:
            state["entry_seeds"] = list(self.entry_seeds)
        return state


def _pad(ids: Sequence[int], length: int, name: str) -> np.ndarray:
    ids = list(ids)[:length]
    return np.asarray(ids + [0] * (length - len(ids)), np.int32)


NUM_LENGTH_BUCKETS = 8


def bucket_length(length: int, maximum: int, num_buckets: int = NUM_LENGTH_BUCKETS,
                  multiple: int = 8) -> int:
    """The smallest bucket length >= `length`: multiples of `ceil(maximum / num_buckets)`
    rounded up to a multiple of `multiple`, capped at `maximum` (at most `num_buckets` + 1
    distinct lengths, so at most that many compiled shapes per feature)."""
    if maximum <= 0:
        raise ValueError(f"bucket_length: maximum length must be > 0, got {maximum}")
    step = multiple * math.ceil(math.ceil(maximum / num_buckets) / multiple)
    return int(min(maximum, step * max(1, math.ceil(length / step))))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> List[np.ndarray]:
    """Index arrays of `batch_size` (the last may be shorter) over examples sorted by
    decreasing length (stable): batches of similar lengths, for trimming."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, np.int64), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def trim_batch(batch: Mapping[str, np.ndarray], num_buckets: int = NUM_LENGTH_BUCKETS
               ) -> Dict[str, np.ndarray]:
    """Model features cut to the batch's longest input (`encoder_*`) and longest target
    (`decoder_*`), rounded up by `bucket_length` over the features' current lengths."""
    out = dict(batch)
    for prefix, key in (("encoder_", "encoder_input_tokens"),
                        ("decoder_", "decoder_target_tokens")):
        if key not in batch:
            continue
        tokens = np.asarray(batch[key])
        used = np.nonzero(np.any(tokens != 0, axis=0))[0]
        length = bucket_length(int(used[-1]) + 1 if used.size else 1, tokens.shape[1],
                               num_buckets, multiple=8 if prefix == "encoder_" else 4)
        for name, value in batch.items():
            if name.startswith(prefix) and np.ndim(value) == 2:
                out[name] = np.asarray(value)[:, :length]
    return out


def _clipped(ids: Sequence[int], length: int) -> List[int]:
    return [int(t) for t in list(ids)[:length]]


def examples_to_features(examples: Sequence[Mapping[str, Any]],
                         feature_lengths: Mapping[str, int], batch_size: Optional[int] = None,
                         trim: bool = False) -> Dict[str, np.ndarray]:
    """Tokenized examples (`inputs`, `targets`) -> model features, padded to `batch_size`
    rows with all-zero examples (weights 0). Inputs/targets longer than their length are
    truncated (EOS included in the count), like seqio's trimming. `trim`: the encoder and
    decoder lengths are the batch's longest (truncated) input / target, rounded up by
    `bucket_length`, instead of the feature lengths."""
    rows = len(examples) if batch_size is None else batch_size
    if len(examples) > rows:
        raise ValueError(f"{len(examples)} examples do not fit a batch of {rows}")
    enc_len, dec_len = feature_lengths["inputs"], feature_lengths["targets"]
    if trim:
        enc_len = bucket_length(max([len(_clipped(ex["inputs"], enc_len)) for ex in examples]
                                    + [1]), enc_len)
        dec_len = bucket_length(max([len(_clipped(ex["targets"], dec_len))
                                     for ex in examples] + [1]), dec_len, multiple=4)
    enc = np.zeros((rows, enc_len), np.int32)
    tgt = np.zeros((rows, dec_len), np.int32)
    for i, ex in enumerate(examples):
        enc[i] = _pad(ex["inputs"], enc_len, "inputs")
        tgt[i] = _pad(ex["targets"], dec_len, "targets")
    dec_in = np.concatenate([np.zeros((rows, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt,
            "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def option_features(examples: Sequence[Mapping[str, Any]],
                    options: Sequence[Sequence[Sequence[int]]],
                    feature_lengths: Mapping[str, int], batch_size: Optional[int] = None,
                    trim: bool = True) -> Dict[str, np.ndarray]:
    """Shared-encoder rank-classification features: one row per example, its L verbalizers
    (`options[i]`: token ids, EOS included) side by side in the decoder.

    Returns `encoder_input_tokens` `[B, S]` and `decoder_input_tokens`,
    `decoder_target_tokens`, `decoder_segment_ids` (option l of the row is segment l + 1,
    padding 0) and `decoder_loss_weights`, all `[B, T]`; each option is truncated to
    `feature_lengths['targets']` and shifted right within its own segment (decoder input 0
    at each segment start), so with a block-diagonal causal mask every segment is decoded
    exactly as its own row would be. `trim`: S is the longest input and T the longest
    row of options, rounded up by `bucket_length` (else S = feature length, T = the
    options' maximum count x the target length). Rows beyond the examples are all zero."""
    if len(options) != len(examples):
        raise ValueError(f"{len(options)} option lists for {len(examples)} examples")
    rows = len(examples) if batch_size is None else batch_size
    if len(examples) > rows:
        raise ValueError(f"{len(examples)} examples do not fit a batch of {rows}")
    enc_len, tgt_len = feature_lengths["inputs"], feature_lengths["targets"]
    clipped = [[_clipped(o, tgt_len) for o in opts] for opts in options]
    max_dec = max([len(opts) for opts in clipped] + [1]) * tgt_len
    if trim:
        enc_len = bucket_length(max([len(_clipped(ex["inputs"], enc_len)) for ex in examples]
                                    + [1]), enc_len)
        dec_len = bucket_length(max([sum(len(o) for o in opts) for opts in clipped] + [1]),
                                max_dec, multiple=4)
    else:
        dec_len = max_dec
    enc = np.zeros((rows, enc_len), np.int32)
    tgt = np.zeros((rows, dec_len), np.int32)
    dec_in = np.zeros((rows, dec_len), np.int32)
    seg = np.zeros((rows, dec_len), np.int32)
    for i, (ex, opts) in enumerate(zip(examples, clipped)):
        enc[i] = _pad(ex["inputs"], enc_len, "inputs")
        pos = 0
        for l, ids in enumerate(opts):
            tgt[i, pos:pos + len(ids)] = ids
            dec_in[i, pos + 1:pos + len(ids)] = ids[:-1]
            seg[i, pos:pos + len(ids)] = l + 1
            pos += len(ids)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt, "decoder_segment_ids": seg,
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
