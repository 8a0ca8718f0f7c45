"""`python -m xprompt_jax.infer`: request parsing with line/field errors, and
mixed-prompt batches answering as each prompt alone (world, slow)."""

import json
import os

import numpy as np
import pytest

from xprompt_jax.runs import infer

REQUESTS = [
    '{"task": "world_rte", "premise": "mia owns a lily .", "hypothesis": "mia has a flower ."}',
    '{"prompt": "b", "passage": "mia owns a lily .", "question": "does mia have a flower"}',
    'not json',
    '["a list"]',
    '{"prompt": "nope", "premise": "x"}',
    '{"task": "world_copa", "premise": "x"}',
    '{"premise": "x"}',
    '',
    '{"prompt": "world_rte", "premise": "carol has a ball .", "hypothesis": "carol has a toy ."}',
]


def test_read_requests_reports_line_and_field(tmp_path):
    path = tmp_path / "req.jsonl"
    path.write_text("\n".join(REQUESTS) + "\n")
    good, errors = infer.read_requests(str(path), ["world_rte", "b"],
                                       {"world_rte": "world_rte", "b": "world_boolq"})
    assert [(n, name) for n, name, _ in good] == [(1, "world_rte"), (2, "b"), (9, "world_rte")]
    assert errors[3].startswith("line 3: not valid JSON")
    assert errors[4] == "line 4: expected a JSON object, got list"
    assert "field 'prompt': unknown prompt 'nope'" in errors[5]
    assert "field 'task': no prompt for task 'world_copa'" in errors[6]
    assert errors[7] == "line 7: field 'prompt' (or 'task') missing"
    assert sorted(errors) == [3, 4, 5, 6, 7]
    with pytest.raises(Exception, match="INFER_PROMPTS"):
        infer.parse_prompt_spec({"x": 3})


