"""Extractive QA: the MRQA 2019 shared-task files (local) and TFDS SQuAD v1.1.

MRQA format (``<Name>.jsonl.gz`` or ``.jsonl``): a header line (``{"header":
{"dataset": ..., "split": ...}}``), then one context per line::

    {"context": "...", "qas": [{"qid": "...", "question": "...",
      "answers": ["..."], "detected_answers": [{"text": "...", ...}]}, ...]}

Each question becomes one example ``{id, question, context, answers}``; ``answers`` are
the gold strings the official script scores against (``detected_answers`` texts
are appended when a question lists no ``answers``).

Directory layout (the official download): ``<dir>/train/<Name>.jsonl.gz`` and
``<dir>/dev/<Name>.jsonl.gz`` with ``<dir>`` from the gin macro ``MRQA_DIR`` or the
environment variable ``XPROMPT_MRQA_DIR``. Tasks (``lester`` family: T5's SQuAD
preprocessing without a task name, ``question: ... context: ...`` with punctuation padded
as T5 pads it, target = the first (padded) answer; evaluation by generation, SQuAD-style EM / F1 with the official
normalisation, main metric F1):

* ``lester_mrqa_<name>_local`` for the in-domain sets with a train split (EPT's
  NaturalQuestionsShort, HotpotQA, SearchQA, NewsQA; SQuAD, TriviaQA) - splits
  ``train``, ``validation`` (= ``dev``) and ``test`` (= ``dev``);
* the same names for Lester et al.'s out-of-domain sets (TextbookQA, RACE, BioASQ,
  RelationExtraction, DuoRC, DROP): ``validation`` / ``test`` only (the MRQA dev file);
* ``lester_squad_v110``: TFDS ``squad/v1.1:3.0.0`` (``validation`` doubles as test).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import seqio
import tensorflow as tf

from . import metrics as m
from . import registry
from . import sources

FAMILY = "lester"
# MRQA file names (train + dev available) and the out-of-domain dev-only sets.
IN_DOMAIN: Tuple[str, ...] = ("SQuAD", "NewsQA", "TriviaQA", "SearchQA", "HotpotQA",
                              "NaturalQuestionsShort")
OUT_OF_DOMAIN: Tuple[str, ...] = ("BioASQ", "DROP", "DuoRC", "RACE",
                                  "RelationExtraction", "TextbookQA")
EPT_DATASETS: Tuple[str, ...] = ("NaturalQuestionsShort", "HotpotQA", "SearchQA",
                                 "NewsQA")
# Lester et al. Table 1: train on SQuAD, evaluate zero-shot on these.
LESTER_DOMAIN_SHIFT: Tuple[str, ...] = ("TextbookQA", "BioASQ", "RACE",
                                        "RelationExtraction", "DuoRC", "DROP")
SQUAD_TFDS = "squad/v1.1:3.0.0"

SIGNATURE = {
    "id": tf.TensorSpec([], tf.string),
    "question": tf.TensorSpec([], tf.string),
    "context": tf.TensorSpec([], tf.string),
    "answers": tf.TensorSpec([None], tf.string),
}
QA_METRIC = registry.MetricSpec((m.squad,), "f1", ("f1",))
# The MRQA directory: gin macro MRQA_DIR, else $XPROMPT_MRQA_DIR.
sources.DATA_DIR_SETTINGS.setdefault("mrqa", ("MRQA_DIR", "XPROMPT_MRQA_DIR", "MRQA"))


class MRQAFormatError(ValueError):
    """An MRQA file does not have the shared task's format."""


def task_name(dataset: str) -> str:
    return f"{FAMILY}_mrqa_{dataset.lower()}_local"


def squad_task_name() -> str:
    return f"{FAMILY}_squad_v110"


# The longest line read (characters): a context of the MRQA files is a few KB to a few
# hundred KB. Files are streamed (gzip decompressed as read), so reading holds one line
# and the examples kept, never the whole decompressed file: a small `.gz` that inflates to
# gigabytes (a decompression bomb) is refused at its first over-long line, or read line by
# line within this bound.
MAX_LINE_CHARS = 16 * 1024 * 1024


class _RawGFile(io.RawIOBase):
    """A `tf.io.gfile.GFile` (local or gs://) as a raw stream, for gzip and io wrappers."""

    def __init__(self, f):
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


def _lines(path: str):
    """(line number, text) of an MRQA file, streamed; MRQAFormatError for a line over
    MAX_LINE_CHARS."""
    raw = io.BufferedReader(_RawGFile(tf.io.gfile.GFile(path, "rb")), 1 << 20)
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
    with raw, stream, io.TextIOWrapper(stream, encoding="utf-8") as text:
        lineno = 0
        while True:
            line = text.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            lineno += 1
            if len(line) > MAX_LINE_CHARS:
                raise MRQAFormatError(f"{path}:{lineno}: line longer than {MAX_LINE_CHARS} "
                                      "characters (not an MRQA file, or a decompression "
                                      "bomb); refusing to read on")
            yield lineno, line


def read_mrqa(path: str, split: str = "") -> List[Dict[str, Any]]:
    """One example per question of an MRQA ``.jsonl[.gz]`` file (file order)."""
    del split
    out: List[Dict[str, Any]] = []
    for lineno, line in _lines(path):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MRQAFormatError(f"{path}:{lineno}: not JSON ({e})") from e
        if not isinstance(record, dict):
            raise MRQAFormatError(f"{path}:{lineno}: expected a JSON object, got "
                                  f"{type(record).__name__}")
        if "header" in record:
            continue
        if "context" not in record or "qas" not in record:
            raise MRQAFormatError(f"{path}:{lineno}: expected fields 'context' and "
                                  f"'qas', got {sorted(record)[:10]}")
        for j, qa in enumerate(record["qas"]):
            if not isinstance(qa, dict) or "question" not in qa:
                raise MRQAFormatError(f"{path}:{lineno}: qas[{j}] has no 'question'")
            answers = [str(a) for a in qa.get("answers") or []]
            if not answers:
                answers = [str(d["text"]) for d in qa.get("detected_answers") or []
                           if isinstance(d, dict) and "text" in d]
            out.append({"id": str(qa.get("qid", qa.get("id", f"{lineno}-{j}"))),
                        "question": str(qa["question"]),
                        "context": str(record["context"]),
                        "answers": answers})
    return out


