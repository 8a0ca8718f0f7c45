"""EPT Figure 4's broadcast prompts: one token of a trained prompt repeated l times, each
scored as a plain prompt; checked against greedy decodes of the plain forward pass with
that prompt built by hand."""

import json

import numpy as np
import pytest
import seqio

import synthetic_tasks
from training_utils import FEATURE_LENGTHS, fixture_params, reference_greedy, run_config, \
    tiny_prompted_model
from xprompt_jax.errors import ConfigError
from xprompt_jax.evaluation import EvalConfig
from xprompt_jax.runs.broadcast import broadcast_prompt, evaluate_broadcast
from xprompt_jax.training.frozen_model import FrozenModelConfig


def test_broadcast_prompt_repeats_one_token():
    prompt = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(broadcast_prompt(prompt, 1, 2), [[4, 5, 6, 7], [4, 5, 6, 7]])
    assert broadcast_prompt(prompt, 2, 5).shape == (5, 4)
    with pytest.raises(ConfigError, match="broadcast token 3"):
        broadcast_prompt(prompt, 3, 1)


def test_broadcast_scores_equal_plain_prompts_decoded_by_hand(tmp_path, fixtures_dir,
                                                              t5_vocab_path):
    name = synthetic_tasks.register(t5_vocab_path)
    ckpt = str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3")
    prompt = np.random.RandomState(3).uniform(-3, 3, (3, 8)).astype(np.float32)
    np.save(tmp_path / "prompt.npy", prompt)
    run = run_config(tiny_prompted_model(prompt_length=3), tmp_path / "run", task=name,
                     frozen=FrozenModelConfig(initial_checkpoint_path=ckpt),
                     evaluation=EvalConfig(mode="generation", max_examples=6,
                                           trim_batches=False))
    (tmp_path / "run").mkdir()
    out = evaluate_broadcast(run, str(tmp_path / "prompt.npy"), token=2, lengths=(1, 3))
    task = seqio.get_mixture_or_task(name)
    examples = list(task.get_dataset(FEATURE_LENGTHS, split="validation", shuffle=False,
                                     trim_output_features=True).as_numpy_iterator())[:6]
    vocab = task.output_features["targets"].vocabulary
    gold = [ex["targets_pretokenized"].decode() for ex in examples]
    inputs = [list(ex["inputs"]) for ex in examples]

    def by_hand(p):
        model = tiny_prompted_model(prompt_length=p.shape[0])
        variables = {"params": {**fixture_params(ckpt), "prompt": {"prompt": p}}}
        texts = [vocab.decode(ids) for ids in reference_greedy(model, variables, inputs,
                                                               FEATURE_LENGTHS["targets"])]
        return texts, 100.0 * np.mean([t == g for t, g in zip(texts, gold)])

    for row, length in zip(out["broadcast"], (1, 3)):
        texts, accuracy = by_hand(np.repeat(prompt[2:3], length, axis=0))
        assert row["length"] == length
        assert row["predictions_sample"] == texts[:5]
        assert row["main_metric"] == pytest.approx(accuracy)
    texts, accuracy = by_hand(prompt)
    assert out["full_prompt"]["main_metric"] == pytest.approx(accuracy)
    written = json.loads((tmp_path / "run" / "broadcast_results.json").read_text())
    assert [r["length"] for r in written["broadcast"]] == [1, 3]
    assert "[P_2] x 3" in (tmp_path / "run" / "broadcast_report.md").read_text()
