"""Serve many prompts on one frozen model: `python -m xprompt_jax.infer
--gin_file=models/<size>.gin --gin_file=prompt_tuning.gin --gin_file=runs/infer.gin
--gin.INFER_PROMPTS="{'world_rte': '/p/rte.npy', 'world_boolq': '/p/boolq.npy'}"
--gin.INFER_INPUT=requests.jsonl --gin.INFER_OUTPUT=predictions.jsonl`.

Requests (JSONL, one object a line): `"prompt"` (a name of INFER_PROMPTS) or `"task"`
(a prompt is found by the task's name, or the one prompt whose task it is), plus the task's
input fields, e.g. `{"task": "world_rte", "premise": "...", "hypothesis": "..."}`
(`label` and `idx` are optional). INFER_PROMPTS maps a prompt name to a `.npy` file
`[m, e]` (its task is the name) or to `{'file': ..., 'task': ...}`; all prompts share one
length m (they form one PromptBank, `prompts/bank.py`).

Requests of all prompts are batched together (each row carries its prompt id) and scored
by rank classification (the task's verbalizers, `INFER_MODE='rank_classification'`) or
greedy generation; predictions are written in input order, one line per request line:
`{"line": n, "prompt": ..., "task": ..., "prediction": ...}` (rank classification adds
`"scores"`). A bad line (not JSON, not an object, unknown prompt, a missing or non-text
field) is reported with its line number and field, written as `{"line": n, "error": ...}`
and skipped; every other line is still answered. Exit status 2 if any line was skipped.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import gin_utils
from .errors import ConfigError, DataError
from .prompts import bank as bank_lib
from .train import configure_from_argv, import_task_module
from .training import data as data_lib
from .training import evaluation as eval_lib
from .training import partitioning
from .training.params import merge_params, split_params
from .training.pretrained import load_pretrained_params
from .training.trainer import init_variables

logger = logging.getLogger("xprompt_jax")

OPTIONAL_FIELDS = {"label": -1, "idx": 0}
ROUTING_FIELDS = ("prompt", "task")


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
        self.label_strings_fn = eval_lib.default_label_strings_fn(task_name)

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
        import tensorflow as tf

        missing = [f for f in self.required if f not in request]
        if missing:
            raise BadLine(f"line {line_no}: field {missing[0]!r} missing (task {self.name} "
                          f"needs {', '.join(self.required)})")
        out = {}
        for field, dtype in self.dtypes.items():
            value = request.get(field, OPTIONAL_FIELDS.get(field))
            if field == "idx" and field not in request:
                value = line_no
            if dtype == tf.string:
                if not isinstance(value, str):
                    raise BadLine(f"line {line_no}: field {field!r} must be a string, got "
                                  f"{type(value).__name__}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadLine(f"line {line_no}: field {field!r} must be a number, got "
                              f"{type(value).__name__}")
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
            out.append({k: (v.decode("utf-8") if isinstance(v, bytes) else v)
                        for k, v in ex.items()})
        if len(out) != len(requests):
            raise DataError(f"task {self.name}: its preprocessors kept {len(out)} of "
                            f"{len(requests)} requests (a filtering preprocessor?)")
        return out


def read_requests(path: str, names: Sequence[str], task_of: Mapping[str, str]):
    """(good [(line, prompt name, request)], errors {line: message}) of a JSONL file."""
    by_task: Dict[str, List[str]] = {}
    for name in names:
        by_task.setdefault(task_of[name], []).append(name)
    good, errors = [], {}
    with open(path) as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
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
                    if task in task_of:
                        name = task
                    elif len(by_task.get(task, [])) == 1:
                        name = by_task[task][0]
                    elif task in by_task:
                        raise BadLine(f"line {line_no}: field 'task': {task!r} has several "
                                      f"prompts ({', '.join(by_task[task])}); name one in "
                                      "'prompt'")
                    else:
                        raise BadLine(f"line {line_no}: field 'task': no prompt for task "
                                      f"{task!r} (known: {', '.join(sorted(by_task))})")
                if name not in task_of:
                    raise BadLine(f"line {line_no}: field 'prompt': unknown prompt {name!r} "
                                  f"(known: {', '.join(names)})")
                good.append((line_no, name, request))
            except BadLine as e:
                errors[line_no] = str(e)
    return good, errors


def infer(*, model, input_path: str, output_path: str, prompts: Mapping[str, Any],
          task_feature_lengths: Mapping[str, int], initial_checkpoint_path: str,
          mixture_or_task_module: Optional[str] = None, checkpoint_format: str = "auto",
          infer_mode: str = "rank_classification", batch_size: int = 32,
          mesh_shape: Sequence[int] = (-1, 1), seed: int = 0,
          progress: Optional[bool] = None) -> Dict[str, Any]:
    """Answers every good request line; returns {'answered', 'skipped', 'errors'}."""
    from .ensemble import bank_model_from_files
    from .training.run_logging import progress_bar

    gin_utils.check_required("infer", dict(model=model, input_path=input_path,
                                           output_path=output_path,
                                           initial_checkpoint_path=initial_checkpoint_path))
    if infer_mode not in eval_lib.MODES:
        raise ConfigError(f"INFER_MODE={infer_mode!r}; expected one of {eval_lib.MODES}")
    import_task_module(mixture_or_task_module)
    spec = parse_prompt_spec(prompts)
    names = [n for n, _, _ in spec]
    task_of = {n: t for n, _, t in spec}
    if not os.path.isfile(input_path):
        raise DataError(f"INFER_INPUT {input_path!r} does not exist")
    good, errors = read_requests(input_path, names, task_of)
    tasks = {t: TaskInputs(t, task_feature_lengths) for t in dict.fromkeys(task_of.values())}
    if infer_mode == "rank_classification":
        for t in tasks.values():
            if t.label_strings_fn is None:
                raise ConfigError(f"rank classification needs label strings for task "
                                  f"{t.name!r}; use INFER_MODE='generation'")
    checked: Dict[str, List[Tuple[int, str, Dict[str, Any]]]] = {}
    for line_no, name, request in good:
        try:
            fields = tasks[task_of[name]].check(line_no, request)
        except BadLine as e:
            errors[line_no] = str(e)
            continue
        checked.setdefault(task_of[name], []).append((line_no, name, fields))
    items = []  # (line, name, task, example)
    for task, rows in checked.items():
        examples = tasks[task].preprocess([r[2] for r in rows])
        items += [(r[0], r[1], task, ex) for r, ex in zip(rows, examples)]
    items.sort(key=lambda it: it[0])
    routed = {it[0]: (it[1], it[2]) for it in items}
    eos_id = next(iter(tasks.values())).task.output_features["targets"].vocabulary.eos_id
    for line_no in sorted(errors):
        logger.error("%s: skipped %s", input_path, errors[line_no])

    bank_model, trainable = bank_model_from_files(model, [f for _, f, _ in spec])
    mesh = partitioning.make_mesh(tuple(mesh_shape))
    rules = partitioning.standard_logical_axis_rules()
    pretrained = load_pretrained_params(initial_checkpoint_path, checkpoint_format)
    with partitioning.activate(mesh, rules):
        variables = init_variables(bank_model, pretrained, task_feature_lengths,
                                   jax.random.PRNGKey(seed))
    variables.pop("params_axes", None)
    _, frozen = split_params(variables["params"], r".*prompt.*")
    variables = {"params": merge_params(trainable, frozen)}
    base, num = bank_lib.id_token_base(bank_model), len(names)
    pid = {n: i for i, n in enumerate(names)}
    answers: Dict[int, Dict[str, Any]] = {}
    options = {}
    if infer_mode == "rank_classification":
        for it in items:
            vocab = tasks[it[2]].task.output_features["targets"].vocabulary
            labels = list(tasks[it[2]].label_strings_fn(it[3]))
            options[it[0]] = (labels, [list(vocab.encode(lb)) + [vocab.eos_id]
                                       for lb in labels])
        num_options = max([len(v[0]) for v in options.values()] or [1])
    with partitioning.activate(mesh, rules), progress_bar(len(items), "infer",
                                                          enabled=progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            examples = [it[3] for it in chunk]
            ids = np.zeros((batch_size,), np.int32)
            ids[:len(chunk)] = [pid[it[1]] for it in chunk]
            if infer_mode == "rank_classification":
                feats = data_lib.option_features(examples, [options[it[0]][1] for it in chunk],
                                                 task_feature_lengths, batch_size, trim=True)
                feats = bank_lib.with_prompt_ids(feats, ids, base, num)
                scores = eval_lib._host(eval_lib._option_scores(bank_model, variables, feats,
                                                                num_options))
                for row, it in zip(scores, chunk):
                    labels = options[it[0]][0]
                    row = row[:len(labels)]
                    answers[it[0]] = {"prediction": labels[int(np.argmax(row))],
                                      "scores": {lb: float(s) for lb, s in zip(labels, row)}}
            else:
                feats = data_lib.examples_to_features(examples, task_feature_lengths,
                                                      batch_size, trim=True)
                tokens = bank_lib.prepend_id_tokens(feats["encoder_input_tokens"], ids, base,
                                                    num)
                out = eval_lib._host(eval_lib._decode_jit(
                    bank_model, variables, jnp.asarray(tokens),
                    task_feature_lengths["targets"], eos_id))
                for row, it in zip(out, chunk):
                    vocab = tasks[it[2]].task.output_features["targets"].vocabulary
                    ids_ = [int(t) for t in row]
                    if vocab.eos_id in ids_:
                        ids_ = ids_[:ids_.index(vocab.eos_id)]
                    answers[it[0]] = {"prediction": vocab.decode(ids_)}
            if bar is not None:
                bar.update(len(chunk))
    tmp = f"{output_path}.tmp"
    with open(tmp, "w") as f:
        for line_no in sorted(set(answers) | set(errors)):
            if line_no in errors:
                record = {"line": line_no, "error": errors[line_no]}
            else:
                name, task = routed[line_no]
                record = {"line": line_no, "prompt": name, "task": task, **answers[line_no]}
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, output_path)
    return {"answered": len(answers), "skipped": len(errors),
            "errors": [errors[k] for k in sorted(errors)]}


def main(argv: Sequence[str]) -> None:
    import gin

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_from_argv(argv)
    from xprompt_jax import infer as infer_lib  # the registered function

    result = gin_utils.call_configured(gin.get_configurable(infer_lib.infer),
                                       "xprompt_jax.infer")
    print(json.dumps({k: result[k] for k in ("answered", "skipped")}))
    if result["skipped"]:
        print(f"xprompt_jax.infer: {result['skipped']} bad line(s) skipped (written as "
              f"errors to the output): {result['errors'][0]}"
              f"{' ...' if result['skipped'] > 1 else ''}", file=sys.stderr)
        sys.exit(2)


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.infer")


if __name__ == "__main__":
    console_entry()