def _run(tmp_path, prompts, requests, tag, mode="rank_classification", requests_file=None):
    import gin

    from xprompt_jax import infer as infer_lib  # the CLI

    req = requests_file
    if req is None:
        req = tmp_path / f"{tag}.jsonl"
        req.write_text("\n".join(requests) + "\n")
    out = tmp_path / f"{tag}.out.jsonl"
    gin.clear_config()
    try:
        infer_lib.main(["infer", "--gin_file=models/world_tiny.gin",
                        "--gin_file=prompt_tuning.gin", "--gin_file=world/run.gin",
                        "--gin_file=runs/infer.gin", f"--gin.INFER_PROMPTS={prompts!r}",
                        f"--gin.INFER_INPUT='{req}'", f"--gin.INFER_OUTPUT='{out}'",
                        f"--gin.INFER_MODE='{mode}'", "--gin.INFER_BATCH_SIZE=4"])
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        gin.clear_config()
    return code, [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_mixed_prompt_batches_answer_as_each_prompt_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(infer, "CHUNK_LINES", 3)  # answered 3 lines at a time, as streamed
    rng = np.random.RandomState(0)
    files = {}
    for name in ("p0", "p1"):
        files[name] = str(tmp_path / f"{name}.npy")
        np.save(files[name], rng.uniform(-0.5, 0.5, (4, 128)).astype(np.float32))
    texts = [("mia owns a lily .", "mia has a flower ."), ("carol has a ball .", "bob runs ."),
             ("the map is green .", "the map is red ."), ("alice left .", "alice is here .")]
    lines = [json.dumps({"prompt": f"p{i % 2}", "premise": p, "hypothesis": h})
             for i, (p, h) in enumerate(texts * 2)]
    prompts = {n: {"file": f, "task": "world_rte"} for n, f in files.items()}
    code, mixed = _run(tmp_path, prompts, lines[:3] + ['{"prompt": "p0"}'] + lines[3:], "mix")
    assert code == 2  # one bad line: reported, skipped, the rest answered
    assert mixed[3] == {"line": 4, "error": "line 4: field 'premise' missing (task world_rte "
                                            "needs premise, hypothesis)"}
    mixed = [r for r in mixed if "error" not in r]
    assert len(mixed) == 8
    for name in ("p0", "p1"):
        _, alone = _run(tmp_path, {name: prompts[name]},
                        [ln for ln in lines if f'"{name}"' in ln], name)
        got = [r for r in mixed if r["prompt"] == name]
        assert [r["prediction"] for r in got] == [r["prediction"] for r in alone]
        for a, b in zip(got, alone):
            for label, score in a["scores"].items():
                assert abs(score - b["scores"][label]) < 1e-4
    code, gen = _run(tmp_path, prompts, lines[:2], "gen", mode="generation")
    assert code == 0 and [r["line"] for r in gen] == [1, 2]
    # Each generated answer is the greedy decode of its own prompt, recomputed with the
    # plain forward pass from the request text in world_rte's format (T5's RTE without the
    # task name), the world checkpoint and the prompt file; 4 target tokens (world/run.gin).
    assert [r["prompt"] for r in gen] == ["p0", "p1"]
    assert [r["prediction"] for r in gen] == [
        _reference_generation(files[f"p{i}"], premise, hypothesis, max_length=4)
        for i, (premise, hypothesis) in enumerate(texts[:2])]


def _reference_generation(prompt_file, premise, hypothesis, max_length):
    import seqio

    from training_utils import reference_greedy, world_variables
    from xprompt_jax.world import paths

    model, variables = world_variables(np.load(prompt_file))
    vocab = seqio.SentencePieceVocabulary(paths.vocab_path(), extra_ids=100)
    tokens = vocab.encode(f"hypothesis: {hypothesis} premise: {premise}") + [vocab.eos_id]
    [ids] = reference_greedy(model, variables, [tokens], max_length, vocab.eos_id)
    return vocab.decode(ids)


# Values a careless client sends: every JSON type, numbers out of range or not integral,
# NaN/Infinity (Python's json reads them), text that is no valid UTF-8 once encoded.
FUZZ_VALUES = [None, True, False, 0, 1, -1, 7, 1.5, 2.0, 2 ** 31, -2 ** 31 - 1, 2 ** 63,
               1e300, float("nan"), float("inf"), "", "mia has a lily .", "é ü 日本", "\ud800",
               "3", [], ["a"], {}, {"a": 1}]
FIELDS = {"world_rte": ("premise", "hypothesis"), "world_boolq": ("question", "passage")}
PROMPT_TASK = {"world_rte": "world_rte", "q": "world_boolq"}
RAW_BYTE = "@RAWBYTE@"  # replaced by the byte 0xff in the file


def _fuzz_line(rng):
    """(line text, the prompt a correct server answers it with or None), the verdict
    worked out here from the request format's rules, not by the server's code."""
    roll = rng.rand()
    if roll < 0.05:
        return '{"task": "world_rte", "premise": ', None
    if roll < 0.08:
        return json.dumps(["world_rte", "a", "b"]), None
    request = {}

    def pick(good):
        r = rng.rand()
        if r < 0.86:
            return good
        if r < 0.96:
            return FUZZ_VALUES[rng.randint(len(FUZZ_VALUES))]
        return KeyError  # absent

    for field, good in (("prompt", ["world_rte", "q", None][rng.randint(3)]),
                        ("task", ["world_rte", "world_boolq"][rng.randint(2)]),
                        ("premise", "mia owns a lily ."), ("hypothesis", "mia has a flower ."),
                        ("question", "does mia have a flower"), ("passage", "mia owns a lily ."),
                        ("idx", int(rng.randint(1000))), ("label", int(rng.randint(2)))):
        value = pick(good)
        if value is not KeyError:
            request[field] = value
    if rng.rand() < 0.05:
        request[["premise", "question"][rng.randint(2)]] = f"mia {RAW_BYTE} owns"
    # The verdict.
    prompt, task = request.get("prompt"), request.get("task")
    if prompt is None:
        expected = {"world_rte": "world_rte", "world_boolq": "q"}.get(task) \
            if isinstance(task, str) else None
    else:
        expected = prompt if isinstance(prompt, str) and prompt in PROMPT_TASK and \
            task in (None, PROMPT_TASK[prompt]) else None
    if expected is not None:
        for field in FIELDS[PROMPT_TASK[expected]]:
            value = request.get(field)
            if not isinstance(value, str) or RAW_BYTE in value or "\ud800" in value:
                expected = None
        for field, high in (("idx", 2 ** 31 - 1), ("label", 2 ** 63 - 1)):
            value = request.get(field, 0)
            if type(value) is not int or not -high - 1 <= value <= high:  # noqa: E721
                expected = None
    return json.dumps(request), expected


def test_fuzzed_request_lines_answer_every_good_line(tmp_path, monkeypatch, caplog):
    """200 request lines with random values in every field: no exception, each good line
    answered by its prompt, each bad one skipped with its line and field, in order; exit
    status 2. A line the task's preprocessing cannot take (injected: premise 'BOOM') is
    skipped alone, its chunk's other lines answered."""
    monkeypatch.setattr(infer, "CHUNK_LINES", 16)
    original = infer.TaskInputs.preprocess

    def preprocess(self, requests):
        if any(r.get("premise") == "BOOM" for r in requests):
            raise ValueError("cannot tokenize BOOM")
        return original(self, requests)

    monkeypatch.setattr(infer.TaskInputs, "preprocess", preprocess)
    rng = np.random.RandomState(0)
    prompts = {}
    for name, task in PROMPT_TASK.items():
        prompts[name] = {"file": str(tmp_path / f"{name}.npy"), "task": task}
        np.save(prompts[name]["file"], rng.uniform(-0.5, 0.5, (4, 128)).astype(np.float32))
    lines, expected = [], []
    for _ in range(200):
        text, verdict = _fuzz_line(rng)
        lines.append(text)
        expected.append(verdict)
    lines[7] = json.dumps({"task": "world_rte", "premise": "BOOM", "hypothesis": "x"})
    expected[7] = None
    assert 40 < sum(v is not None for v in expected) < 160  # both kinds well represented
    req = tmp_path / "fuzz.jsonl"
    req.write_bytes(b"\n".join(t.encode("utf-8").replace(RAW_BYTE.encode(), b"\xff")
                               for t in lines) + b"\n")
    code, out = _run(tmp_path, prompts, [], "fuzz_unused", requests_file=req)
    assert code == 2
    assert [r["line"] for r in out] == list(range(1, 201))
    for record, verdict in zip(out, expected):
        if verdict is None:
            assert "prediction" not in record
            assert record["error"].startswith(f"line {record['line']}: ")
        else:
            assert record.get("prompt") == verdict, record
            assert record["prediction"] in ("entailment", "not_entailment", "True", "False")
    assert "preprocessing failed: cannot tokenize BOOM" in out[7]["error"]
    logged = [r.getMessage() for r in caplog.records if "skipped line" in r.getMessage()]
    assert len(logged) == sum(v is None for v in expected)
    assert all(m.startswith(f"{req}: skipped line ") for m in logged)


def _prompt_file(tmp_path):
    path = str(tmp_path / "p.npy")
    np.save(path, np.random.RandomState(0).uniform(-0.5, 0.5, (4, 128)).astype(np.float32))
    return path


def test_an_output_that_is_the_input_or_unwritable_is_refused_before_any_work(tmp_path,
                                                                             monkeypatch):
    """INFER_OUTPUT naming the request file (also through a symlink or `./`) would have
    replaced the requests with the answers: refused before the model is loaded, the
    request file unchanged; a missing output folder is created."""
    from xprompt_jax import cli
    from xprompt_jax.errors import ConfigError

    monkeypatch.setattr(infer, "bank_model_from_files",
                        lambda *a: pytest.fail("the model was loaded"))
    req = tmp_path / "req.jsonl"
    req.write_text(REQUESTS[0] + "\n")
    (tmp_path / "link.jsonl").symlink_to(req)
    monkeypatch.chdir(tmp_path)
    for output in (str(req), "./req.jsonl", str(tmp_path / "link.jsonl")):
        with pytest.raises(ConfigError, match="is the request file INFER_INPUT"):
            infer.check_output_path(str(req), output)
    with pytest.raises(ConfigError, match="is a folder"):
        infer.check_output_path(str(req), str(tmp_path))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="its folder cannot be created"):
        infer.check_output_path(str(req), str(tmp_path / "afile" / "out.jsonl"))
    infer.check_output_path(str(req), str(tmp_path / "new" / "deeper" / "out.jsonl"))
    assert (tmp_path / "new" / "deeper").is_dir()
    # Through the CLI: one line, exit 2, the requests untouched.
    code = None
    import gin
    from xprompt_jax import infer as infer_lib
    gin.clear_config()
    try:
        cli.run_cli(infer_lib.main, [
            "infer", "--gin_file=models/world_tiny.gin", "--gin_file=prompt_tuning.gin",
            "--gin_file=world/run.gin", "--gin_file=runs/infer.gin",
            f"--gin.INFER_PROMPTS={{'world_rte': {_prompt_file(tmp_path)!r}}}",
            f"--gin.INFER_INPUT='{req}'", f"--gin.INFER_OUTPUT='{req}'"])
    except SystemExit as e:
        code = e.code
    finally:
        gin.clear_config()
    assert code == 2
    assert req.read_text() == REQUESTS[0] + "\n"


