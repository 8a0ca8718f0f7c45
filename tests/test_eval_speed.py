"""Fast evaluation: shared-encoder rank classification, trimmed / length-bucketed
batches and importance scoring over exactly the examples asked for, each checked against an
independent reference (per-row forward passes, hand-built features, per-example gradients)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic_tasks
from training_utils import FEATURE_LENGTHS, fixture_params, tiny_prompted_model
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import losses
from xprompt_jax.evaluation import EvalConfig, Evaluator
from xprompt_jax.training.frozen_model import init_variables
from xprompt_jax.xprompt import ImportanceScorer, MaskedSoftPrompt, search
from xprompt_jax.xprompt.masked_prompt import MASKS
from xprompt_jax.xprompt.scoring import ScoreBatches, mask_variables

# float32 sums of 2-12 target log-probabilities of magnitude ~10: rounding differences of the
# differently shaped matmuls stay far below this.
ATOL, RTOL = 1e-4, 1e-5
SIZES = dict(emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32)  # random init: scores vary


@pytest.fixture(scope="module")
def task_name(t5_vocab_path):
    return synthetic_tasks.register(t5_vocab_path)


def _random_variables(model, seed=0):
    variables = init_variables(model, None, FEATURE_LENGTHS, jax.random.PRNGKey(seed))
    variables.pop("params_axes", None)
    return variables


@functools.lru_cache(maxsize=None)
def _forward(model):
    return jax.jit(lambda v, e, d, t: model.apply(v, e, d, t, enable_dropout=False))


def _reference_scores(model, variables, evaluator, row_masks=None):
    """Per (example, verbalizer): its own row padded to the feature lengths (built here by
    hand), a full forward pass (all rows in one call, rows independent), log_softmax."""
    labels, ids = evaluator.rank_options()
    enc_len, dec_len = FEATURE_LENGTHS["inputs"], FEATURE_LENGTHS["targets"]
    enc, dec_in, tgt = [], [], []
    for i, ex in enumerate(evaluator.examples):
        for target in ids[i]:
            inputs, target = list(ex["inputs"])[:enc_len], list(target)[:dec_len]
            enc.append(inputs + [0] * (enc_len - len(inputs)))
            tgt.append(target + [0] * (dec_len - len(target)))
            dec_in.append(([0] + target[:-1] + [0] * dec_len)[:dec_len])
    enc, dec_in, tgt = (np.asarray(x, np.int32) for x in (enc, dec_in, tgt))
    v = variables
    if row_masks is not None:  # the same candidate masks on every row, per row
        v = dict(variables, **{MASKS: mask_variables(
            *(jnp.broadcast_to(jnp.asarray(m), (len(enc),) + m.shape) for m in row_masks))})
    logits = _forward(model)(v, enc, dec_in, tgt)
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    flat = [sum(logp[r, t, tgt[r, t]] for t in range(dec_len) if tgt[r, t] > 0)
            for r in range(len(tgt))]
    offsets = np.cumsum([0] + [len(o) for o in ids])
    return [np.asarray(flat[offsets[i]:offsets[i + 1]]) for i in range(len(ids))]


def _assert_scores_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("labels", [["yes", "no"], ["yes", "no", "maybe so"]],
                         ids=["L2", "L3"])
def test_shared_encoder_scores_equal_per_row_scores(task_name, labels):
    model = tiny_prompted_model(**SIZES)
    variables = _random_variables(model)
    shared = Evaluator(model, task_name, FEATURE_LENGTHS,
                       EvalConfig(batch_size=8, max_examples=16),
                       label_strings_fn=lambda ex: labels)
    assert shared.config.trim_batches
    expected = _reference_scores(model, variables, shared)
    _assert_scores_close(shared.rank_scores(variables), expected)
    # the scores separate the options (the comparison is not between near-equal numbers)
    assert np.std([s[0] - s[1] for s in expected]) > 0.05
    # the evaluator's predictions and metrics are those of the per-row reference's picks
    picks = [labels[int(np.argmax(s))] for s in expected]
    assert shared.predict(variables).texts == [picks]
    assert shared.evaluate(variables)["metrics"] == shared.result_from_texts(picks)["metrics"]


def test_per_example_label_strings(task_name):
    """COPA / WSC / ReCoRD-like verbalizers: a different number of options of different
    token lengths for each example (words of the example itself)."""
    model = tiny_prompted_model(**SIZES)
    variables = _random_variables(model, seed=1)

    def options(ex):
        words = ex["inputs_pretokenized"].split(": ", 1)[1].split()
        count = 2 + len(words) % 3  # 2, 3 or 4 options
        return [" ".join(words[j:j + 1 + j % 2]) for j in range(count)]

    evaluator = Evaluator(model, task_name, FEATURE_LENGTHS,
                          EvalConfig(batch_size=8, max_examples=16),
                          label_strings_fn=options)
    labels, ids = evaluator.rank_options()
    assert {len(o) for o in labels} >= {2, 3} and len({len(t) for o in ids for t in o}) > 1
    assert evaluator.num_options == max(len(o) for o in labels)
    _assert_scores_close(evaluator.rank_scores(variables),
                         _reference_scores(model, variables, evaluator))


def test_candidate_search_scores_equal_per_row_scores(fixtures_dir, task_name):
    """The XPrompt candidate search (per-row candidate masks, candidate axis in the batch)
    on the shared-encoder scorer: each candidate's rank scores equal per-row forward passes
    with that candidate's masks."""
    pretrained = fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))
    model = tiny_prompted_model().clone(prompt=MaskedSoftPrompt(length=4, num_pieces=4))
    variables = init_variables(model, pretrained, FEATURE_LENGTHS, jax.random.PRNGKey(0))
    variables.pop("params_axes", None)
    rng = np.random.RandomState(0)
    # scale the prompt up so masks change the scores visibly
    variables["params"]["prompt"]["prompt"] = jnp.asarray(rng.randn(4, 8) * 3, jnp.float32)
    candidates = [(np.ones(4, np.float32), np.ones((4, 4), np.float32))]
    for _ in range(2):
        candidates.append(((rng.rand(4) > 0.4).astype(np.float32),
                           (rng.rand(4, 4) > 0.3).astype(np.float32)))

    evaluator = Evaluator(model, task_name, FEATURE_LENGTHS,
                          EvalConfig(batch_size=8, max_examples=12),
                          label_strings_fn=lambda ex: ["yes", "no"])
    size = max(1, evaluator.config.batch_size // len(candidates))  # the search's chunks
    recorded = evaluator.predict(variables, search.MaskCandidates(candidates, size),
                                 examples_per_call=size).scores
    assert len(recorded) == len(candidates)
    for (t, p), scores in zip(candidates, recorded):
        expected = np.concatenate(_reference_scores(model, variables, evaluator, (t, p)))
        np.testing.assert_allclose(np.concatenate(scores), expected, rtol=RTOL, atol=ATOL)
    assert not np.allclose(np.concatenate(recorded[0]), np.concatenate(recorded[1]), atol=1e-3)
    # evaluate_candidates reports each candidate's result from exactly those scores
    results = search.evaluate_candidates(evaluator, variables, candidates, batched=True)
    for scores, result in zip(recorded, results):
        picks = [["yes", "no"][int(np.argmax(s))] for s in scores]
        assert result["metrics"] == evaluator.result_from_texts(picks)["metrics"]


def test_trimmed_batches_give_identical_results(task_name):
    model = tiny_prompted_model(**SIZES)
    variables = _random_variables(model, seed=2)
    results = {}
    for trim in (False, True):
        for mode in ("rank_classification", "generation"):
            evaluator = Evaluator(model, task_name, FEATURE_LENGTHS,
                                  EvalConfig(mode=mode, batch_size=8, max_examples=16,
                                             trim_batches=trim),
                                  label_strings_fn=lambda ex: ["yes", "no", "maybe so"])
            results[trim, mode] = evaluator.evaluate(variables)
            if mode == "rank_classification":
                results[trim, "scores"] = evaluator.rank_scores(variables)
    for mode in ("rank_classification", "generation"):
        assert results[True, mode]["metrics"] == results[False, mode]["metrics"]
        assert results[True, mode]["predictions_sample"] == \
            results[False, mode]["predictions_sample"]
    _assert_scores_close(results[True, "scores"], results[False, "scores"])


def test_bucket_length_and_length_sorted_batches():
    assert [data_lib.bucket_length(n, 48) for n in (1, 8, 9, 23, 31, 33, 48, 60)] == \
        [8, 8, 16, 24, 32, 40, 48, 48]
    assert [data_lib.bucket_length(n, 512) for n in (1, 64, 65, 300, 512)] == \
        [64, 64, 128, 320, 512]
    assert data_lib.bucket_length(3, 8, multiple=4) == 4
    batches = data_lib.length_sorted_batches([3, 9, 1, 9, 5], 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_option_features_hand_built():
    examples = [{"inputs": [5, 6, 7, 1]}, {"inputs": [8, 1]}]
    options = [[[11, 1], [12, 13, 1]], [[14, 1]]]
    f = data_lib.option_features(examples, options, {"inputs": 16, "targets": 4}, 3)
    assert f["encoder_input_tokens"].shape == (3, 8)
    np.testing.assert_array_equal(f["encoder_input_tokens"][:, :4],
                                  [[5, 6, 7, 1], [8, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(f["decoder_target_tokens"],
                                  [[11, 1, 12, 13, 1, 0, 0, 0], [14, 1, 0, 0, 0, 0, 0, 0],
                                   [0] * 8])
    np.testing.assert_array_equal(f["decoder_input_tokens"],
                                  [[0, 11, 0, 12, 13, 0, 0, 0], [0, 14, 0, 0, 0, 0, 0, 0],
                                   [0] * 8])
    np.testing.assert_array_equal(f["decoder_segment_ids"],
                                  [[1, 1, 2, 2, 2, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0],
                                   [0] * 8])
    np.testing.assert_array_equal(f["decoder_loss_weights"], f["decoder_target_tokens"] > 0)
    # truncation like seqio's: EOS counts, an option longer than the target length is cut
    cut = data_lib.option_features([{"inputs": [2, 1]}], [[[3, 4, 5, 6, 1]]],
                                   {"inputs": 4, "targets": 4}, trim=False)
    np.testing.assert_array_equal(cut["decoder_target_tokens"], [[3, 4, 5, 6]])


def test_trim_batch_cuts_to_the_longest_row():
    batch = data_lib.examples_to_features([{"inputs": [4] * 10 + [1], "targets": [7, 1]},
                                           {"inputs": [5, 1], "targets": [1]}],
                                          {"inputs": 48, "targets": 8}, 4)
    trimmed = data_lib.trim_batch(batch)
    assert trimmed["encoder_input_tokens"].shape == (4, 16)
    assert trimmed["decoder_target_tokens"].shape == (4, 4)
    np.testing.assert_array_equal(trimmed["encoder_input_tokens"],
                                  batch["encoder_input_tokens"][:, :16])
    assert not batch["encoder_input_tokens"][:, 16:].any()


def _score_batches():
    """Two padded batches of 8 (48 input / 8 target tokens) of random short examples."""
    rng = np.random.RandomState(4)
    examples = [{"inputs": list(rng.randint(3, 500, rng.randint(5, 20))) + [1],
                 "targets": list(rng.randint(3, 500, rng.randint(1, 3))) + [1]}
                for _ in range(16)]
    return [data_lib.examples_to_features(examples[i:i + 8], {"inputs": 48, "targets": 8})
            for i in (0, 8)]


def test_importance_scores_over_exactly_the_examples_asked_for():
    """12 examples from batches of 8: the reuse/trim path equals a brute-force mean of
    per-example |dL(x)/dmask| over exactly those 12 (one example per forward pass, untrimmed
    48-token inputs)."""
    model = tiny_prompted_model(**SIZES).clone(prompt=MaskedSoftPrompt(length=4, num_pieces=4))
    variables = _random_variables(model, seed=3)
    trainable = {"prompt": variables["params"]["prompt"]}
    frozen = {"params": {k: v for k, v in variables["params"].items() if k != "prompt"}}
    token_mask = np.asarray([1, 0, 1, 1], np.float32)
    piece_mask = (np.random.RandomState(0).rand(4, 4) > 0.3).astype(np.float32)
    drawn = []
    reusable = ScoreBatches(lambda: drawn.append(1) or iter(_score_batches()))
    scorer = ImportanceScorer(model, trainable, frozen, per_example=True)
    scores = scorer.score(token_mask, piece_mask, reusable, 12)
    again = scorer.score(token_mask, piece_mask, reusable, 12)
    assert scores.num_examples == 12 and len(reusable.take(12)) == 2 and drawn == [1]
    assert reusable.take(12)[0]["encoder_input_tokens"].shape[1] < 48  # trimmed

    rows = _score_batches()
    examples = [{k: v[i:i + 1] for k, v in batch.items()} for batch in rows for i in range(8)]
    def loss(gamma, zeta, ex):
        v = dict(variables, **{MASKS: mask_variables(gamma, zeta)})
        logits = model.apply(v, ex["encoder_input_tokens"], ex["decoder_input_tokens"],
                             ex["decoder_target_tokens"], enable_dropout=False)
        return losses.per_example_loss(logits, ex["decoder_target_tokens"],
                                       ex["decoder_loss_weights"])[0]

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    token_ref, piece_ref = 0.0, 0.0
    for ex in examples[:12]:
        g_t, g_p = grad(jnp.asarray(token_mask), jnp.asarray(piece_mask), ex)
        token_ref, piece_ref = token_ref + np.abs(g_t), piece_ref + np.abs(g_p)
    np.testing.assert_allclose(scores.token, token_ref / 12, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(scores.piece, piece_ref / 12, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(again.token, scores.token)
    assert np.abs(scores.token).sum() > 0


def test_nan_scores_are_no_answer_and_no_metric(task_name):
    """A prompt with one NaN makes every option's score NaN; np.argmax would then answer
    every example with the first label and the accuracy would be that label's share. Now
    no example gets an answer and the result has no metric (main_metric None, which the
    trainer and the checkpointer never count as best)."""
    model = tiny_prompted_model(**SIZES)
    variables = _random_variables(model)
    prompt = np.array(variables["params"]["prompt"]["prompt"])
    prompt[0, 0] = np.nan
    variables["params"]["prompt"]["prompt"] = jnp.asarray(prompt)
    evaluator = Evaluator(model, task_name, FEATURE_LENGTHS,
                          EvalConfig(batch_size=8, max_examples=16),
                          label_strings_fn=lambda ex: ["yes", "no"])
    predictions = evaluator.predict(variables)
    assert all(np.isnan(s).all() for s in predictions.scores[0])
    assert predictions.texts == [[None] * 16]
    result = evaluator.evaluate(variables)
    assert result["main_metric"] is None and result["metrics"] == {}
    assert result["nonfinite_scores"] == 16
