"""A small synthetic seqio task for trainer tests (generated in memory, real T5 vocab).

`synthetic_parity`: input `sentence: w1 w2 ... wn` (n random colour/animal words), target
`yes` if the sentence contains the word `red`, else `no`. Deterministic from a seed.
"""

import functools

import numpy as np
import seqio
import tensorflow as tf

WORDS = ["red", "blue", "green", "cat", "dog", "bird", "tree", "house", "river", "stone",
         "small", "large"]
TASK_NAME = "xprompt_test_synthetic"


def _examples(split: str, n: int, seed: int):
    rng = np.random.RandomState(seed + (0 if split == "train" else 1000))
    inputs, targets = [], []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=rng.randint(3, 7)))
        inputs.append("sentence: " + " ".join(words))
        targets.append("yes" if "red" in words else "no")
    return inputs, targets


def _dataset_fn(split, shuffle_files, seed=None, sizes=None):
    del shuffle_files, seed
    inputs, targets = _examples(split, sizes[split], 0)
    return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": targets})


def accuracy(targets, predictions):
    return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def register(vocab_path: str, name: str = TASK_NAME, train_size: int = 256,
             validation_size: int = 32) -> str:
    if name in seqio.TaskRegistry.names():
        return name
    vocab = seqio.SentencePieceVocabulary(vocab_path, extra_ids=100)
    features = {"inputs": seqio.Feature(vocab, add_eos=True),
                "targets": seqio.Feature(vocab, add_eos=True)}
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(
            functools.partial(_dataset_fn, sizes={"train": train_size,
                                                  "validation": validation_size}),
            splits=("train", "validation")),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features=features, metric_fns=[accuracy])
    return name


_DEFAULT_VOCAB = (__import__("pathlib").Path(__file__).resolve().parent / "fixtures" /
                  "t5_spm" / "sentencepiece.model")
if _DEFAULT_VOCAB.exists():  # importable as a MIXTURE_OR_TASK_MODULE by the CLI tests
    register(str(_DEFAULT_VOCAB))
