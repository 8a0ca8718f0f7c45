"""Readers for the official SuperGLUE JSONL and GLUE TSV files.

Each reader turns one official file into a list of examples shaped exactly like the
corresponding TFDS dataset (``super_glue/<config>:1.0.2``, ``glue/<config>:2.0.0``):
same feature names, same dtypes, same label ids, the same flattening (MultiRC: one
example per answer, ReCoRD: one example per query) and the same WSC span fixes. So the
local tasks share every preprocessor with the TFDS tasks. ``SIGNATURES`` gives the
``tf.TensorSpec`` of each dataset, equal to TFDS's ``info.features`` tensor specs.

Errors name the file, the line (1-based) and the field at fault.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import tensorflow as tf

from xprompt_jax.errors import DataError


class DataFileError(DataError):
    """A local data file is malformed; the message names file, line and field."""


# ---------------------------------------------------------------------------
# Label classes (class id = position), as in TFDS's builder configs.
# ---------------------------------------------------------------------------
SUPERGLUE_LABEL_CLASSES: Dict[str, Optional[Sequence[str]]] = {
    "boolq": ("False", "True"),
    "cb": ("entailment", "contradiction", "neutral"),
    "copa": ("choice1", "choice2"),
    "multirc": ("False", "True"),
    "record": None,
    "rte": ("entailment", "not_entailment"),
    "wic": ("False", "True"),
    "wsc": ("False", "True"),
    # The diagnostics (T5 casts both as RTE).
    "axb": ("entailment", "not_entailment"),
    "axg": ("entailment", "not_entailment"),
}

GLUE_LABEL_CLASSES: Dict[str, Optional[Sequence[str]]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "stsb": None,  # float32 score
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
}

_S = tf.TensorSpec([], tf.string)
_I32 = tf.TensorSpec([], tf.int32)
_LABEL = tf.TensorSpec([], tf.int64)

SUPERGLUE_SIGNATURES: Dict[str, Dict[str, Any]] = {
    "boolq": {"question": _S, "passage": _S, "idx": _I32, "label": _LABEL},
    "cb": {"premise": _S, "hypothesis": _S, "idx": _I32, "label": _LABEL},
    "copa": {"premise": _S, "choice1": _S, "choice2": _S, "question": _S,
             "idx": _I32, "label": _LABEL},
    "multirc": {"paragraph": _S, "question": _S, "answer": _S,
                "idx": {"paragraph": _I32, "question": _I32, "answer": _I32},
                "label": _LABEL},
    "record": {"passage": _S, "query": _S,
               "entities": tf.TensorSpec([None], tf.string),
               "answers": tf.TensorSpec([None], tf.string),
               "idx": {"passage": _I32, "query": _I32}},
    "rte": {"premise": _S, "hypothesis": _S, "idx": _I32, "label": _LABEL},
    "wic": {"word": _S, "sentence1": _S, "sentence2": _S, "start1": _I32,
            "start2": _I32, "end1": _I32, "end2": _I32, "idx": _I32,
            "label": _LABEL},
    "wsc": {"text": _S, "span1_index": _I32, "span2_index": _I32,
            "span1_text": _S, "span2_text": _S, "idx": _I32, "label": _LABEL},
    "axb": {"sentence1": _S, "sentence2": _S, "idx": _I32, "label": _LABEL},
    "axg": {"premise": _S, "hypothesis": _S, "idx": _I32, "label": _LABEL},
}

_GLUE_TEXT_FEATURES: Dict[str, Dict[str, str]] = {
    # TFDS feature name -> TSV column, as in TFDS's glue builder.
    "cola": {"sentence": "sentence"},
    "sst2": {"sentence": "sentence"},
    "mrpc": {"sentence1": "#1 String", "sentence2": "#2 String"},
    "qqp": {"question1": "question1", "question2": "question2"},
    "stsb": {"sentence1": "sentence1", "sentence2": "sentence2"},
    "mnli": {"premise": "sentence1", "hypothesis": "sentence2"},
    "qnli": {"question": "question", "sentence": "sentence"},
    "rte": {"sentence1": "sentence1", "sentence2": "sentence2"},
}
_GLUE_LABEL_COLUMNS = {
    "cola": "is_acceptable", "sst2": "label", "mrpc": "Quality",
    "qqp": "is_duplicate", "stsb": "score", "mnli": "gold_label",
    "qnli": "label", "rte": "label",
}

GLUE_SIGNATURES: Dict[str, Dict[str, Any]] = {
    name: dict(
        {f: _S for f in feats},
        idx=_I32,
        label=(tf.TensorSpec([], tf.float32) if name == "stsb" else _LABEL))
    for name, feats in _GLUE_TEXT_FEATURES.items()
}


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------
class _Row:
    """A parsed JSON object with field access that reports file/line on error."""

    def __init__(self, obj: Any, path: str, lineno: int, where: str = ""):
        if not isinstance(obj, dict):
            raise DataFileError(
                f"{path}:{lineno}: expected a JSON object{where}, got "
                f"{type(obj).__name__}")
        self.obj, self.path, self.lineno, self.where = obj, path, lineno, where

    def get(self, field: str, types=None, optional: bool = False):
        if field not in self.obj:
            if optional:
                return None
            raise DataFileError(
                f"{self.path}:{self.lineno}: missing field '{field}'{self.where}")
        value = self.obj[field]
        if types is not None and not isinstance(value, types):
            raise DataFileError(
                f"{self.path}:{self.lineno}: field '{field}'{self.where} has type "
                f"{type(value).__name__}, expected "
                f"{getattr(types, '__name__', types)}")
        return value

    def sub(self, field: str, description: str) -> "_Row":
        return _Row(self.get(field, dict), self.path, self.lineno,
                    f"{self.where} in {description}")

    def error(self, message: str) -> DataFileError:
        return DataFileError(f"{self.path}:{self.lineno}: {message}{self.where}")


def _decode_line(raw: bytes, path: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at "
                            f"column {e.start + 1}; expected UTF-8 text)") from None


def _iter_jsonl(path: str) -> Iterator[_Row]:
    with tf.io.gfile.GFile(path, "rb") as f:
        content = f.read()
    for lineno, raw in enumerate(content.split(b"\n"), start=1):
        line = _decode_line(raw, path, lineno)
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
        except (ValueError, RecursionError) as e:  # e.g. nesting too deep
            raise DataFileError(f"{path}:{lineno}: invalid JSON ({type(e).__name__})") \
                from None
        yield _Row(obj, path, lineno)


def _bool_label(row: _Row, value: Any, field: str = "label") -> int:
    """TFDS's ``_cast_label`` for boolean tasks: bool or 0/1 -> 0/1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value in ("False", "True"):
        return int(value == "True")
    raise row.error(f"field '{field}' has invalid value {value!r} "
                    "(expected true/false or 0/1)")


