"""The XPrompt pipeline end to end on the tiny T5X fixture: stages, rewinding, resume,
report; and batched candidate scoring equal to sequential scoring."""

import json
import os

import gin
import jax
import numpy as np
import pytest

import synthetic_tasks
from training_utils import FEATURE_LENGTHS, fixture_params, tiny_prompted_model
from xprompt_jax import gin_utils
from xprompt_jax.training import optimizers
from xprompt_jax.training.data import DataConfig
from xprompt_jax.evaluation import EvalConfig, Evaluator
from xprompt_jax.training.trainer import Trainer, TrainerConfig
from xprompt_jax.xprompt import MaskedSoftPrompt, pipeline, pruning, rewind, search


def _bindings(model_dir, fixtures_dir):
    ckpt = fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"
    return [f"MODEL_DIR = '{model_dir}'", "MIXTURE_OR_TASK_NAME = 'xprompt_test_synthetic'",
            "MIXTURE_OR_TASK_MODULE = 'synthetic_tasks'", f"INITIAL_CHECKPOINT_PATH = '{ckpt}'",
            "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 4}", "BATCH_SIZE = 8",
            "TRAIN_STEPS = 2", "EVAL_PERIOD = 2", "EVAL_MODE = 'generation'",
            "MAX_EVAL_EXAMPLES = 16", "DROPOUT_RATE = 0.0", "PROMPT_LENGTH = 4",
            "NUM_PIECES = 4", "TOKEN_RATIOS = (0.25, 0.5)", "PIECE_RATIOS = (0.25, 0.5)",
            "NUM_SCORE_EXAMPLES = 8", "LOG_PERIOD = 1"]


