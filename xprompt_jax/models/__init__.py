"""Models: the T5 encoder-decoder (T5X-compatible) and its prompted variant."""

from .config import T5Config
from .decoding import decode_tokens, greedy_decode, make_decoder_fn
from .prompted import PromptedT5
from .t5 import T5

__all__ = ["T5Config", "T5", "PromptedT5", "decode_tokens", "greedy_decode", "make_decoder_fn"]