class MRQASource(sources.LocalDataSource):
    """``<dir>/{train,dev}/<Name>.jsonl.gz`` (or ``.jsonl``) of one MRQA dataset."""

    def __init__(self, dataset: str, splits: Sequence[str],
                 data_dir: Optional[str] = None):
        split_dirs = {"train": "train", "validation": "dev", "test": "dev"}
        super().__init__(name=f"mrqa/{dataset} (local)", kind="mrqa", subdir="",
                         split_files={s: f"{split_dirs[s]}/{dataset}.jsonl.gz"
                                      for s in splits},
                         reader=read_mrqa, signature=SIGNATURE, data_dir=data_dir)
        self._dataset = dataset

    def path(self, split: str) -> str:
        if split not in self._split_files:
            raise ValueError(f"{self._name}: unknown split {split!r}; available: "
                             f"{list(self._split_files)}")
        root = self._data_dir or sources.resolve_data_dir("mrqa")
        gz = os.path.join(root, self._split_files[split])
        for candidate in (gz, gz[:-len(".gz")]):
            if tf.io.gfile.exists(candidate):
                return candidate
        raise sources.DataDirError(
            f"{self._name} split {split!r}: neither {gz} nor {gz[:-3]} exists (MRQA "
            f"directory {root!r}, from {'data_dir' if self._data_dir else 'MRQA_DIR / XPROMPT_MRQA_DIR'}"
            f"; expected the official layout <dir>/{self._split_files[split]}).")


def pad_punctuation(text: tf.Tensor) -> tf.Tensor:
    """T5's ``_pad_punctuation``: a space on each side of every ASCII punctuation mark
    (``[[:punct:]]``), then runs of whitespace collapsed to one space (not stripped)."""
    text = tf.strings.regex_replace(text, r"([[:punct:]])", r" \1 ")
    return tf.strings.regex_replace(text, r"\s+", " ")


def qa_preprocessor(ds: tf.data.Dataset) -> tf.data.Dataset:
    """T5's ``preprocessors.squad`` without the task name (Lester et al. A.3: "we used the
    T5 SQuAD preprocessing code"): question, context and answers punctuation-padded
    (``pad_punctuation``), ``question: {q} context: {c}`` joined by spaces with whitespace
    runs collapsed, target = the first padded answer; the padded answers are what the
    metric compares with (T5's ``qa`` postprocessor)."""

    def fn(ex):
        answers = pad_punctuation(ex["answers"])
        target = tf.cond(tf.size(answers) > 0, lambda: answers[0],
                         lambda: tf.constant(""))
        inputs = tf.strings.join(["question:", pad_punctuation(ex["question"]), "context:",
                                  pad_punctuation(ex["context"])], separator=" ")
        return {
            "inputs": tf.strings.regex_replace(inputs, r"\s+", " "),
            "targets": target,
            "answers": answers,
            "id": ex["id"],
        }

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _squad_tfds_fields(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda ex: {"id": ex["id"], "question": ex["question"],
                              "context": ex["context"],
                              "answers": ex["answers"]["text"]},
                  num_parallel_calls=tf.data.AUTOTUNE)


def postprocess(text, example=None, is_target=False):
    """Predictions: the decoded string. Targets: the example's list of gold answers."""
    if is_target:
        return [a.decode("utf-8") if isinstance(a, bytes) else str(a)
                for a in list(example["answers"])]
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


def _info(name: str, task: str, source: str, benchmark: str) -> registry.TaskInfo:
    return registry.TaskInfo(
        name=name, benchmark=benchmark, task=task, family=FAMILY, source=source,
        label_strings=None, per_example_label_strings=False, metric=QA_METRIC,
        label_field=None)


def register(dataset: str, data_dir: Optional[str] = None,
             name: Optional[str] = None) -> seqio.Task:
    """Registers the local MRQA task of ``dataset`` (an MRQA file name)."""
    if dataset in IN_DOMAIN:
        splits = ("train", "validation", "test")
    elif dataset in OUT_OF_DOMAIN:
        splits = ("validation", "test")
    else:
        raise ValueError(f"unknown MRQA dataset {dataset!r}; expected one of "
                         f"{IN_DOMAIN + OUT_OF_DOMAIN}")
    info = _info(name or task_name(dataset), dataset.lower(), "local", "mrqa")
    return registry.register_task(info, MRQASource(dataset, splits, data_dir),
                                  [qa_preprocessor], postprocess)


def register_squad_tfds() -> seqio.Task:
    info = _info(squad_task_name(), "squad", "v110", "squad")
    src = sources.tfds_source(SQUAD_TFDS, {"train": "train", "validation": "validation",
                                           "test": "validation"})
    return registry.register_task(info, src, [_squad_tfds_fields, qa_preprocessor],
                                  postprocess)


def task_names() -> List[str]:
    return [task_name(d) for d in IN_DOMAIN + OUT_OF_DOMAIN] + [squad_task_name()]


def register_all() -> None:
    for d in IN_DOMAIN + OUT_OF_DOMAIN:
        register(d)
    register_squad_tfds()
