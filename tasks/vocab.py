"""The T5 SentencePiece vocabulary and the output features shared by every task.

The vocabulary file is resolved lazily, at the first moment the vocabulary is really
used (tokenizing, decoding, asking its size), never at import. Resolution order:

1. the gin binding ``xprompt_jax.tasks.t5_vocab_path.path = '...'``;
2. the environment variable ``XPROMPT_T5_VOCAB``;
3. the public T5 vocabulary ``gs://t5-data/vocabs/cc_all.32000/sentencepiece.model``.

So tasks register (and ``import xprompt_jax.tasks`` succeeds) without network, and a
local copy of the model makes every task build offline. The path is fixed once the
vocabulary has been used (seqio caches the loaded model).
"""

from __future__ import annotations

import os
import threading
from typing import Dict, Optional

import gin
import seqio
import tensorflow as tf

DEFAULT_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
VOCAB_ENV_VAR = "XPROMPT_T5_VOCAB"
EXTRA_IDS = 100
# The first sentinel of the T5 vocabulary (id 32099 with 100 extra ids).
SENTINEL = "<extra_id_0>"


@gin.configurable(module="xprompt_jax.tasks")
def t5_vocab_path(path: Optional[str] = None) -> str:
    """Returns the SentencePiece model path: gin ``path`` > $XPROMPT_T5_VOCAB > default."""
    if path:
        return str(path)
    env = os.environ.get(VOCAB_ENV_VAR)
    if env:
        return env
    return DEFAULT_VOCAB_PATH


def unreadable_vocabulary(path: str, error: Exception) -> Exception:
    """The error for a SentencePiece model that cannot be read: for the default T5
    vocabulary on gs:// (unreachable offline) one naming the setting that points at a local
    copy; else `error` itself."""
    if path != DEFAULT_VOCAB_PATH:
        return error
    from xprompt_jax.errors import DataError

    text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return DataError(f"cannot read the T5 vocabulary {DEFAULT_VOCAB_PATH} ({type(error).__name__}"
                     f": {text}): offline, set {VOCAB_ENV_VAR}=/path/to/sentencepiece.model (a "
                     "local copy of it), or the gin binding "
                     "xprompt_jax.tasks.t5_vocab_path.path")


class _NamesTheVocabularySetting:
    """Mixin: loading the default T5 vocabulary fails with `unreadable_vocabulary`."""

    def _model_context(self):
        path = self.sentencepiece_model_file
        try:
            return super()._model_context()
        except Exception as e:  # pylint: disable=broad-except  # gfile / network errors
            error = unreadable_vocabulary(path, e)
            if error is e:
                raise
            raise error from e


class T5Vocabulary(_NamesTheVocabularySetting, seqio.SentencePieceVocabulary):
    """`seqio.SentencePieceVocabulary` (equal to one of the same file and extra ids, as
    T5X's vocabulary check needs) that names XPROMPT_T5_VOCAB when the default T5
    vocabulary on gs:// cannot be read. The model's vocabulary of gin/t5x."""


class LazySentencePieceVocabulary(_NamesTheVocabularySetting, seqio.SentencePieceVocabulary):
    """A ``seqio.SentencePieceVocabulary`` whose model path is resolved on first use.

    Once resolved it is indistinguishable from (and compares equal to) a plain
    ``seqio.SentencePieceVocabulary(path, extra_ids=100)``, which is what T5X's
    model/task vocabulary check needs.
    """

    # Attributes that are not part of the parent's state (kept out of __getstate__ so
    # equality with a plain SentencePieceVocabulary holds).
    _LOCAL_ATTRS = ("_tf_tokenizer_cache", "_tf_tokenizer_lock")

    def __init__(self, extra_ids: int = EXTRA_IDS):
        super().__init__(sentencepiece_model_file=None,  # type: ignore[arg-type]
                         extra_ids=extra_ids)
        self._tf_tokenizer_cache = None
        self._tf_tokenizer_lock = threading.Lock()

    def _resolve(self) -> str:
        if self._sentencepiece_model_file is None:
            self._sentencepiece_model_file = t5_vocab_path()
        return self._sentencepiece_model_file

    def _model_context(self):
        self._resolve()
        return super()._model_context()  # the mixin names XPROMPT_T5_VOCAB on failure

    @property
    def sentencepiece_model_file(self) -> str:
        return self._resolve()

    @property
    def tf_tokenizer(self):
        """One TF SentencePiece tokenizer, created eagerly and shared by all datasets.

        seqio builds a new tokenizer (and parses the model again) in every dataset;
        sharing one eager resource makes building a task's dataset about twice faster.
        """
        with self._tf_tokenizer_lock:
            if self._tf_tokenizer_cache is None:
                with tf.init_scope():
                    self._tf_tokenizer_cache = super().tf_tokenizer
            return self._tf_tokenizer_cache

    def __getstate__(self):
        self._resolve()
        state = super().__getstate__()
        for attr in self._LOCAL_ATTRS:
            state.pop(attr, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._tf_tokenizer_cache = None
        self._tf_tokenizer_lock = threading.Lock()

    def __str__(self) -> str:
        if self._sentencepiece_model_file is None:
            return (f"LazySentencePieceVocabulary(file=<unresolved>, "
                    f"extra_ids={self._extra_ids})")
        return super().__str__()


_VOCABULARY = LazySentencePieceVocabulary()


def get_vocabulary() -> seqio.SentencePieceVocabulary:
    """The vocabulary object shared by all tasks of this package (lazy)."""
    return _VOCABULARY


def output_features() -> Dict[str, seqio.Feature]:
    """``inputs`` / ``targets`` features (EOS appended), as T5's default features."""
    vocab = get_vocabulary()
    return {
        "inputs": seqio.Feature(vocabulary=vocab, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocab, add_eos=True),
    }