def _class_label(row: _Row, value: Any, classes: Sequence[str]) -> int:
    if isinstance(value, str) and value in classes:
        return classes.index(value)
    raise row.error(f"field 'label' has invalid value {value!r} "
                    f"(expected one of {list(classes)})")


def _label_or_test(row: _Row, split: str, cast: Callable[[Any], int]) -> int:
    value = row.get("label", optional=True)
    if value is None:
        if split != "test":
            raise row.error(f"missing field 'label' (required in split '{split}')")
        return -1
    return cast(value)


def _int(row: _Row, field: str) -> int:
    value = row.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise row.error(f"field '{field}' has value {value!r}, expected an integer")
    if not -2**31 <= value < 2**31:
        raise row.error(f"field '{field}' has value {value}, expected a 32-bit integer")
    return value


def _str(row: _Row, field: str) -> str:
    value = row.get(field, str)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise row.error(f"field '{field}' holds an unpaired surrogate escape "
                        "(not encodable as UTF-8)") from None
    return value


# ---------------------------------------------------------------------------
# SuperGLUE JSONL -> TFDS-shaped examples.
# ---------------------------------------------------------------------------
def _simple_superglue(task: str, features: Mapping[str, Callable]):
    """Reader for the one-line-one-example tasks (boolq, cb, copa, rte, wic)."""
    classes = SUPERGLUE_LABEL_CLASSES[task]

    def cast(row: _Row, value: Any) -> int:
        if task == "copa":
            # TFDS: "choice2" if row["label"] else "choice1".
            if isinstance(value, bool) or value not in (0, 1):
                raise row.error(f"field 'label' has invalid value {value!r} "
                                "(expected 0 or 1)")
            return int(value)
        if classes == ("False", "True"):
            return _bool_label(row, value)
        return _class_label(row, value, classes)

    def read(path: str, split: str) -> List[Dict[str, Any]]:
        out = []
        for row in _iter_jsonl(path):
            ex = {name: fn(row, name) for name, fn in features.items()}
            ex["idx"] = _int(row, "idx")
            ex["label"] = _label_or_test(row, split, lambda v: cast(row, v))
            out.append(ex)
        return out

    return read


