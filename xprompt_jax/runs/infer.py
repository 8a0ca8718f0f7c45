"""Serve many prompts on one frozen model.

Requests (JSONL, one object a line): `"prompt"` (a name of INFER_PROMPTS) or `"task"`
(a prompt is found by the task's name, or the one prompt whose task it is), plus the task's
input fields, e.g. `{"task": "world_rte", "premise": "...", "hypothesis": "..."}`
(`label` and `idx` are optional; each field must have its JSON type as it is: an integer
field takes no 1.5 and no "3", a text field only valid UTF-8 text). INFER_PROMPTS maps a
prompt name to a `.npy` file `[m, e]` (its task is the name) or to `{'file': ...,
'task': ...}`; all prompts share one length m (they form one PromptBank,
`prompt_files.bank_model_from_files`).

The requests of a task are batched together whatever their prompt (each row carries its
prompt id: `evaluation.RowPromptIds`) and scored by the evaluator: rank classification
(the task's verbalizers, INFER_MODE='rank_classification') or greedy generation.
Predictions are written in input order, one line per request line: `{"line": n, "prompt":
..., "task": ..., "prediction": ...}` (rank classification adds `"scores"`). A bad line
(not JSON, not an object, unknown prompt, a `task` other than its prompt's, a missing field,
a value of the wrong type or range, text that is not UTF-8, a line the task's preprocessors
cannot take) is logged with the file, its line number and field, written as `{"line": n,
"error": ...}` and skipped; every other line is still answered.

The request file may come from someone else: it is streamed (CHUNK_LINES lines at a time
are held and answered, the answers written on as they come), a line longer than
MAX_LINE_CHARS is skipped as a bad line without being held, and a value echoed in an error
(an unknown prompt or task name) is cut to ECHO_CHARS characters.

INFER_OUTPUT is checked before the model is loaded (not the request file by any name, not
a folder; its folder is created if missing and must be writable). It is replaced
atomically when every line is answered; if the run fails midway (a full disk, Ctrl-C, an
error in a later chunk), the answers written so far are kept in `<INFER_OUTPUT>.partial`
(complete lines only; `.partial.1`, ... when an older one is there, which is kept) and an
earlier INFER_OUTPUT is left whole.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from etils import epath

from .. import gin_utils, interrupts
from ..errors import ConfigError, DataError, one_line
from ..evaluation.evaluator import MODES, EvalConfig, Evaluator
from ..evaluation.metrics import default_label_strings_fn
from ..evaluation.variants import RowPromptIds
from ..fileio import is_local, is_writer, to_jsonable, write_lines_atomic
from ..training.run_logging import progress_bar
from .config import RunConfig
from .flags import import_task_module
from .frozen import load_frozen_model
from .prompt_files import bank_model_from_files

logger = logging.getLogger("xprompt_jax")

OPTIONAL_FIELDS = {"label": -1, "idx": 0}
MAX_LINE_CHARS = 1 << 20      # a request line (characters); longer lines are skipped
CHUNK_LINES = 8192            # request lines held and answered at a time
ECHO_CHARS = 80               # the longest value repeated in an error message
MAX_ERRORS_RETURNED = 100     # errors listed in infer()'s result (all are written)


def shown(value: Any) -> str:
    """`repr(value)`, cut to ECHO_CHARS characters (a value from a request line)."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS - 3]}... " \
        f"({len(text)} characters)"


class BadLine(ValueError):
    pass


def parse_prompt_spec(spec: Mapping[str, Any]) -> List[Tuple[str, str, str]]:
    """INFER_PROMPTS -> [(name, file, task)] in the given order."""
    if not spec:
        raise ConfigError("INFER_PROMPTS is empty: map prompt names to .npy files, e.g. "
                          "{'world_rte': '/path/prompt.npy'}")
    out = []
    for name, value in dict(spec).items():
        if isinstance(value, str):
            out.append((str(name), value, str(name)))
        elif isinstance(value, Mapping) and "file" in value:
            out.append((str(name), str(value["file"]), str(value.get("task", name))))
        else:
            raise ConfigError(f"INFER_PROMPTS[{name!r}] = {value!r}: expected a .npy path or "
                              "{'file': ..., 'task': ...}")
    return out


