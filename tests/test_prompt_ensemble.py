"""Prompt ensembling with a PromptBank: joint training of K prompts equals K
separate runs; the majority vote against a hand-computed one; the world end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.models import PromptedT5, T5Config
from xprompt_jax.prompts import SoftPrompt, initializers
from xprompt_jax.prompts.bank import PromptBank
from xprompt_jax.training import optimizers
from xprompt_jax.evaluation import majority_vote, table3_markdown
from xprompt_jax.training.bank_training import (BankBatches, bank_numpy_params,
                                                per_prompt_optimizer)
from xprompt_jax.training.train_step import LossConfig, TrainState, make_train_step

CFG = dict(vocab_size=80, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
           num_decoder_layers=2, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, dropout_rate=0.0,
           mlp_activations=("gelu", "linear"), logits_via_embedding=False)


def test_majority_vote_hand_computed():
    preds = [["a", "b", "c", "x"],
             ["a", "c", "b", "y"],
             ["b", "c", "a", "y"]]
    # ex0: a,a,b -> a; ex1: b,c,c -> c; ex2: three-way tie -> prompt 0's 'c'; ex3: x,y,y -> y
    assert majority_vote(preds) == ["a", "c", "c", "y"]
    # a two-two tie goes to the label the lowest-numbered prompt predicted
    assert majority_vote([["no"], ["yes"], ["yes"], ["no"]]) == ["no"]
    assert majority_vote([["yes"], ["no"], ["no"], ["yes"]]) == ["yes"]
    with pytest.raises(ValueError):
        majority_vote([["a"], ["a", "b"]])
    md = table3_markdown("t", {"mode": "rank_classification", "split": "validation",
                               "num_examples": 4, "prompt_names": ["p0", "p1"],
                               "per_prompt_main": [50.0, 75.0], "mean_main": 62.5,
                               "std_main": 12.5, "best_main": 75.0, "ensemble_main": 80.0})
    assert "| **ensemble (majority vote)** | 80.00 |" in md and "62.50 +- 12.50" in md
    # each metric of the task next to the main one (Lester Table 3's pairs: F1a / EM)
    per = {"p0": (40.0, 10.0), "p1": (60.0, 30.0), "mean": (50.0, 20.0),
           "best": (60.0, 30.0), "ensemble": (70.0, 40.0)}
    metrics = {f"{who}/{k}": v for who, (f1a, em) in per.items()
               for k, v in (("f1a", f1a), ("exact_match", em), ("average", (f1a + em) / 2))}
    md = table3_markdown("mrc", {"mode": "generation", "split": "validation",
                                 "num_examples": 4, "prompt_names": ["p0", "p1"],
                                 "per_prompt_main": [25.0, 45.0], "mean_main": 35.0,
                                 "std_main": 10.0, "best_main": 45.0, "ensemble_main": 55.0,
                                 "metrics": metrics})
    assert "| prompt | main metric | f1a | exact_match |" in md
    assert "| p1 | 45.00 | 60.00 | 30.00 |" in md
    assert "| **average** | 35.00 +- 10.00 | 50.00 | 20.00 |" in md
    assert "| **ensemble (majority vote)** | 55.00 | 70.00 | 40.00 |" in md


def _data(steps, b=4, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(steps):
        enc = rng.randint(2, 80, (b, 7))
        enc[0, 4:] = 0
        tgt = rng.randint(2, 80, (b, 3))
        tgt[1, 2:] = 0
        dec = np.concatenate([np.zeros((b, 1), int), tgt[:, :-1]], axis=1)
        out.append({"encoder_input_tokens": enc, "decoder_input_tokens": dec,
                    "decoder_target_tokens": tgt,
                    "decoder_loss_weights": (tgt > 0).astype(np.float32)})
    return out


def test_joint_training_equals_separate_runs():
    """K prompts trained jointly in a bank (every example once per prompt, per-prompt
    Adafactor state and token-mean loss) == each prompt trained alone, after 3 steps of
    Adafactor with update clipping and weight decay. Tolerance 2e-5 (float summation order
    of the batched matmuls differs)."""
    k, m = 3, 4
    inits = np.random.RandomState(3).uniform(-0.5, 0.5, (k, m, 16)).astype(np.float32)
    batches = _data(3)
    tx = optimizers.adafactor(learning_rate=0.3, decay_rate=0.8,
                              multiply_by_parameter_scale=False, weight_decay_rate=1e-5,
                              clipping_threshold=1.0)
    single = PromptedT5(T5Config(**CFG), prompt=SoftPrompt(m))
    b0 = batches[0]
    variables = single.init(jax.random.PRNGKey(0), b0["encoder_input_tokens"],
                            b0["decoder_input_tokens"], b0["decoder_target_tokens"],
                            enable_dropout=False)
    frozen = {"params": {n: v for n, v in variables["params"].items() if n != "prompt"}}
    step_single = jax.jit(make_train_step(single, tx, LossConfig(), enable_dropout=False))
    alone = []
    for i in range(k):
        state = TrainState.create({"prompt": {"prompt": jnp.asarray(inits[i])}}, tx)
        for b in batches:
            state, _ = step_single(state, frozen, b, jax.random.PRNGKey(1))
        alone.append(np.asarray(state.params["prompt"]["prompt"]))

    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(SoftPrompt(m), num_prompts=k))
    transform = BankBatches(bank, "ensemble")
    ptx = per_prompt_optimizer(tx)
    step_bank = jax.jit(make_train_step(bank, ptx, LossConfig(normalization="sum"),
                                        enable_dropout=False))
    state = TrainState.create({"prompt": {"bank": {"prompt": jnp.asarray(inits)}}}, ptx)
    for b in batches:
        tb = transform(b)
        assert tb["encoder_input_tokens"].shape == (4 * k, 8)
        state, _ = step_bank(state, frozen, tb, jax.random.PRNGKey(1))
    joint = np.asarray(state.params["prompt"]["bank"]["prompt"])
    for i in range(k):
        assert np.abs(alone[i] - inits[i]).max() > 1e-3  # the prompts moved
        np.testing.assert_allclose(joint[i], alone[i], rtol=0, atol=2e-5)
    files = bank_numpy_params(state.params, ["a", "b", "c"])
    assert sorted(files) == ["a", "b", "c"] and files["b"].shape == (m, 16)


@pytest.mark.slow
def test_world_ensemble_run_and_files(tmp_path):
    """gin/ensemble.gin on the world: 2 prompts, 4 steps; the ensemble report of the run
    equals the one rebuilt from its per-prompt numpy export."""
    from xprompt_jax import ensemble, train

    run = str(tmp_path / "run")
    base = ["--gin_file=models/world_tiny.gin", "--gin_file=prompt_tuning.gin"]
    flags = ["--gin_file=world/run.gin", f"--gin.MODEL_DIR='{run}'", "--gin.TRAIN_STEPS=4",
             "--gin.EVAL_PERIOD=4", "--gin.BATCH_SIZE=4", "--gin.MAX_EVAL_EXAMPLES=16",
             "--gin.PROMPT_LENGTH=4"]
    import gin
    gin.clear_config()
    train.main(["train"] + base + ["--gin_file=ensemble.gin"] + flags +
               ["--gin.ENSEMBLE_SIZE=2"])
    npy = os.path.join(run, "numpy_checkpoints", "checkpoint_4")
    assert sorted(os.listdir(npy)) == ["prompt_0.npy", "prompt_1.npy"]
    gin.clear_config()
    ensemble.main(["ensemble"] + base + ["--gin_file=ensemble.gin"] + flags +
                  ["--gin.ENSEMBLE_SIZE=2", "--gin_file=runs/ensemble_eval.gin"])
    from_run = json.load(open(os.path.join(run, "ensemble_results.json")))
    gin.clear_config()
    out = str(tmp_path / "files")
    files = [os.path.join(npy, f"prompt_{k}.npy") for k in range(2)]
    ensemble.main(["ensemble"] + base + flags[:1] + flags[2:] +
                  [f"--gin.MODEL_DIR='{out}'", "--gin_file=runs/ensemble_eval.gin",
                   f"--gin.ENSEMBLE_PROMPT_FILES={files!r}"])
    from_files = json.load(open(os.path.join(out, "ensemble_results.json")))
    gin.clear_config()
    for key in ("per_prompt_main", "ensemble_main", "mean_main"):
        assert from_run[key] == from_files[key]
    assert "majority vote" in open(os.path.join(out, "ensemble_report.md")).read()
    # Independently: each exported prompt alone on the 16 dev examples, scored by the plain
    # forward pass; accuracies and the two-prompt vote (a tie goes to prompt 0) by hand.
    import seqio

    from training_utils import reference_option_scores, world_variables

    assert from_run["mode"] == "rank_classification" and from_run["checkpoint_step"] == 4
    examples = list(seqio.get_mixture_or_task("world_rte").get_dataset(
        {"inputs": 48, "targets": 4}, split="validation", shuffle=False,
        trim_output_features=True).take(16).as_numpy_iterator())
    gold = [ex["targets_pretokenized"].decode() for ex in examples]
    labels = ["entailment", "not_entailment"]
    vocab = seqio.get_mixture_or_task("world_rte").output_features["targets"].vocabulary
    options = [vocab.encode(label) + [vocab.eos_id] for label in labels]
    predictions = []
    for path in files:
        model, variables = world_variables(np.load(path))
        scores = reference_option_scores(model, variables, [list(ex["inputs"]) for ex in
                                                            examples], options)
        predictions.append([labels[i] for i in scores.argmax(axis=1)])
    accuracy = lambda preds: 100.0 * sum(p == g for p, g in zip(preds, gold)) / 16  # noqa
    per_prompt = [accuracy(p) for p in predictions]
    assert predictions[0] != predictions[1]  # the vote has ties to break
    vote = []
    for votes in zip(*predictions):  # most votes; a tie goes to the lowest-numbered prompt
        top = max(votes.count(v) for v in votes)
        vote.append(next(v for v in votes if votes.count(v) == top))
    assert from_run["per_prompt_main"] == pytest.approx(per_prompt, abs=1e-9)
    assert from_run["mean_main"] == pytest.approx(np.mean(per_prompt), abs=1e-9)
    assert from_run["best_main"] == pytest.approx(max(per_prompt), abs=1e-9)
    assert from_run["ensemble_main"] == pytest.approx(accuracy(vote), abs=1e-9)
    assert from_run["predictions_sample"] == [p[:5] for p in predictions]