def _read_multirc(path: str, split: str) -> List[Dict[str, Any]]:
    out = []
    for row in _iter_jsonl(path):
        passage = row.sub("passage", "'passage'")
        paragraph_text = _str(passage, "text")
        p_idx = _int(row, "idx")
        questions = passage.get("questions", list)
        for qi, q_obj in enumerate(questions):
            q = _Row(q_obj, path, row.lineno, f" in passage.questions[{qi}]")
            q_text, q_idx = _str(q, "question"), _int(q, "idx")
            for ai, a_obj in enumerate(q.get("answers", list)):
                a = _Row(a_obj, path, row.lineno,
                         f" in passage.questions[{qi}].answers[{ai}]")
                label = a.get("label", optional=True)
                if label is None and split != "test":
                    raise a.error(f"missing field 'label' (required in split '{split}')")
                out.append({
                    "paragraph": paragraph_text,
                    "question": q_text,
                    "answer": _str(a, "text"),
                    "label": -1 if label is None else _bool_label(a, label),
                    "idx": {"paragraph": p_idx, "question": q_idx,
                            "answer": _int(a, "idx")},
                })
    return out


def _read_record(path: str, split: str) -> List[Dict[str, Any]]:
    out = []
    for row in _iter_jsonl(path):
        passage = row.sub("passage", "'passage'")
        text = _str(passage, "text")
        entities = set()
        for ei, e_obj in enumerate(passage.get("entities", list)):
            e = _Row(e_obj, path, row.lineno, f" in passage.entities[{ei}]")
            # Offsets are inclusive at both ends (TFDS: text[start:end + 1]).
            entities.add(text[_int(e, "start"):_int(e, "end") + 1])
        entities = sorted(entities)
        p_idx = _int(row, "idx")
        for qi, qa_obj in enumerate(row.get("qas", list)):
            qa = _Row(qa_obj, path, row.lineno, f" in qas[{qi}]")
            answers = set()
            raw_answers = qa.get("answers", list, optional=True)
            if raw_answers is None and split != "test":
                raise qa.error(f"missing field 'answers' (required in split '{split}')")
            for ai, a_obj in enumerate(raw_answers or ()):
                a = _Row(a_obj, path, row.lineno, f" in qas[{qi}].answers[{ai}]")
                answers.add(_str(a, "text"))
            out.append({
                "passage": text,
                "query": _str(qa, "query"),
                "entities": list(entities),
                "answers": sorted(answers),
                "idx": {"passage": p_idx, "query": _int(qa, "idx")},
            })
    return out


def fix_wsc_spans(ex: Dict[str, Any], where: str = "") -> Dict[str, Any]:
    """TFDS ``wsc.fixed``: repair spans that are not substrings of the text.

    Same rules as TFDS's ``_fix_wst``: match the case of the first word at the span
    index, strip a trailing '.', replace newlines by spaces.
    """

    def fix(k: str):
        text, index = ex[k + "_text"], ex[k + "_index"]
        if text in ex["text"]:
            return
        if text in ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"):
            return  # TFDS leaves these (intervening text) unchanged.
        if "theyscold" in text:
            ex["span2_index"] = 10  # as TFDS (its text replacement is a no-op)
        words = ex["text"].split()
        if not 0 <= index < len(words):
            raise DataFileError(f"{where}: {k}_index {index} is outside the text "
                                f"({len(words)} words)")
        first_word = words[index]
        if first_word[0].islower():
            text = text[0].lower() + text[1:]
        else:
            text = text[0].upper() + text[1:]
        text = text.rstrip(".").replace("\n", " ")
        if text not in ex["text"]:
            raise DataFileError(f"{where}: {k}_text {ex[k + '_text']!r} does not "
                                "occur in field 'text'")
        ex[k + "_text"] = text

    fix("span1")
    fix("span2")
    return ex


