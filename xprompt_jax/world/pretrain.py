"""Pretrains the world's tiny T5.1.1 and saves it as a T5X (orbax) checkpoint.

    python -m xprompt_jax.world.pretrain --output_dir /tmp/world_t5

The shipped checkpoint (`xprompt_jax/data/world/checkpoint_9000`) is two runs: the
second continues the first with COPA weighted up until its rule is learned

    python -m xprompt_jax.world.pretrain --output_dir /tmp/w1 --steps 6000 --twins_from 0.5
    python -m xprompt_jax.world.pretrain --output_dir /tmp/w2 --steps 3000 --twins_from 0 \\
        --init_checkpoint /tmp/w1/checkpoint_6000 --tasks boolq:1,rte:1,copa:4,wic:1 --install

(26 + 28 min on 2 CPU cores; their logs are `pretrain_log_phase1.json` and
`pretrain_log.json` beside the checkpoint). Every field of `PretrainConfig` is a flag;
`--install` also copies the checkpoint into the package (`xprompt_jax/data/world/`),
replacing the shipped one. What the pretraining does: `xprompt_jax.world.pretraining`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Dict, Optional, Sequence

from .. import _moved


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    from . import corpus
    from .pretraining import PretrainConfig, install, pretrain

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = PretrainConfig(output_dir="")
    parser.add_argument("--output_dir", required=True)
    for field in dataclasses.fields(PretrainConfig):
        if field.name in ("output_dir",):
            continue
        default = getattr(defaults, field.name)
        kind = type(default) if default is not None else str
        parser.add_argument(f"--{field.name}", type=kind, default=default)
    parser.add_argument("--train_vocab", action="store_true",
                        help="retrain the SentencePiece model into OUTPUT_DIR first")
    parser.add_argument("--install", action="store_true",
                        help="copy the checkpoint into xprompt_jax/data/world/")
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)}
    config = PretrainConfig(**values)
    if args.train_vocab:
        os.makedirs(config.output_dir, exist_ok=True)
        config.vocab_path = corpus.train_sentencepiece(
            os.path.join(config.output_dir, "sentencepiece"))
        print(f"trained {config.vocab_path}", flush=True)
    summary = pretrain(config, log=lambda s: print(s, flush=True))
    if args.install:
        target = install(summary["checkpoint"],
                         os.path.join(config.output_dir, "pretrain_log.json"))
        print(f"installed {target}", flush=True)
    return summary


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    import sys

    from .. import cli

    cli.run_cli(main, sys.argv[1:], prog="xprompt_jax.world.pretrain")  # signals: one line
