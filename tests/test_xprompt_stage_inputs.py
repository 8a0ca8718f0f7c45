"""A rerun of the XPrompt pipeline reuses a finished stage only while what it was computed
from is unchanged: other run settings are refused like a training resume (or accepted and
recorded with allow_config_change), other search settings redo the search and what follows
it, the earlier results kept aside."""

import json
import os

import gin
import pytest

import synthetic_tasks
from xprompt_jax import gin_utils
from xprompt_jax.errors import ConfigError
from xprompt_jax.runs.config import configured_run
from xprompt_jax.training.trainer import Trainer
from xprompt_jax.xprompt import stages
from xprompt_jax.xprompt.config import XPromptConfig
from xprompt_jax.xprompt.pipeline import run_pipeline
from xprompt_jax.xprompt.scoring import ImportanceScorer


def _bindings(model_dir, fixtures_dir, extra=()):
    ckpt = fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"
    return [f"MODEL_DIR = '{model_dir}'", "MIXTURE_OR_TASK_NAME = 'xprompt_test_synthetic'",
            "MIXTURE_OR_TASK_MODULE = 'synthetic_tasks'", f"INITIAL_CHECKPOINT_PATH = '{ckpt}'",
            "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 4}", "BATCH_SIZE = 8",
            "TRAIN_STEPS = 1", "EVAL_PERIOD = 1", "MAX_EVAL_EXAMPLES = 8", "EVAL_MODE = 'generation'",
            "DROPOUT_RATE = 0.0", "PROMPT_LENGTH = 4", "NUM_PIECES = 4",
            "TOKEN_RATIOS = (0.25, 0.5)", "PRUNE_LEVELS = ('token',)", "MASKING_CURVE = False",
            "NUM_SCORE_EXAMPLES = 8", "LOG_PERIOD = 1"] + list(extra)


def _configured(model_dir, fixtures_dir, extra=()):
    """(run, config, the gin text a CLI would record) for the tiny pipeline."""
    gin.clear_config()
    gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "xprompt.gin"],
                        _bindings(model_dir, fixtures_dir, extra), finalize=False)
    run, config = configured_run(), gin_utils.configured(XPromptConfig)()
    return run, config, gin.config_str()


@pytest.fixture
def counted(monkeypatch):
    """Which trainers ran and how many importance scorings, per pipeline call."""
    calls = {"trained": [], "scored": 0}
    original_run, original_score = Trainer.run, ImportanceScorer.score

    def run(self):
        calls["trained"].append(os.path.relpath(self.config.model_dir, calls["root"]))
        return original_run(self)

    def score(self, *args, **kwargs):
        calls["scored"] += 1
        return original_score(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run", run)
    monkeypatch.setattr(ImportanceScorer, "score", score)
    yield calls
    gin.clear_config()


def test_stage1_text_drops_only_what_the_search_reads(fixtures_dir, t5_vocab_path, tmp_path):
    synthetic_tasks.register(t5_vocab_path)
    _, _, text = _configured(tmp_path / "xp", fixtures_dir)
    gin.clear_config()
    lines = stages.stage1_config_text(text).splitlines()
    names = {line.split("=", 1)[0].strip() for line in lines if "=" in line}
    # read by the model or the run: kept
    assert {"LEARNING_RATE", "PROMPT_LENGTH", "NUM_PIECES", "TOKEN_PRUNE_MODE",
            "MIXTURE_OR_TASK_NAME", "optimizers.adafactor.learning_rate"} <= names
    # read only by XPromptConfig (checked stage by stage): dropped
    assert not {"TOKEN_RATIOS", "PER_EXAMPLE_SCORES", "NUM_SCORE_EXAMPLES", "REWIND_STEPS",
                "XPROMPT", "MASK_VARIANT"} & names
    assert not [line for line in lines if "XPromptConfig" in line]
    # everything else of the gin text is there, statement for statement
    dropped = [s for s in stages._statements(text) if s not in stages._statements(
        stages.stage1_config_text(text))]
    assert all("XPromptConfig" in s or s.split("=", 1)[0].strip() in {
        "XPROMPT", "pipeline.run_pipeline.config", "ABLATIONS", "CURVE_RANDOM_SEEDS",
        "CURVE_RATIOS", "MASK_SEED", "MASK_VARIANT", "MASKING_CURVE", "NUM_SCORE_EXAMPLES",
        "PER_EXAMPLE_SCORES", "PIECE_RANKING", "PIECE_RATIOS", "PRUNE_LEVELS",
        "REWIND_EACH_CANDIDATE", "REWIND_JOINTLY", "REWIND_STEPS", "SEARCH_INCLUDE_UNPRUNED",
        "STAGE1_INIT_PATH", "TOKEN_RATIOS", "STAGE1_STEPS", "BATCHED_SEARCH"}
        for s in dropped), dropped


def test_every_xprompt_setting_belongs_to_a_stage():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(XPromptConfig)}
    claimed = {n for names in stages.STAGE_FIELDS.values() for n in names}
    assert fields == claimed | set(stages.NO_RESULT_FIELDS)
    # and the search's inputs change when a search setting does, not when batching does
    a = stages.stage_inputs("", XPromptConfig(), ["stage1", "scores", "search", "rewind"])
    b = stages.stage_inputs("", XPromptConfig(token_ratios=(0.5,)),
                            ["stage1", "scores", "search", "rewind"])
    c = stages.stage_inputs("", XPromptConfig(batched_search=False),
                            ["stage1", "scores", "search", "rewind"])
    assert a["scores"] == b["scores"] and a["search"] != b["search"]
    assert a["rewind"] != b["rewind"]  # chained: after another search
    assert a == c


