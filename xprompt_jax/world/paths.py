"""Where the world's shipped files are: the SentencePiece model and the pretrained T5.

Both are package data under `xprompt_jax/data/world/`; the functions return absolute
paths, so gin can use them wherever the package is installed:

    from xprompt_jax.world import paths
    INITIAL_CHECKPOINT_PATH = @paths.checkpoint_path()
"""

from __future__ import annotations

import os
import re
from typing import Optional

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                        "world")
VOCAB_FILE = "sentencepiece.model"
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


def data_dir() -> str:
    """`xprompt_jax/data/world` of the installed package."""
    return DATA_DIR


def vocab_path() -> str:
    """The world's SentencePiece model (use with `extra_ids=100`)."""
    return os.path.join(DATA_DIR, VOCAB_FILE)


def checkpoint_path(directory: Optional[str] = None) -> str:
    """The shipped T5X checkpoint (`.../checkpoint_<N>`, largest N) of the world's T5."""
    directory = directory or DATA_DIR
    steps = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            match = _STEP_DIR.match(name)
            if match and os.path.isdir(os.path.join(directory, name)):
                steps.append((int(match.group(1)), name))
    if not steps:
        raise FileNotFoundError(
            f"no checkpoint_<N> directory in {directory}: the world's pretrained T5 is "
            "missing (reproduce it with `python -m xprompt_jax.world.pretrain`)")
    return os.path.join(directory, max(steps)[1])
