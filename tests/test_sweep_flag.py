"""`--sweep` of the training CLIs: the SWEEP macro as a Python literal, bound as
`--gin.SWEEP` binds it; a bad literal, both given, or a CLI that trains no sweep is one
line naming the flag. Parse only: nothing trains here."""

import ast
import pathlib
import re
import shlex

import gin
import pytest
from absl import flags

from xprompt_jax.errors import ConfigError
from xprompt_jax.runs.config import configured_run
from xprompt_jax.runs.flags import configure_from_argv

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORLD = ["--gin_file=models/world_tiny.gin", "--gin_file=prompt_tuning.gin",
         "--gin_file=world/run.gin", "--gin.MODEL_DIR='/tmp/unused'"]
GRID = "{'seed': [0, 1, 2], 'learning_rate': [0.1, 0.3]}"


def _parsed_sweep(*args, sweep=True):
    """The SWEEP the run sees (RunConfig.sweep) after the CLI's flag parsing."""
    gin.clear_config()
    flags.FLAGS.unparse_flags()  # absl keeps values (and appends multi flags) per process
    try:
        configure_from_argv(["train", *WORLD, *args], sweep=sweep)
        return configured_run().sweep
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("value", [GRID, "[{'learning_rate': 0.1, 'weight_decay_rate': 1e-05},"
                                          " {'learning_rate': 1.0, 'weight_decay_rate': 0.0}]",
                                   "{'prompt_init': ['uniform', 'class_labels']}"])
def test_sweep_flag_binds_what_gin_sweep_binds(value):
    by_flag = _parsed_sweep(f"--sweep={value}")
    assert by_flag == _parsed_sweep(f"--gin.SWEEP={value}")
    assert by_flag == ast.literal_eval(value)
    assert _parsed_sweep() is None  # a later parse without the flag: no SWEEP left over


@pytest.mark.parametrize("value,words", [
    ("{'seed': [0, 1]", ["--sweep=", "not a Python literal"]),
    ("learning_rate=0.1", ["--sweep=", "not a Python literal"]),
    ("{'seeds': [0, 1]}", ["--sweep:", "SWEEP", "'seeds'", "name the seed axis 'seed'"]),
    ("{'learning_rate': []}", ["--sweep:", "SWEEP", "empty"]),
    ("0.3", ["--sweep:", "SWEEP is 0.3"]),
])
def test_bad_sweep_flag_is_one_line_naming_it(value, words):
    with pytest.raises(ConfigError) as err:
        _parsed_sweep(f"--sweep={value}")
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_sweep_flag_and_gin_sweep_together_is_one_line():
    for other in (f"--gin.SWEEP={GRID}", f"--gin_bindings=SWEEP = {GRID}"):
        with pytest.raises(ConfigError, match=r"--sweep and --gin.SWEEP .*give one") as err:
            _parsed_sweep(f"--sweep={GRID}", other)
        assert "\n" not in str(err.value)


def test_clis_without_sweeps_refuse_the_flag():
    with pytest.raises(ConfigError, match=r"^--sweep: this CLI does not train sweeps"):
        _parsed_sweep(f"--sweep={GRID}", sweep=False)


