"""Fuzzing the SuperGLUE JSONL / GLUE TSV readers: on any bytes, wrong types
or missing fields they either read the rows exactly as written, or raise our DataFileError
whose message starts with `<file>:<line>:` - never any other exception."""

import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xprompt_jax.errors import DataError
from xprompt_jax.tasks import readers

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

RTE_FIELDS = {"premise": st.text(max_size=20), "hypothesis": st.text(max_size=20),
              "idx": st.integers(0, 10**6), "label": st.sampled_from(["entailment",
                                                                      "not_entailment"])}
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                        | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=6)


def _read(tmp_path, reader, data: bytes, name="train.jsonl", split="train"):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return reader(str(path), split), None
    except DataError as e:
        return None, e


def _assert_located(error, path):
    assert isinstance(error, readers.DataFileError), type(error)
    assert re.match(rf"^{re.escape(str(path))}:\d+: ", str(error)), str(error)
    assert "\n" not in str(error)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(tmp_path, data):
    for reader, name in ((readers.SUPERGLUE_READERS["rte"], "train.jsonl"),
                         (readers.glue_reader("rte"), "train.tsv"),
                         (readers.glue_reader("cola"), "train.tsv"),
                         (readers.SUPERGLUE_READERS["record"], "train.jsonl")):
        rows, error = _read(tmp_path, reader, data, name)
        if error is not None:
            _assert_located(error, tmp_path / name)
        else:
            assert isinstance(rows, list)


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries(RTE_FIELDS), min_size=1, max_size=4),
       drop=st.lists(st.sampled_from(sorted(RTE_FIELDS)), max_size=2),
       bad_value=st.one_of(st.none(), st.tuples(st.sampled_from(sorted(RTE_FIELDS)), ANY_JSON)),
       bad_row=st.integers(0, 3))
def test_rte_rows_wrong_types_and_missing_fields(tmp_path, rows, drop, bad_value, bad_row):
    """Good rows come back exactly; a damaged row gives an error naming its line."""
    bad_row = min(bad_row, len(rows) - 1)
    damaged = [dict(r) for r in rows]
    for field in drop:
        damaged[bad_row].pop(field, None)
    if bad_value is not None:
        damaged[bad_row][bad_value[0]] = bad_value[1]
    data = "\n".join(json.dumps(r) for r in damaged).encode()
    out, error = _read(tmp_path, readers.SUPERGLUE_READERS["rte"], data)
    classes = readers.SUPERGLUE_LABEL_CLASSES["rte"]

    def valid(r):
        return (all(k in r for k in RTE_FIELDS) and isinstance(r["premise"], str)
                and isinstance(r["hypothesis"], str) and type(r["idx"]) is int
                and -2**31 <= r["idx"] < 2**31 and r["label"] in classes
                and isinstance(r["label"], str))

    if all(valid(r) for r in damaged):
        assert error is None, error
        assert out == [{"premise": r["premise"], "hypothesis": r["hypothesis"],
                        "idx": r["idx"], "label": classes.index(r["label"])}
                       for r in damaged]
    else:
        assert out is None
        _assert_located(error, tmp_path / "train.jsonl")
        first_bad = next(i for i, r in enumerate(damaged) if not valid(r))
        assert str(error).startswith(f"{tmp_path / 'train.jsonl'}:{first_bad + 1}: ")


@SETTINGS
@given(cells=st.lists(st.lists(st.text(alphabet=st.characters(blacklist_characters="\t\r\n"),
                                       max_size=6), min_size=0, max_size=5),
                      min_size=0, max_size=4))
def test_glue_tsv_cells(tmp_path, cells):
    header = "index\tsentence1\tsentence2\tlabel"
    data = "\n".join([header] + ["\t".join(row) for row in cells]).encode()
    out, error = _read(tmp_path, readers.glue_reader("rte"), data, "train.tsv")
    if error is not None:
        _assert_located(error, tmp_path / "train.tsv")
        return
    classes = readers.GLUE_LABEL_CLASSES["rte"]
    for ex in out:
        assert set(ex) == {"sentence1", "sentence2", "idx", "label"}
        assert 0 <= ex["label"] < len(classes)


def test_named_bad_inputs(tmp_path):
    """The messages users see for the issue's list of bad inputs."""
    rte = readers.SUPERGLUE_READERS["rte"]
    path = tmp_path / "train.jsonl"
    good = '{"premise": "a", "hypothesis": "b", "idx": 0, "label": "entailment"}'
    cases = {
        good + "\n{\"hypothesis\": \"b\", \"idx\": 1, \"label\": \"entailment\"}":
            f"{path}:2: missing field 'premise'",
        good + "\n" + good.replace('"a"', "3"):
            f"{path}:2: field 'premise' has type int, expected str",
        good.replace("entailment", "maybe"):
            f"{path}:1: field 'label' has invalid value 'maybe' (expected one of "
            "['entailment', 'not_entailment'])",
        good + "\n{oops":
            f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes)",
    }
    for text, line in cases.items():
        _, error = _read(tmp_path, rte, text.encode())
        assert str(error) == line
    _, error = _read(tmp_path, rte, good.encode() + b"\n" + good.encode().replace(b"a", b"\xff"))
    assert str(error) == f"{path}:2: not valid UTF-8 (byte 0xff at column 14; expected UTF-8 text)"
    tsv = tmp_path / "train.tsv"
    _, error = _read(tmp_path, readers.glue_reader("rte"),
                     b"index\tsentence1\tsentence2\tlabel\n0\ta\t\xc3\tentailment\n", "train.tsv")
    assert str(error) == f"{tsv}:2: not valid UTF-8 (byte 0xc3 at column 5; expected UTF-8 text)"