def _read_wsc(path: str, split: str, fixed: bool = True) -> List[Dict[str, Any]]:
    out = []
    for row in _iter_jsonl(path):
        target = row.sub("target", "'target'")
        ex = {
            "text": _str(row, "text"),
            "span1_index": _int(target, "span1_index"),
            "span2_index": _int(target, "span2_index"),
            "span1_text": _str(target, "span1_text"),
            "span2_text": _str(target, "span2_text"),
        }
        if fixed:
            ex = fix_wsc_spans(ex, where=f"{path}:{row.lineno}")
        ex["idx"] = _int(row, "idx")
        ex["label"] = _label_or_test(row, split, lambda v: _bool_label(row, v))
        out.append(ex)
    return out


def _str_field(row: _Row, name: str) -> str:
    return _str(row, name)


def _int_field(row: _Row, name: str) -> int:
    return _int(row, name)


SUPERGLUE_READERS: Dict[str, Callable[[str, str], List[Dict[str, Any]]]] = {
    "boolq": _simple_superglue("boolq", {"question": _str_field,
                                         "passage": _str_field}),
    "cb": _simple_superglue("cb", {"premise": _str_field,
                                   "hypothesis": _str_field}),
    "copa": _simple_superglue("copa", {"premise": _str_field,
                                       "choice1": _str_field,
                                       "choice2": _str_field,
                                       "question": _str_field}),
    "multirc": _read_multirc,
    "record": _read_record,
    "rte": _simple_superglue("rte", {"premise": _str_field,
                                     "hypothesis": _str_field}),
    "wic": _simple_superglue("wic", {"word": _str_field,
                                     "sentence1": _str_field,
                                     "sentence2": _str_field,
                                     "start1": _int_field,
                                     "start2": _int_field,
                                     "end1": _int_field,
                                     "end2": _int_field}),
    "wsc": _read_wsc,
    "axb": _simple_superglue("axb", {"sentence1": _str_field,
                                     "sentence2": _str_field}),
    "axg": _simple_superglue("axg", {"premise": _str_field,
                                     "hypothesis": _str_field}),
}

# Official directory names inside the SuperGLUE data directory.
SUPERGLUE_DIRS = {
    "boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC",
    "record": "ReCoRD", "rte": "RTE", "wic": "WiC", "wsc": "WSC",
    "axb": "AX-b", "axg": "AX-g",
}
SUPERGLUE_SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl",
                         "test": "test.jsonl"}
# The diagnostics have one (test) file each.
SUPERGLUE_DIAGNOSTIC_FILES = {"axb": {"test": "AX-b.jsonl"},
                              "axg": {"test": "AX-g.jsonl"}}


# ---------------------------------------------------------------------------
# GLUE TSV -> TFDS-shaped examples.
# ---------------------------------------------------------------------------
GLUE_DIRS = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP",
    "stsb": "STS-B", "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE",
}
GLUE_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv",
                    "test": "test.tsv"}
MNLI_SPLIT_FILES = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}


def _csv_rows(reader, path: str, header: bool = False):
    """Rows of a csv reader (or, with `header`, the DictReader's field names); a csv.Error
    becomes a DataFileError with the line."""
    try:
        if header:
            yield reader[0].fieldnames
            return
        for row in reader:
            yield row
    except csv.Error as e:
        line = getattr(reader[0] if header else reader, "line_num", "?")
        raise DataFileError(f"{path}:{line}: malformed TSV ({e})") from None