def test_xprompt_pipeline_and_quickstart_refuse_a_sweep_in_one_line(tmp_path):
    """The XPrompt pipeline refuses SWEEP before any folder; the quickstart's --sweep is
    refused with the pipeline (its default method) and for a bad literal."""
    from xprompt_jax import quickstart
    from xprompt_jax.xprompt.config import XPromptConfig
    from xprompt_jax.xprompt.pipeline import run_pipeline

    model_dir = tmp_path / "xp"
    gin.clear_config()
    flags.FLAGS.unparse_flags()
    try:
        configure_from_argv(["xprompt", "--gin_file=models/world_tiny.gin",
                             "--gin_file=xprompt.gin", "--gin_file=world/run.gin",
                             f"--gin.MODEL_DIR={str(model_dir)!r}", f"--gin.SWEEP={GRID}"])
        with pytest.raises(ConfigError, match=r"^SWEEP: the XPrompt pipeline does not train "
                                              r"sweeps yet; [^\n]*--sweep=\.\.\.$"):
            run_pipeline(configured_run(), XPromptConfig())
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
    assert not model_dir.exists()
    out = ["--output_dir", str(tmp_path / "q")]
    with pytest.raises(ConfigError, match=r"^--sweep: --method xprompt \(the XPrompt "
                                          r"pipeline\) does not train sweeps yet; add "
                                          r"--method prompt_tuning$"):
        quickstart.main([*out, f"--sweep={GRID}"])
    with pytest.raises(ConfigError, match=r"^--sweep=.*is not a Python literal"):
        quickstart.main([*out, "--method", "prompt_tuning", "--sweep={'seed': [0, 1]"])
    with pytest.raises(ConfigError, match=r"^--sweep and --gin.SWEEP .*give one of them$"):
        quickstart.main([*out, "--method", "prompt_tuning", f"--sweep={GRID}",
                         "--gin", f"SWEEP = {GRID}"])
    assert not (tmp_path / "q").exists()


def test_the_readme_sweep_command_parses_to_its_grid():
    """The README's sweep command (its own bash block) binds the grid it shows."""
    text = (ROOT / "README.md").read_text()
    [command] = [c for c in re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
                 if "--sweep" in c]
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:3] == ["python", "-m", "xprompt_jax.train"], argv
    [value] = [a.split("=", 1)[1] for a in argv if a.startswith("--sweep=")]
    rest = [a for a in argv[3:] if not a.startswith(("--sweep=", "--gin.MODEL_DIR="))]
    gin.clear_config()
    flags.FLAGS.unparse_flags()
    try:
        configure_from_argv(["train", *rest, "--gin.MODEL_DIR='/tmp/unused'",
                             f"--sweep={value}"], sweep=True)
        run = configured_run()
        assert run.sweep == ast.literal_eval(value)
        assert run.task_name == "world_rte"
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()


@pytest.mark.slow  # one short world sweep through the quickstart (about 15-30 s on 2 cores)
def test_quickstart_sweep_writes_the_sweep_report_and_reports_the_mean(tmp_path, capsys):
    """`python -m xprompt_jax.quickstart --method prompt_tuning --sweep=...`: the run
    trains one entry per learning rate, writes sweep_report.md, and its summary's accuracy
    is the mean of the entries' accuracies at the best step (metrics.jsonl's per-entry
    values), as its line says."""
    import json

    from xprompt_jax import quickstart

    out = tmp_path / "q"
    gin.clear_config()
    flags.FLAGS.unparse_flags()
    try:
        report = quickstart.main([
            "--output_dir", str(out), "--method", "prompt_tuning", "--steps", "2",
            "--no_references", "--sweep={'learning_rate': [0.1, 3.0]}",
            "--gin", "EVAL_PERIOD = 1", "--gin", "BATCH_SIZE = 8",
            "--gin", "PROMPT_LENGTH = 4", "--gin", "MAX_EVAL_EXAMPLES = 16"])
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
    rows = json.loads((out / "sweep_report.json").read_text())["rows"]
    assert [r["entry"] for r in rows] == ["learning_rate=0.1", "learning_rate=3.0"]
    evals = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text()
                                       .splitlines()) if r.get("split") == "eval"}
    at_best = evals[report["best_step"]]
    entries = [at_best[f"{r['entry']}/accuracy"] for r in rows]
    assert report["dev_accuracy"] == pytest.approx(sum(entries) / 2)
    assert "its entries' mean" in (out / "report.md").read_text()
    assert f"sweep (the accuracy above is its entries' mean): {out}/sweep_report.md" in \
        capsys.readouterr().out