def test_empty_split_file_is_a_data_error(tmp_path):
    from xprompt_jax.tasks import sources

    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.jsonl").write_text("\n")
    source = sources.LocalDataSource("super_glue/rte", "superglue", "RTE",
                                     readers.SUPERGLUE_SPLIT_FILES,
                                     readers.SUPERGLUE_READERS["rte"],
                                     readers.SUPERGLUE_SIGNATURES["rte"], data_dir=str(tmp_path))
    with pytest.raises(readers.DataFileError,
                       match=re.escape(f"{tmp_path / 'RTE' / 'train.jsonl'}:1: no examples")):
        source.get_dataset("train")


# ------------------------------------------------------------------ prompt files
def test_a_non_finite_prompt_file_is_refused_naming_the_file(tmp_path):
    """One NaN (or Inf) in a prompt file: refused with the file named wherever a prompt
    file is read (infer's bank, a prompt init, a numpy checkpoint prompt), before any
    model runs; an all-finite file reads back unchanged."""
    from xprompt_jax.prompts import initializers
    from xprompt_jax.runs.prompt_files import stack_prompt_files
    from xprompt_jax.training.checkpointing import load_numpy_prompt

    good = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "good.npy", good)
    for bad_value in (np.nan, np.inf):
        bad = good.copy()
        bad[1, 2] = bad_value
        path = tmp_path / "bad.npy"
        np.save(path, bad)
        for read in (lambda: stack_prompt_files([str(tmp_path / "good.npy"), str(path)]),
                     lambda: initializers.from_file(str(path)),
                     lambda: load_numpy_prompt(str(path))):
            with pytest.raises(DataError, match=re.escape(f"{path}: 1 of 12 values are NaN "
                                                          "or Inf (the first at index (1, 2))")):
                read()
    np.testing.assert_array_equal(load_numpy_prompt(str(tmp_path / "good.npy")), good)
    np.testing.assert_array_equal(stack_prompt_files([str(tmp_path / "good.npy")])[0], good)


@pytest.mark.parametrize("content,says", [
    (b"0.1 0.2\n0.3 0.4\n", "no .npy file (it starts with b'0.1 0.'"),
    (b"", "empty"),
    (b"PK\x03\x04rest", "an .npz archive"),
    (None, "unreadable .npy"),  # a real .npy cut short
], ids=["text", "empty", "npz", "truncated"])
def test_a_prompt_file_that_is_no_npy_array_is_named_as_such(tmp_path, content, says):
    """A text file is reported as what it is, not as "pickled data" (numpy's message for
    anything without the .npy magic when unpickling is off)."""
    from xprompt_jax.fileio import read_npy

    path = tmp_path / "prompt.npy"
    if content is None:
        np.save(path, np.ones((20, 128), np.float32))
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_npy(path, "prompt file")
    assert str(e.value).startswith(f"prompt file {path}: ") and says in str(e.value)
    assert "pickle" not in str(e.value)
    with pytest.raises(DataError, match=f"prompt file {tmp_path / 'missing.npy'} does not "
                                        "exist"):
        read_npy(tmp_path / "missing.npy", "prompt file")


def test_json_records_hold_no_bare_nan(tmp_path):
    """JSON has no NaN: a record with NaN / Inf scores is written with null there, and
    the file parses under a strict parser (bare NaN made it invalid)."""
    from xprompt_jax.fileio import jsonable_loose, write_json_atomic

    record = {"a": float("nan"), "b": [1.5, np.float32("inf")], "c": np.array([np.nan, 2.0])}
    path = tmp_path / "r.json"
    write_json_atomic(path, record)

    def strict(token):
        raise ValueError(f"bare {token} in the file")

    assert json.loads(path.read_text(), parse_constant=strict) == \
        {"a": None, "b": [1.5, None], "c": [None, 2.0]}
    assert jsonable_loose(record) == {"a": None, "b": [1.5, None], "c": [None, 2.0]}


def test_a_restored_non_finite_prompt_is_refused():
    """evaluate / export restore the run's trainable params through `checked_trainable`:
    a NaN there is one line naming the checkpoint and the parameter, not a confident
    answer of the first label for every example."""
    from training_utils import tiny_prompted_model
    from xprompt_jax.errors import CheckpointError
    from xprompt_jax.runs.restore import abstract_trainable, checked_trainable
    from xprompt_jax.training.params import flatten, unflatten

    model = tiny_prompted_model()
    shapes = flatten(abstract_trainable(model))
    saved = {k: np.zeros(v.shape, np.float32) for k, v in shapes.items()}
    assert set(flatten(checked_trainable(model, unflatten(saved), ".*prompt.*", "run x"))) \
        == set(shapes)
    key = sorted(saved)[0]
    saved[key][0, 0] = np.nan
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint 5 of /r: parameter {key} "
                                                        "holds 1 NaN/Inf values")):
        checked_trainable(model, unflatten(saved), ".*prompt.*", "checkpoint 5 of /r")