class TaskInputs:
    """A task's raw input fields (from one example of its source) and its preprocessing
    of in-memory requests (the task's own preprocessors: template, tokenization, EOS)."""

    def __init__(self, task_name: str, feature_lengths: Mapping[str, int]):
        import seqio

        self.name = task_name
        self.task = seqio.get_mixture_or_task(task_name)
        self.feature_lengths = dict(feature_lengths)
        self.dtypes = self._source_dtypes()
        self.required = [f for f in self.dtypes if f not in OPTIONAL_FIELDS]
        self.label_strings_fn = default_label_strings_fn(task_name)

    def _source_dtypes(self) -> Dict[str, Any]:
        import tensorflow as tf

        for split in ("test", "validation", "train"):
            try:
                spec = self.task.source.get_dataset(split=split).element_spec
            except Exception:  # pylint: disable=broad-except  # the split may not exist
                continue
            return {k: v.dtype for k, v in spec.items() if v.shape.rank == 0 and
                    v.dtype in (tf.string, tf.int32, tf.int64, tf.float32, tf.bool)}
        raise ConfigError(f"task {self.name!r}: no split of its source could be read to learn "
                          "its input fields")

    def check(self, line_no: int, request: Mapping[str, Any]) -> Dict[str, Any]:
        """The request's fields for the task; BadLine naming the line and field."""
        missing = [f for f in self.required if f not in request]
        if missing:
            raise BadLine(f"line {line_no}: field {missing[0]!r} missing (task {self.name} "
                          f"needs {', '.join(self.required)})")
        out = {}
        for field, dtype in self.dtypes.items():
            value = request.get(field, OPTIONAL_FIELDS.get(field))
            if field == "idx" and field not in request:
                value = line_no
            problem = value_problem(value, dtype)
            if problem:
                raise BadLine(f"line {line_no}: field {field!r} {problem}")
            out[field] = value
        return out

    def preprocess(self, requests: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """Checked requests -> tokenized examples (`inputs`, ...), in order."""
        import tensorflow as tf

        if not requests:
            return []
        columns = {f: tf.constant([r[f] for r in requests], dtype=d)
                   for f, d in self.dtypes.items()}
        ds = tf.data.Dataset.from_tensor_slices(columns)
        ds = self.task.preprocess_precache(ds)
        ds = self.task.preprocess_postcache(ds, sequence_length=self.feature_lengths)
        out = []
        for ex in ds.as_numpy_iterator():
            out.append({k: (v.decode("utf-8", errors="replace") if isinstance(v, bytes)
                            else v) for k, v in ex.items()})
        if len(out) != len(requests):
            raise DataError(f"task {self.name}: its preprocessors kept {len(out)} of "
                            f"{len(requests)} requests (a filtering preprocessor?)")
        return out

    def preprocess_lines(self, rows: Sequence[Tuple[int, Mapping[str, Any]]]
                         ) -> Tuple[List[Dict[str, Any]], Dict[int, str]]:
        """(examples of the rows the task's preprocessors accept, in order; {line: error}
        of the others). The rows are preprocessed together; only when that fails are
        they redone one by one, so one row the preprocessors cannot take (or drop) is
        skipped as a bad line instead of failing its whole chunk."""
        try:
            return self.preprocess([r for _, r in rows]), {}
        except Exception:  # pylint: disable=broad-except  # found row by row below
            pass
        examples, errors = [], {}
        for line_no, request in rows:
            try:
                examples.extend(self.preprocess([request]))
            except Exception as e:  # pylint: disable=broad-except  # that line's fault
                errors[line_no] = (f"line {line_no}: task {self.name}'s preprocessing "
                                   f"failed: {shown_error(e)}")
        return examples, errors


def value_problem(value: Any, dtype) -> Optional[str]:
    """Why `value` (from a JSON request) cannot be a field of TF type `dtype` as it is
    (no rounding, no wrapping, no re-encoding), or None. JSON's numbers, strings and
    booleans are kept apart: 1.5 is no integer, true is no number, "3" is no number."""
    import tensorflow as tf

    kind = type(value).__name__ if value is not None else "null"
    if dtype == tf.string:
        if not isinstance(value, str):
            return f"must be a string, got {kind}"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            char = value[e.start]
            if "\udc80" <= char <= "\udcff":  # a raw byte kept by surrogateescape
                return (f"is not UTF-8 text (byte 0x{ord(char) - 0xdc00:02x} at "
                        f"character {e.start + 1})")
            return f"is not UTF-8 text (lone surrogate \\u{ord(char):04x} at character " \
                   f"{e.start + 1})"
        return None
    if dtype == tf.bool:
        return None if isinstance(value, bool) else f"must be true or false, got {kind}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, got {kind}"
    if dtype.is_integer:
        if not isinstance(value, int):
            return f"must be an integer, got {shown(value)}"
        if not dtype.min <= value <= dtype.max:
            return f"{shown(value)} is out of range ({dtype.name}: {dtype.min}..{dtype.max})"
        return None
    if not math.isfinite(value) or abs(value) > dtype.max:
        return f"must be a finite {dtype.name} number, got {shown(value)}"
    return None


def shown_error(error: BaseException) -> str:
    """An exception's message on one line, cut to 4 * ECHO_CHARS characters."""
    text = one_line(error)
    limit = 4 * ECHO_CHARS
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _lines(path: str) -> Iterator[Tuple[int, Optional[str]]]:
    """(line number, text) of a text file, streamed; text is None for a line longer than
    MAX_LINE_CHARS, whose rest is read past without being held. A byte that is not UTF-8
    is kept as a surrogate (surrogateescape), so the field holding it is reported, never
    answered with a replacement character."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        line_no = 0
        while True:
            text = f.readline(MAX_LINE_CHARS + 1)
            if not text:
                return
            line_no += 1
            if len(text) > MAX_LINE_CHARS and not text.endswith("\n"):
                while text and not text.endswith("\n"):
                    text = f.readline(MAX_LINE_CHARS)
                yield line_no, None
            else:
                yield line_no, text


def iter_requests(path: str, names: Sequence[str], task_of: Mapping[str, str]
                  ) -> Iterator[Tuple[int, Optional[str], Any]]:
    """(line, prompt name, request) per non-empty line of a JSONL file, streamed; a bad
    line gives (line, None, its error message)."""
    by_task: Dict[str, List[str]] = {}
    for name in names:
        by_task.setdefault(task_of[name], []).append(name)
    for line_no, text in _lines(path):
        if text is not None and not text.strip():
            continue
        try:
            if text is None:
                raise BadLine(f"line {line_no}: longer than {MAX_LINE_CHARS} characters; "
                              "skipped unread")
            try:
                request = json.loads(text)
            except json.JSONDecodeError as e:
                raise BadLine(f"line {line_no}: not valid JSON ({e.msg} at column "
                              f"{e.colno})") from None
            if not isinstance(request, dict):
                raise BadLine(f"line {line_no}: expected a JSON object, got "
                              f"{type(request).__name__}")
            name = request.get("prompt")
            if name is None:
                task = request.get("task")
                if task is None:
                    raise BadLine(f"line {line_no}: field 'prompt' (or 'task') missing")
                if isinstance(task, str) and task in task_of:
                    name = task
                elif isinstance(task, str) and len(by_task.get(task, [])) == 1:
                    name = by_task[task][0]
                elif isinstance(task, str) and task in by_task:
                    raise BadLine(f"line {line_no}: field 'task': {task!r} has several "
                                  f"prompts ({', '.join(by_task[task])}); name one in "
                                  "'prompt'")
                else:
                    raise BadLine(f"line {line_no}: field 'task': no prompt for task "
                                  f"{shown(task)} (known: {', '.join(sorted(by_task))})")
            if not isinstance(name, str) or name not in task_of:
                raise BadLine(f"line {line_no}: field 'prompt': unknown prompt {shown(name)} "
                              f"(known: {', '.join(names)})")
            task = request.get("task")
            if task is not None and task != task_of[name]:
                raise BadLine(f"line {line_no}: field 'task': {shown(task)}, but prompt "
                              f"{name!r} answers task {task_of[name]!r}")
            yield line_no, name, request
        except BadLine as e:
            yield line_no, None, str(e)


def read_requests(path: str, names: Sequence[str], task_of: Mapping[str, str]):
    """(good [(line, prompt name, request)], errors {line: message}) of a JSONL file, all
    held (`infer` streams `iter_requests` instead)."""
    good, errors = [], {}
    for line_no, name, item in iter_requests(path, names, task_of):
        if name is None:
            errors[line_no] = item
        else:
            good.append((line_no, name, item))
    return good, errors


def check_output_path(input_path: str, output_path: str) -> None:
    """Before anything is computed: INFER_OUTPUT is not INFER_INPUT (by any name: a
    link, `./`, another spelling), not a folder, and its folder exists (created if
    missing) and is writable; ConfigError naming the setting otherwise."""
    if is_local(output_path):
        if os.path.realpath(output_path) == os.path.realpath(input_path) or (
                os.path.exists(output_path) and os.path.samefile(output_path, input_path)):
            raise ConfigError(f"INFER_OUTPUT {output_path!r} is the request file INFER_INPUT "
                              f"{input_path!r}: the answers would replace the requests; "
                              "name another output file")
    elif str(output_path) == str(input_path):
        raise ConfigError(f"INFER_OUTPUT {output_path!r} is INFER_INPUT: the answers would "
                          "replace the requests; name another output file")
    path = epath.Path(output_path)
    if path.is_dir():
        raise ConfigError(f"INFER_OUTPUT {output_path!r} is a folder; name a file in it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"INFER_OUTPUT {output_path!r}: its folder cannot be created "
                          f"({e.strerror or e})") from None
    if not path.parent.is_dir():
        raise ConfigError(f"INFER_OUTPUT {output_path!r}: {path.parent} is not a folder")
    if is_local(output_path) and not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"INFER_OUTPUT {output_path!r}: its folder {path.parent} is not "
                          "writable")


def _chunks(items: Iterator, size: int) -> Iterator[List]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def infer(run: RunConfig, *, input_path: str, output_path: str, prompts: Mapping[str, Any],
          infer_mode: str = "rank_classification", batch_size: int = 32,
          progress: Optional[bool] = None) -> Dict[str, Any]:
    """Answers every good request line; returns {'answered', 'skipped', 'errors' (the
    first MAX_ERRORS_RETURNED messages), 'input'}."""
    gin_utils.check_required("infer", {"model": run.model, "input_path": input_path,
                                       "output_path": output_path,
                                       "initial_checkpoint_path":
                                           run.frozen.initial_checkpoint_path})
    if infer_mode not in MODES:
        raise ConfigError(f"INFER_MODE={infer_mode!r}; expected one of {MODES}")
    import_task_module(run.task_module, run.task_name)
    spec = parse_prompt_spec(prompts)
    names = [n for n, _, _ in spec]
    task_of = {n: t for n, _, t in spec}
    for task in dict.fromkeys(task_of.values()):  # INFER_PROMPTS may name other tasks
        import_task_module(None, task)
    if not os.path.isfile(input_path):
        raise DataError(f"INFER_INPUT {input_path!r} does not exist")
    if is_writer():
        check_output_path(input_path, output_path)
    tasks = {t: TaskInputs(t, run.feature_lengths) for t in dict.fromkeys(task_of.values())}
    if infer_mode == "rank_classification":
        for t in tasks.values():
            if t.label_strings_fn is None:
                raise ConfigError(f"rank classification needs label strings for task "
                                  f"{t.name!r}; use INFER_MODE='generation'")
    num_lines = sum(1 for _, text in _lines(input_path) if text is None or text.strip())

    model, trainable = bank_model_from_files(run.model, [f for _, f, _ in spec])
    frozen = load_frozen_model(model, run.frozen, run.feature_lengths, run.data.seed)
    variables = frozen.variables(trainable)
    config = EvalConfig(mode=infer_mode, batch_size=batch_size)
    prompt_id = {n: i for i, n in enumerate(names)}
    counts = {"answered": 0, "skipped": 0}
    first_errors: List[str] = []

    def answer(chunk) -> Dict[int, Dict[str, Any]]:
        """{line: output record} of one chunk of request lines."""
        out: Dict[int, Dict[str, Any]] = {}

        def skip(line_no: int, message: str) -> None:
            out[line_no] = {"line": line_no, "error": message}
            logger.error("%s: skipped %s", input_path, message)
            counts["skipped"] += 1
            bar.update(1)
            if len(first_errors) < MAX_ERRORS_RETURNED:
                first_errors.append(message)

        checked: Dict[str, List[Tuple[int, str, Dict[str, Any]]]] = {}
        for line_no, name, item in chunk:
            if name is not None:
                try:
                    fields = tasks[task_of[name]].check(line_no, item)
                    checked.setdefault(task_of[name], []).append((line_no, name, fields))
                    continue
                except BadLine as e:
                    item = str(e)
            skip(line_no, item)
        for task, rows in checked.items():
            examples, bad = tasks[task].preprocess_lines([(r[0], r[2]) for r in rows])
            for line_no, message in bad.items():
                skip(line_no, message)
            rows = [r for r in rows if r[0] not in bad]
            if not rows:
                continue
            evaluator = Evaluator(model, task, run.feature_lengths, config,
                                  label_strings_fn=tasks[task].label_strings_fn,
                                  examples=examples)
            predictions = evaluator.predict(
                variables, RowPromptIds(model, [prompt_id[r[1]] for r in rows]),
                progress=bar.update)
            labels = evaluator.rank_options()[0] if predictions.scores else None
            for i, (line_no, name, _) in enumerate(rows):
                if predictions.texts[0][i] is None:  # NaN/Inf scores: no answer
                    skip(line_no, f"line {line_no}: the model's scores are not finite "
                                  f"({[float(s) for s in predictions.scores[0][i]]}); no "
                                  "answer")
                    continue
                record = {"line": line_no, "prompt": name, "task": task,
                          "prediction": predictions.texts[0][i]}
                if labels is not None:
                    record["scores"] = {label: float(s) for label, s in
                                        zip(labels[i], predictions.scores[0][i])}
                out[line_no] = record
                counts["answered"] += 1
        return out

    def output_lines() -> Iterator[str]:
        for chunk in _chunks(iter_requests(input_path, names, task_of), CHUNK_LINES):
            records = answer(chunk)
            for line_no in sorted(records):
                yield json.dumps(to_jsonable(records[line_no]), allow_nan=False)

    with frozen.activate(), progress_bar(num_lines, "infer: requests",
                                         enabled=progress) as bar, interrupts.phase(
            f"answering {input_path}", f"the answers written so far are kept in "
            f"{output_path}.partial (the line above names it), an earlier {output_path} is "
            "unchanged; rerun the same command to answer every line"):
        if is_writer():
            # Lines are written as their chunk is answered; a failure midway (a full
            # disk, Ctrl-C, a later chunk's error) keeps the answers written so far in
            # <output>.partial and leaves an earlier output file whole.
            write_lines_atomic(output_path, output_lines(), keep_partial=True)
        else:
            for _ in output_lines():  # every process runs the model on every chunk
                pass
    return {"answered": counts["answered"], "skipped": counts["skipped"],
            "errors": first_errors, "input": input_path}