def _read_glue(task: str, path: str, split: str) -> List[Dict[str, Any]]:
    """Reads one GLUE TSV as TFDS's glue builder does (``csv``, QUOTE_NONE).

    CoLA train/dev have no header (columns: source, label, original label,
    sentence). Rows whose label cell is empty are skipped, as in TFDS; rows with
    missing columns are skipped too (TFDS's "corrupted rows").
    """
    text_features = _GLUE_TEXT_FEATURES[task]
    label_column = _GLUE_LABEL_COLUMNS[task]
    classes = GLUE_LABEL_CLASSES[task]
    cola_no_header = task == "cola" and not split.startswith("test")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    out = []
    # utf-8-sig: the MRPC files of the GLUE download start with a BOM.
    with tf.io.gfile.GFile(path, "rb") as fb:
        raw = fb.read()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = raw[:e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataFileError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at "
                            f"column {column}; expected UTF-8 text)") from None
    # Universal newlines, like TFDS's text-mode open().
    lines = io.StringIO(content, newline=None)
    if cola_no_header:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = None
    else:
        reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(_csv_rows([reader], path, header=True)) or []
        missing = [c for c in text_features.values() if c not in header]
        if missing:
            raise DataFileError(f"{path}:1: header lacks column(s) {missing} "
                                f"(header: {header})")
    for n, row in enumerate(_csv_rows(reader, path)):
        lineno = n + (1 if cola_no_header else 2)
        if cola_no_header:
            if len(row) < 4:
                raise DataFileError(f"{path}:{lineno}: expected 4 tab-separated "
                                    f"columns (source, label, original label, "
                                    f"sentence), got {len(row)}")
            row = {"sentence": row[3], "is_acceptable": row[1]}
        ex: Dict[str, Any] = {f: row[c] for f, c in text_features.items()}
        ex["idx"] = n
        if label_column in row:
            raw = row[label_column]
            if raw is None or raw == "":
                continue  # TFDS drops rows without a label.
            if task == "stsb":
                try:
                    ex["label"] = float(raw)
                except ValueError as e:
                    raise DataFileError(f"{path}:{lineno}: column '{label_column}' has "
                                        f"invalid value {raw!r}") from e
            elif raw in classes:
                ex["label"] = classes.index(raw)
            else:
                try:
                    value = int(raw)
                except ValueError as e:
                    raise DataFileError(
                        f"{path}:{lineno}: column '{label_column}' has invalid value "
                        f"{raw!r} (expected one of {list(classes)} or a class id)") from e
                if not 0 <= value < len(classes):
                    raise DataFileError(f"{path}:{lineno}: column '{label_column}' has "
                                        f"out-of-range class id {value}")
                ex["label"] = value
        else:
            ex["label"] = -1.0 if task == "stsb" else -1
        if any(v is None for v in ex.values()):
            continue  # TFDS's "corrupted rows" filter.
        out.append(ex)
    return out


def glue_reader(task: str) -> Callable[[str, str], List[Dict[str, Any]]]:
    def read(path: str, split: str) -> List[Dict[str, Any]]:
        return _read_glue(task, path, split)
    return read


# ---------------------------------------------------------------------------
# Examples -> tf.data.
# ---------------------------------------------------------------------------
def _column(values: List[Any], spec: tf.TensorSpec):
    """One feature of all examples as a tensor (ragged for variable-length lists)."""
    if spec.shape.rank == 0:
        return tf.constant(values, dtype=spec.dtype, shape=[len(values)])
    if spec.shape.rank == 1 and spec.shape[0] is None:
        flat = [v for row in values for v in row]
        return tf.RaggedTensor.from_row_lengths(
            tf.constant(flat, dtype=spec.dtype, shape=[len(flat)]),
            tf.constant([len(row) for row in values], dtype=tf.int64))
    raise ValueError(f"unsupported feature spec {spec}")


def examples_to_dataset(examples: Sequence[Mapping[str, Any]],
                        signature: Mapping[str, Any], shuffle: bool = False,
                        seed: Optional[int] = None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``examples`` with element spec exactly ``signature``.

    The examples are held as (ragged) column tensors and, when shuffling or when
    there are variable-length features, read by index: ``shuffle`` permutes the whole
    split anew at every iteration without a large shuffle buffer.
    """

    def build(sig, path):
        out = {}
        for k, spec in sig.items():
            if isinstance(spec, Mapping):
                out[k] = build(spec, path + (k,))
            else:
                values = []
                for ex in examples:
                    v = ex
                    for p in path + (k,):
                        v = v[p]
                    values.append(v)
                out[k] = _column(values, spec)
        return out

    columns = build(signature, ())
    n = len(examples)
    flat = all(s.shape.rank == 0 for s in tf.nest.flatten(signature))
    if flat and not (shuffle and n > 1):
        return tf.data.Dataset.from_tensor_slices(columns)  # fastest to build
    ds = tf.data.Dataset.range(n)
    if shuffle and n > 1:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.map(lambda i: tf.nest.map_structure(lambda c: c[i], columns),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
