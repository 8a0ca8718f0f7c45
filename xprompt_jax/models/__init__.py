"""Models: the T5 encoder-decoder (T5X-compatible) and its prompted variant."""

from .config import T5Config
from .decoding import decode_tokens, greedy_decode, make_decoder_fn
from .t5 import T5

__all__ = ["T5Config", "T5", "decode_tokens", "greedy_decode", "make_decoder_fn"]
