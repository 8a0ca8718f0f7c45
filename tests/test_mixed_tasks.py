"""Mixed-task training with a PromptBank: the world's four tasks in one
mixture, one prompt each; every batch mixes tasks, each task gets its own dev metric and
best prompt, and a killed run resumes bit for bit (slow: world model, 4 steps)."""

import json
import os

import numpy as np
import pytest


class _Killed(Exception):
    pass


def _trainer(model_dir, **kwargs):
    import gin

    import xprompt_jax.tasks  # noqa: F401  (as the CLI does before parsing)
    from xprompt_jax import gin_utils
    from xprompt_jax.runs import build_trainer, configured_run

    gin.clear_config()
    gin_utils.parse_gin(
        ["models/world_tiny.gin", "prompt_tuning.gin", "world/run.gin", "mixed_tasks.gin"],
        [f"MODEL_DIR = '{model_dir}'", "TRAIN_STEPS = 4", "EVAL_PERIOD = 2", "SAVE_PERIOD = 2",
         "BATCH_SIZE = 8", "MAX_EVAL_EXAMPLES = 8", "PROMPT_LENGTH = 4"], finalize=False)
    try:
        return build_trainer(configured_run(), **kwargs)
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_mixed_tasks_train_per_task_and_resume_bit_for_bit(tmp_path):
    from xprompt_jax.prompts.bank import check_prompt_ids

    seen = []
    straight = _trainer(str(tmp_path / "straight"))
    transform = straight.batch_transform

    def spy(batch):
        out = transform(batch)
        seen.append(check_prompt_ids(out["encoder_input_tokens"][:, 0] - 768, 4))
        return out

    straight.batch_transform = spy
    summary = straight.run()
    assert len(set(np.concatenate(seen).tolist())) > 1  # batches mix tasks
    metrics = summary["best_eval"]["metrics"]
    assert sorted(metrics) == ["world_boolq/accuracy", "world_copa/accuracy",
                               "world_rte/accuracy", "world_wic/accuracy"]
    best = json.load(open(tmp_path / "straight" / "best_per_task.json"))
    assert sorted(best) == ["world_boolq", "world_copa", "world_rte", "world_wic"]
    assert best["world_rte"]["prompt_id"] == 1
    npy = np.load(tmp_path / "straight" / "best_per_task" / "world_rte.npy")
    assert npy.shape == (4, 128)

    def kill_at_3(step, metrics):
        if step == 3:
            raise _Killed()

    killed = _trainer(str(tmp_path / "killed"), step_callback=kill_at_3)
    with pytest.raises(_Killed):
        killed.run()
    assert killed.checkpointer.latest_step() == 2
    resumed = _trainer(str(tmp_path / "killed"))
    assert resumed.run()["final_step"] == 4
    a = np.asarray(resumed.state.params["prompt"]["bank"]["prompt"])
    b = np.asarray(straight.state.params["prompt"]["bank"]["prompt"])
    np.testing.assert_array_equal(a, b)
    assert json.load(open(tmp_path / "killed" / "best_per_task.json")) == best
    files = sorted(os.listdir(tmp_path / "killed" / "numpy_checkpoints" / "checkpoint_4"))
    assert files == ["world_boolq.npy", "world_copa.npy", "world_rte.npy", "world_wic.npy"]