@pytest.mark.parametrize("fault", ["disk_full", "interrupt"])
def test_a_run_failing_midway_keeps_the_answers_written(tmp_path, monkeypatch, fault):
    """CHUNK_LINES=2, six request lines: the third chunk fails (a full disk while writing
    its answers, or Ctrl-C while scoring it). The four answered lines are kept, complete,
    in <output>.partial; an earlier output file is left whole."""
    import errno

    from xprompt_jax import fileio
    from xprompt_jax.errors import PartialWriteError

    monkeypatch.setattr(infer, "CHUNK_LINES", 2)
    line = json.loads(REQUESTS[0])
    lines = [json.dumps(dict(line, idx=i)) for i in range(6)]
    out = tmp_path / "fail.out.jsonl"
    out.write_text("the previous output\n")
    if fault == "disk_full":
        open_exclusive = fileio.open_exclusive

        class FullDisk:  # the file system takes the first four answers and no more
            def __init__(self, f):
                self.f, self.lines = f, 0

            def writelines(self, items):
                for item in items:
                    if self.lines == 4:
                        self.f.write(item[:10])  # a torn fifth line reaches the file
                        raise OSError(errno.ENOSPC, "No space left on device")
                    self.f.write(item)
                    self.lines += 1

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(fileio, "open_exclusive", lambda *a: FullDisk(open_exclusive(*a)))
        expected = PartialWriteError
    else:
        predict, calls = infer.Evaluator.predict, []

        def interrupted(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return predict(self, *args, **kwargs)

        monkeypatch.setattr(infer.Evaluator, "predict", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        _run(tmp_path, {"world_rte": _prompt_file(tmp_path)}, lines, "fail")
    assert out.read_text() == "the previous output\n"
    kept = [json.loads(x) for x in (tmp_path / "fail.out.jsonl.partial").read_text()
            .splitlines()]
    assert [r["line"] for r in kept] == [1, 2, 3, 4]
    assert all(r["prediction"] in ("entailment", "not_entailment") for r in kept)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
