"""Smoke demo: load a T5X checkpoint, run a forward pass and greedy-decode a sentence.

    python -m xprompt_jax.demo --checkpoint tests/fixtures/t5x_tiny_orbax/checkpoint_3 \
        --vocab tests/fixtures/t5_spm/sentencepiece.model

The model sizes are read from the checkpoint's parameter shapes (T5.1.1 layout).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import _moved

import jax
import jax.numpy as jnp
import numpy as np


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="T5X checkpoint (legacy or orbax)")
    parser.add_argument("--vocab", required=True, help="SentencePiece model file")
    parser.add_argument("--text", default="translate English to German: The house is wonderful.")
    parser.add_argument("--max_decode_length", type=int, default=16)
    args = parser.parse_args(argv)

    import seqio

    from .checkpoints import load_t5x_params
    from .models import T5, greedy_decode
    from .models.config import config_from_params

    params = load_t5x_params(args.checkpoint)
    config = config_from_params(params)
    vocab = seqio.SentencePieceVocabulary(args.vocab, extra_ids=100)
    tokens = jnp.asarray([list(vocab.encode(args.text)) + [vocab.eos_id]], jnp.int32)
    model = T5(config)
    targets = jnp.asarray([[vocab.eos_id]], jnp.int32)
    logits = model.apply({"params": params}, tokens, jnp.zeros_like(targets), targets,
                         enable_dropout=False)
    decoded = np.asarray(greedy_decode(model, {"params": params}, tokens,
                                       args.max_decode_length, eos_id=vocab.eos_id))[0]
    ids = [int(t) for t in decoded]
    if vocab.eos_id in ids:
        ids = ids[: ids.index(vocab.eos_id)]
    print(f"model: {config}")
    print(f"devices: {jax.devices()}")
    print(f"input:  {args.text!r} -> {tokens.shape[1]} tokens")
    print(f"first-step logits: shape {tuple(logits.shape)}, log-sum-exp "
          f"{float(jax.nn.logsumexp(logits[0, 0])):.4f}")
    print(f"greedy decode ({len(ids)} tokens): {ids}")
    print(f"text: {vocab.decode(ids)!r}")
    return 0


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
