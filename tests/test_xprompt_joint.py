"""XPrompt's faithful search, jointly : C candidates retrained as one PromptBank
of MaskedSoftPrompts (own masks, rewound from the same stage-1 values, own optimizer state,
pruned values frozen) equal C separate rewind runs; and the world pipeline (slow)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xprompt_jax.models import PromptedT5, T5Config
from xprompt_jax.prompts.bank import PromptBank
from xprompt_jax.training import optimizers
from xprompt_jax.training.bank_training import BankBatches, per_prompt_optimizer
from xprompt_jax.training.train_step import LossConfig, TrainState, make_train_step
from xprompt_jax.training.trainer import _mask_updates
from xprompt_jax.xprompt import pruning
from xprompt_jax.xprompt.rewind import per_candidate_best
from xprompt_jax.xprompt.masked_prompt import MaskedSoftPrompt

CFG = dict(vocab_size=80, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
           num_decoder_layers=2, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, dropout_rate=0.0,
           mlp_activations=("gelu", "linear"), logits_via_embedding=False)
M, K, E = 5, 4, 16


def _batches(steps, b=4):
    rng = np.random.RandomState(0)
    out = []
    for _ in range(steps):
        enc = rng.randint(2, 80, (b, 7))
        tgt = rng.randint(2, 80, (b, 3))
        dec = np.concatenate([np.zeros((b, 1), int), tgt[:, :-1]], axis=1)
        out.append({"encoder_input_tokens": enc, "decoder_input_tokens": dec,
                    "decoder_target_tokens": tgt,
                    "decoder_loss_weights": np.ones((b, 3), np.float32)})
    return out


def test_joint_candidates_equal_separate_rewinds(mode="remove"):
    """Atol 1e-5 on the retrained prompts after 2 Adafactor steps ('remove': pruned tokens
    also leave attention, through the bank's per-candidate position masks)."""
    stage1 = np.random.RandomState(1).uniform(-0.5, 0.5, (M, E)).astype(np.float32)
    tokens = np.ones((2, M), np.float32)
    tokens[0, 1] = tokens[1, [0, 3]] = 0.0  # 20 / 40% of the tokens pruned
    pieces = np.ones((2, M, K), np.float32)
    pieces[1, 2, :2] = 0.0
    values = np.stack([pruning.value_mask(t, p, E) for t, p in zip(tokens, pieces)])
    batches = _batches(2)
    tx = optimizers.adafactor(learning_rate=0.3, decay_rate=0.8,
                              multiply_by_parameter_scale=False, weight_decay_rate=1e-5,
                              clipping_threshold=1.0)
    inner = MaskedSoftPrompt(M, num_pieces=K, token_prune_mode=mode)
    single = PromptedT5(T5Config(**CFG), prompt=inner)
    b0 = batches[0]
    v = single.init(jax.random.PRNGKey(0), b0["encoder_input_tokens"],
                    b0["decoder_input_tokens"], b0["decoder_target_tokens"],
                    enable_dropout=False)
    frozen = {n: p for n, p in v["params"].items() if n != "prompt"}
    alone = []
    for c in range(2):
        txc = optax.chain(tx, _mask_updates({"prompt": {"prompt": values[c]}}))
        step = jax.jit(make_train_step(single, txc, LossConfig(), enable_dropout=False))
        fz = {"params": frozen, "prompt_masks": {"prompt": {"token_mask": tokens[c],
                                                            "piece_mask": pieces[c]}}}
        state = TrainState.create({"prompt": {"prompt": jnp.asarray(stage1 * values[c])}}, txc)
        for b in batches:
            state, _ = step(state, fz, b, jax.random.PRNGKey(1))
        alone.append(np.asarray(state.params["prompt"]["prompt"]))

    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(inner, num_prompts=2))
    txb = optax.chain(per_prompt_optimizer(tx),
                      _mask_updates({"prompt": {"bank": {"prompt": values}}}))
    step = jax.jit(make_train_step(bank, txb, LossConfig(normalization="sum"),
                                   enable_dropout=False))
    fz = {"params": frozen, "prompt_masks": {"prompt": {"bank": {"token_mask": tokens,
                                                                 "piece_mask": pieces}}}}
    state = TrainState.create({"prompt": {"bank": {"prompt": jnp.asarray(stage1 * values)}}}, txb)
    transform = BankBatches(bank, "ensemble")
    for b in batches:
        state, _ = step(state, fz, transform(b), jax.random.PRNGKey(1))
    joint = np.asarray(state.params["prompt"]["bank"]["prompt"])
    for c in range(2):
        assert np.abs(alone[c] - stage1 * values[c]).max() > 1e-3
        assert np.all(alone[c][values[c] == 0] == 0)  # pruned values stay pruned
        np.testing.assert_allclose(joint[c], alone[c], rtol=0, atol=1e-5)


def test_per_candidate_best_from_the_eval_log(tmp_path):
    rows = [{"step": 3, "split": "eval", "a/accuracy": 50.0, "b/accuracy": 70.0},
            {"step": 3, "split": "train", "loss": 1.0},
            {"step": 6, "split": "eval", "a/accuracy": 60.0, "b/accuracy": 70.0},
            {"step": 6, "split": "eval", "a/accuracy": 99.0, "b/accuracy": 99.0}]  # resumed dup
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    best = per_candidate_best(str(tmp_path), ["a", "b"], lambda m: m["accuracy"])
    assert best[0] == {"main_metric": 60.0, "metrics": {"accuracy": 60.0}, "step": 6}
    assert best[1]["step"] == 3  # ties keep the earliest evaluation