@pytest.mark.slow
def test_rerun_checks_each_stage_against_what_it_was_computed_from(
        tmp_path, fixtures_dir, t5_vocab_path, counted):
    synthetic_tasks.register(t5_vocab_path)
    model_dir = tmp_path / "xp"
    counted["root"] = str(model_dir)

    def call(extra=(), allow=False):
        run, config, text = _configured(model_dir, fixtures_dir, extra)
        counted["trained"], counted["scored"] = [], 0
        return run_pipeline(run, config, config_text=text, allow_config_change=allow)

    first = call()
    # importance scorings: one of the full prompt (the scores stage), the rest the search's
    scorings = first["protocol"]["importance_scoring"]["scorings"]
    assert counted["trained"] == ["stage1", "rewind"] and counted["scored"] == scorings > 1
    assert [c["ratio"] for c in first["search"]["token_candidates"]] == [0.25, 0.5]

    # The same command again: every stage reused, nothing trained or scored.
    assert call()["final_eval"] == first["final_eval"]
    assert counted["trained"] == [] and counted["scored"] == 0

    # Another task or learning rate: stage 1 is another experiment; refused, files untouched.
    # (The other task is registered: an unknown name is refused earlier, as a typo.)
    synthetic_tasks.register(t5_vocab_path, "xprompt_test_other")
    before = sorted(os.listdir(model_dir))
    for change, shown in (("MIXTURE_OR_TASK_NAME = 'xprompt_test_other'", "xprompt_test_other"),
                          ("LEARNING_RATE = 0.01", "LEARNING_RATE = 0.01")):
        with pytest.raises(ConfigError, match=shown) as error:
            call([change])
        assert "stage1" in str(error.value) and "--allow_config_change" in str(error.value)
        assert sorted(os.listdir(model_dir)) == before
        assert counted["trained"] == []

    # Other search settings: the search and the rewind are redone from the same stage 1 and
    # scores; the earlier ones are kept aside.
    redone = call(["TOKEN_RATIOS = (0.5, 0.75)"])
    assert counted["trained"] == ["rewind"] and counted["scored"] == scorings - 1
    assert [c["ratio"] for c in redone["search"]["token_candidates"]] == [0.5, 0.75]
    old = json.loads((model_dir / "search.superseded_1" / "search.json").read_text())
    assert [c["ratio"] for c in old["token_candidates"]] == [0.25, 0.5]
    assert (model_dir / "rewind.superseded_1" / "DONE.json").exists()
    assert redone["stage1"] == first["stage1"]

    # Another rewind length only: the rewind alone is redone.
    call(["TOKEN_RATIOS = (0.5, 0.75)", "REWIND_STEPS = 2"])
    assert counted["trained"] == ["rewind"] and counted["scored"] == 0
    assert (model_dir / "rewind.superseded_2").exists()
    assert not (model_dir / "search.superseded_2").exists()

    # allow_config_change: the finished stage 1 is kept and the change recorded; everything
    # computed from it is redone under the new settings.
    call(["TOKEN_RATIOS = (0.5, 0.75)", "REWIND_STEPS = 2", "LEARNING_RATE = 0.01"],
         allow=True)
    assert counted["trained"] == ["rewind"] and counted["scored"] == scorings
    changes = [json.loads(line) for line in
               (model_dir / "stage1" / "config_changes.jsonl").read_text().splitlines()]
    assert len(changes) == 1 and "LEARNING_RATE = 0.01" in changes[0]["changes"][0]
    assert (model_dir / "scores.superseded_1").exists()
    saved = (model_dir / "stage1" / "config.gin").read_text()
    assert "LEARNING_RATE = 0.01" in saved and "TOKEN_RATIOS" not in saved