@pytest.fixture
def gin_pipeline(tmp_path, fixtures_dir, t5_vocab_path):
    synthetic_tasks.register(t5_vocab_path)
    gin.clear_config()
    gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "xprompt.gin"],
                        _bindings(tmp_path / "xp", fixtures_dir), finalize=False)
    yield tmp_path / "xp", gin_utils.configured(pipeline.run_pipeline)
    gin.clear_config()


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_pipeline_rewinds_resumes_and_reports(gin_pipeline, monkeypatch):
    model_dir, run = gin_pipeline
    original_rewind = rewind.rewind_trainer

    def killed(*args, **kwargs):
        raise _Killed()

    monkeypatch.setattr(rewind, "rewind_trainer", killed)
    from xprompt_jax.xprompt.scoring import ImportanceScorer

    scorings, original_score = [], ImportanceScorer.score

    def counting_score(self, *args, **kwargs):
        scorings.append(1)
        return original_score(self, *args, **kwargs)

    monkeypatch.setattr(ImportanceScorer, "score", counting_score)
    with pytest.raises(_Killed):
        run()
    for stage in ("stage1", "scores", "search"):
        assert pipeline.stage_done(str(model_dir), stage) is not None, stage
    assert pipeline.stage_done(str(model_dir), "rewind") is None

    # Rerun: finished stages are not redone; only the rewind trains.
    trained, built = [], []
    original_run = Trainer.run

    def counting_run(self):
        trained.append(os.path.basename(self.config.model_dir))
        return original_run(self)

    def recording_rewind(*args, **kwargs):
        trainer = original_rewind(*args, **kwargs)
        built.append(jax.device_get(trainer.state.params["prompt"]["prompt"]))
        return trainer

    monkeypatch.setattr(Trainer, "run", counting_run)
    monkeypatch.setattr(rewind, "rewind_trainer", recording_rewind)
    report = run()
    assert trained == ["rewind"]

    search_result = json.loads((model_dir / "search" / "search.json").read_text())
    token_mask = np.asarray(search_result["chosen"]["token_mask"], np.float32)
    piece_mask = np.asarray(search_result["chosen"]["piece_mask"], np.float32)
    values = pruning.value_mask(token_mask, piece_mask, 8)
    assert values.sum() < values.size  # something was pruned (ties go to sparser masks)
    # rewound values: stage-1 best prompt on survivors, exactly zero elsewhere
    stage1_best = report["stage1"]["best_step"]
    stage1_prompt = np.load(model_dir / "stage1" / "numpy_checkpoints" /
                            f"checkpoint_{stage1_best}" / "prompt.prompt.npy")
    np.testing.assert_array_equal(built[0], stage1_prompt * values)
    # after training: pruned entries still exactly zero, survivors moved
    final_step = report["final_eval"]["checkpoint_step"]
    final = np.load(model_dir / "rewind" / "numpy_checkpoints" / f"checkpoint_{final_step}" /
                    "prompt.prompt.npy")
    assert np.all(final[values == 0] == 0.0)
    assert not np.allclose(final[values == 1], stage1_prompt[values == 1])
    # the masks are saved in the rewind checkpoints (restored on resume / by evaluate)
    from xprompt_jax.training.checkpointing import RunCheckpointer
    from xprompt_jax.training.trainer import restored_params_and_collections

    payload, _ = RunCheckpointer(str(model_dir / "rewind"), read_only=True).restore(final_step)
    params, collections = restored_params_and_collections(payload)
    saved_masks = collections["prompt_masks"]["prompt"]
    np.testing.assert_array_equal(saved_masks["token_mask"], token_mask)
    np.testing.assert_array_equal(saved_masks["piece_mask"], piece_mask)
    np.testing.assert_array_equal(params["prompt"]["prompt"], final)

    # report
    assert report["parameters"]["xprompt"] == int(values.sum())
    assert report["parameters"]["prompt_tuning"] == 4 * 8
    for name in ("report.md", "report.json", "importance_heatmap.png", "token_scores_hist.png",
                 "piece_scores_hist.png"):
        assert (model_dir / name).stat().st_size > 0, name
    saved = json.loads((model_dir / "report.json").read_text())
    assert [c["ratio"] for c in saved["search"]["token_candidates"]] == [0.25, 0.5]
    assert saved["protocol"]["unpruned_candidate"] is False
    assert saved["protocol"]["rewound_to_stage1_step"] == stage1_best
    # REWIND_STEPS None: the rewind trains stage 1's TRAIN_STEPS (2 steps)
    assert saved["protocol"]["rewind_steps"] == 2
    records = [json.loads(line) for line in
               (model_dir / "rewind" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("split") == "train"] == [1, 2]
    curve = saved["masking_curve"]
    assert curve["ratios"][0] == 0.0 and len(curve["importance"]) == len(curve["ratios"])
    assert curve["importance"][0] == pytest.approx(report["stage1"]["eval"]["main_metric"])
    assert (model_dir / "masking_curve.png").stat().st_size > 0
    # the scorings the first invocation ran (the masking curve and dev scoring use none)
    cost = saved["protocol"]["importance_scoring"]
    assert cost["scorings"] == len(scorings) == 4
    assert cost["examples_total"] == cost["scorings"] * saved["num_score_examples"]
    assert "train steps;" in (model_dir / "report.md").read_text()
    timings = saved["timings_s"]  # this invocation's stages (it resumed from the files)
    assert set(timings) == {"total", "stage1", "scores", "masking_curve", "search",
                            "rewind_and_final_eval", "report"}
    assert timings["total"] == pytest.approx(sum(v for k, v in timings.items()
                                                 if k != "total"), abs=0.5)
    assert "## Wall time" in (model_dir / "report.md").read_text()
    assert np.asarray(saved["scores"]["piece"]).shape == (4, 4)
    assert "| 25% |" in (model_dir / "report.md").read_text()
    # Lester et al. section 7: top-5 nearest vocabulary pieces per stage-1 prompt token.
    near = saved["nearest_tokens"]
    assert len(near["tokens"]) == 4 and all(len(t["nearest"]) == 5 for t in near["tokens"])
    assert "Nearest vocabulary pieces" in (model_dir / "report.md").read_text()


def test_rewind_starts_from_the_best_stage1_checkpoint_and_trains_rewind_steps(
        tmp_path, fixtures_dir, t5_vocab_path, monkeypatch):
    """Stage 1 evaluates at steps 1, 2 and 3 with scripted dev metrics 90, 10, 5: its best
    checkpoint is step 1, not the latest (3). The rewind starts from step 1's prompt times
    the value mask and trains REWIND_STEPS = 2 steps (not stage 1's TRAIN_STEPS = 3)."""
    model_dir = tmp_path / "xp"
    synthetic_tasks.register(t5_vocab_path)
    bindings = _bindings(model_dir, fixtures_dir) + [
        "TRAIN_STEPS = 3", "EVAL_PERIOD = 1", "REWIND_STEPS = 2", "MASKING_CURVE = False",
        "PRUNE_LEVELS = ('token',)", "TOKEN_RATIOS = (0.5,)", "MAX_EVAL_EXAMPLES = 8"]
    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "xprompt.gin"], bindings,
                            finalize=False)
        run = gin_utils.configured(pipeline.run_pipeline)
        scripted = iter([90.0, 10.0, 5.0])
        original_evaluate, original_rewind = Trainer.evaluate, rewind.rewind_trainer

        def scripted_evaluate(self, trainable=None):
            result = original_evaluate(self, trainable)
            if os.path.basename(self.config.model_dir) == "stage1":
                result = dict(result, main_metric=next(scripted))
            return result

        built = []

        def recording_rewind(*args, **kwargs):
            trainer = original_rewind(*args, **kwargs)
            built.append(np.asarray(jax.device_get(trainer.state.params["prompt"]["prompt"])))
            return trainer

        monkeypatch.setattr(Trainer, "evaluate", scripted_evaluate)
        monkeypatch.setattr(rewind, "rewind_trainer", recording_rewind)
        report = run()
    finally:
        gin.clear_config()
    stage1 = model_dir / "stage1" / "numpy_checkpoints"
    best, latest = (np.load(stage1 / f"checkpoint_{s}" / "prompt.prompt.npy") for s in (1, 3))
    assert not np.array_equal(best, latest)  # stage 1 trained on after its best step
    search_result = json.loads((model_dir / "search" / "search.json").read_text())
    values = pruning.value_mask(np.asarray(search_result["chosen"]["token_mask"], np.float32),
                                np.asarray(search_result["chosen"]["piece_mask"], np.float32), 8)
    assert len(built) == 1
    np.testing.assert_array_equal(built[0], best * values)
    assert report["stage1"]["best_step"] == 1
    assert report["protocol"]["rewound_to_stage1_step"] == 1
    # the rewind trained exactly REWIND_STEPS steps, one eval and checkpoint per step
    records = [json.loads(line) for line in
               (model_dir / "rewind" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("split") == "train"] == [1, 2]
    assert sorted(int(p.name) for p in (model_dir / "rewind" / "checkpoints").iterdir()
                  if p.name.isdigit()) == [1, 2]
    assert report["protocol"]["rewind_steps"] == 2


def test_batched_candidate_scoring_equals_sequential(fixtures_dir, t5_vocab_path):
    task = synthetic_tasks.register(t5_vocab_path)
    pretrained = fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))
    model = tiny_prompted_model().clone(prompt=MaskedSoftPrompt(length=4, num_pieces=4))
    evaluator = Evaluator(model, task, FEATURE_LENGTHS,
                          EvalConfig(mode="rank_classification", batch_size=8, max_examples=16),
                          label_strings_fn=lambda ex: ["yes", "no"])
    trainer = Trainer(model, optimizers.adafactor(), DataConfig(task, FEATURE_LENGTHS, 8),
                      TrainerConfig(model_dir="/tmp/unused-xp-batched", num_steps=1,
                                    eval_period=None, progress=False),
                      pretrained_params=pretrained, evaluator=evaluator)
    variables = trainer.variables()
    rng = np.random.RandomState(0)
    candidates = [(np.ones(4, np.float32), np.ones((4, 4), np.float32))]
    for _ in range(3):
        candidates.append(((rng.rand(4) > 0.4).astype(np.float32),
                           (rng.rand(4, 4) > 0.3).astype(np.float32)))
    batched = search.evaluate_candidates(evaluator, variables, candidates, batched=True)
    sequential = search.evaluate_candidates(evaluator, variables, candidates, batched=False)
    for b, s in zip(batched, sequential):
        assert b["metrics"] == s["metrics"]
        assert b["predictions_sample"] == s["predictions_sample"]
