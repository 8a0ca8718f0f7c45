"""XPrompt as the paper runs it: the default search never returns the unpruned
prompt, reversed masks are the complement ranking at XPrompt's counts, the masking curve
equals a brute-force loop over ratios, and the paper recipe resolves to the paper's values."""

import types

import gin
import numpy as np
import pytest

import synthetic_tasks
from training_utils import FEATURE_LENGTHS, fixture_params, tiny_prompted_model
from xprompt_jax import gin_utils
from xprompt_jax.training import optimizers
from xprompt_jax.training.data import DataConfig
from xprompt_jax.evaluation import EvalConfig, Evaluator
from xprompt_jax.training.trainer import Trainer, TrainerConfig
from xprompt_jax.xprompt import MaskedSoftPrompt, curve as curve_lib, pruning, search
from xprompt_jax.xprompt.config import XPromptConfig
from xprompt_jax.xprompt.masked_prompt import MASKS
from xprompt_jax.xprompt.scoring import ImportanceScores, mask_variables


# ------------------------------------------------------------------ search candidates
class _FixedScorer:
    """Importance scores that never change (token i scores i+1; piece (t, j) scores j+1)."""

    def __init__(self, m, k):
        self.m, self.k = m, k

    def score(self, token_mask, piece_mask, batches, num_examples, bar=None):
        return ImportanceScores(np.arange(1.0, self.m + 1),
                                np.tile(np.arange(1.0, self.k + 1), (self.m, 1)), 1, True)


def _fake_ctx(m, k):
    return types.SimpleNamespace(length=m, pieces=k, model_dir="/unused", progress=False,
                                 evaluator=None, variables=lambda params: {},
                                 score_batches=lambda: None)


def _search(monkeypatch, include_unpruned, levels=("token", "piece")):
    """search_masks where a candidate's dev metric is its number of kept pieces: the fuller
    the mask, the better (the stage-1 prompt without retraining favours the full prompt)."""
    m, k = 10, 16
    seen = []

    def fake_evaluate(evaluator, variables, candidates, batched=True, bar=None, **kw):
        seen.append([(np.asarray(t).copy(), np.asarray(p).copy()) for t, p in candidates])
        return [{"main_metric": float(search.kept_pieces(t, p))} for t, p in candidates]

    monkeypatch.setattr(search, "evaluate_candidates", fake_evaluate)
    scorer = _FixedScorer(m, k)
    initial = scorer.score(None, None, None, 1)
    config = XPromptConfig(num_score_examples=1, prune_levels=levels,
                           search_include_unpruned=include_unpruned)
    record = search.search_masks(_fake_ctx(m, k), scorer, initial, {}, config)
    return record, seen


def test_default_search_never_returns_the_unpruned_prompt(monkeypatch):
    record, seen = _search(monkeypatch, include_unpruned=False)
    # nine candidates per level, 10%..90%, none of them the full prompt / full piece mask
    assert [c["ratio"] for c in record["token_candidates"]] == list(pruning.default_ratios())
    assert [c["ratio"] for c in record["piece_candidates"]] == list(pruning.default_ratios())
    for level in seen:
        assert len(level) == 9
        assert all(search.kept_pieces(t, p) < t.size * p.shape[1] for t, p in level)
    token_mask = np.asarray(record["chosen"]["token_mask"])
    piece_mask = np.asarray(record["chosen"]["piece_mask"])
    # the best pruned candidates: 10% of the tokens (the lowest scorer, token 0), then 10%
    # of each survivor's pieces (round(0.1 * 16) = 2, the two lowest: pieces 0 and 1)
    np.testing.assert_array_equal(token_mask, [0] + [1] * 9)
    assert record["chosen"]["name"] == "token_0.1+piece_0.1"
    np.testing.assert_array_equal(piece_mask[1:, :2], 0)
    assert search.kept_pieces(token_mask, piece_mask) == 9 * 14
    # with the option, the unpruned prompt is a candidate (and here it wins)
    record, seen = _search(monkeypatch, include_unpruned=True)
    assert [c["ratio"] for c in record["token_candidates"]][:2] == [0.0, 0.1]
    assert record["chosen"]["name"] == "token_0.0+piece_0.0"
    assert np.all(np.asarray(record["chosen"]["token_mask"]) == 1)


def test_default_ratios_reject_zero_and_gin_does_not_add_it():
    with pytest.raises(ValueError, match="SEARCH_INCLUDE_UNPRUNED"):
        pruning.ratios_checked((0.0, 0.5))
    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "xprompt.gin"], ["MODEL_DIR = '/x'"],
                            finalize=False)
        bound = gin.get_bindings(XPromptConfig)
        assert bound["search_include_unpruned"] is False
        assert bound["token_ratios"] == bound["piece_ratios"] == pruning.default_ratios()
        assert bound["masking_curve"] is True
    finally:
        gin.clear_config()


def test_shipped_gin_scores_importance_per_example_as_the_paper():
    """XPrompt eq. 4-5: I = E_x |dL(x)/dmask|, the mean of per-example absolute gradients.
    The scorer the pipeline and the prune CLI build from gin/xprompt.gin's XPROMPT
    (`ImportanceScorer(..., config.per_example)`) must give that, not |E_x dL(x)/dmask|."""
    import jax
    import jax.numpy as jnp

    from xprompt_jax.models import PromptedT5, T5Config
    from xprompt_jax.prompts import initializers
    from xprompt_jax.xprompt.scoring import ImportanceScorer

    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "xprompt.gin"], ["MODEL_DIR = '/x'"],
                            finalize=False)
        config = gin_utils.configured(XPromptConfig)()
    finally:
        gin.clear_config()
    m, k, b = 3, 2, 4
    cfg = T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                   num_encoder_layers=1, num_decoder_layers=1,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0, mlp_activations=("gelu", "linear"),
                   logits_via_embedding=False)
    prompt = np.random.RandomState(0).uniform(-1, 1, (m, 8)).astype(np.float32)
    model = PromptedT5(cfg, prompt=MaskedSoftPrompt(m, initializers.from_array(prompt),
                                                    num_pieces=k))
    rng = np.random.RandomState(1)
    targets = rng.randint(2, 40, (b, 3))
    batch = {"encoder_input_tokens": rng.randint(2, 40, (b, 6)),
             "decoder_input_tokens": np.concatenate([np.zeros((b, 1), int), targets[:, :-1]], 1),
             "decoder_target_tokens": targets}
    variables = model.init(jax.random.PRNGKey(0), batch["encoder_input_tokens"],
                           batch["decoder_input_tokens"], targets, enable_dropout=False)
    trainable = {"prompt": variables["params"]["prompt"]}
    frozen = {"params": {n: v for n, v in variables["params"].items() if n != "prompt"}}
    scorer = ImportanceScorer(model, trainable, frozen, None, config.per_example)
    scores = scorer.score(np.ones(m, np.float32), np.ones((m, k), np.float32), iter([batch]), b)

    def example_loss(gamma, zeta, i):  # mean target-token cross-entropy of example i
        v = {**variables, MASKS: mask_variables(gamma, zeta)}
        logits = model.apply(v, *(batch[n][i:i + 1] for n in (
            "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")),
            enable_dropout=False)
        logp = jax.nn.log_softmax(logits[0], axis=-1)
        return -jnp.mean(logp[jnp.arange(3), targets[i]])

    grads = [jax.grad(example_loss, argnums=(0, 1))(jnp.ones(m), jnp.ones((m, k)), i)
             for i in range(b)]
    per_example_token = np.mean([np.abs(g[0]) for g in grads], axis=0)
    per_example_piece = np.mean([np.abs(g[1]) for g in grads], axis=0)
    of_the_mean = np.abs(np.mean([g[0] for g in grads], axis=0))
    assert np.abs(per_example_token - of_the_mean).max() > 1e-3  # the two differ here
    np.testing.assert_allclose(scores.token, per_example_token, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(scores.piece, per_example_piece, rtol=1e-4, atol=1e-7)
    assert scores.per_example is True and scores.num_examples == b


# ------------------------------------------------------------------ reversed XPrompt
TOKEN_SCORES = np.array([5.0, 1.0, 4.0, 0.5, 3.0, 2.0])
PIECE_SCORES = np.array([[4.0, 3.0, 2.0, 1.0],
                         [1.0, 2.0, 3.0, 4.0],
                         [9.0, 0.1, 8.0, 0.2],
                         [2.0, 2.0, 1.0, 3.0],
                         [0.3, 0.2, 0.1, 0.0],
                         [5.0, 6.0, 7.0, 8.0]])


def test_reversed_masks_are_the_complement_ranking_at_xprompts_counts_per_token():
    # XPrompt kept tokens 0, 2, 4, 5 (4 of 6), 2 pieces each
    xp_tokens = np.array([1, 0, 1, 0, 1, 1], np.float32)
    xp_pieces = np.zeros((6, 4), np.float32)
    for t, cols in {0: (0, 1), 2: (0, 2), 4: (0, 1), 5: (2, 3), 1: (0, 1, 2, 3)}.items():
        xp_pieces[t, list(cols)] = 1  # token 1 is pruned: its pieces do not count
    tokens, pieces = pruning.reversed_masks_like(xp_tokens, xp_pieces, TOKEN_SCORES,
                                                 PIECE_SCORES)
    # hand-built: the 4 lowest token scores are tokens 3 (0.5), 1 (1), 5 (2), 4 (3); each
    # keeps its 2 lowest pieces
    np.testing.assert_array_equal(tokens, [0, 1, 0, 1, 1, 1])
    expected = np.zeros((6, 4))
    expected[[0, 2]] = 1  # pruned tokens' rows stay ones (as in XPrompt's masks)
    expected[1, [0, 1]] = 1
    expected[3, [2, 0]] = 1  # 1.0, then the first of the two 2.0s
    expected[4, [3, 2]] = 1
    expected[5, [0, 1]] = 1
    np.testing.assert_array_equal(pieces, expected)
    assert tokens.sum() == xp_tokens.sum()
    assert search.kept_pieces(tokens, pieces) == search.kept_pieces(xp_tokens, xp_pieces)
    # through the pipeline's variant selection (the search record's XPrompt masks)
    record = {"xprompt": {**search.masks_json(xp_tokens, xp_pieces), "name": "t+p"}}
    scores = ImportanceScores(TOKEN_SCORES, PIECE_SCORES, 1, True)
    chosen = search.variant_masks(record, scores, "reversed")
    np.testing.assert_array_equal(chosen["token_mask"], tokens)
    np.testing.assert_array_equal(chosen["piece_mask"], expected)
    random = search.variant_masks(record, scores, "random", seed=3)
    assert np.sum(random["token_mask"]) == 4
    assert search.kept_pieces(np.asarray(random["token_mask"]),
                                np.asarray(random["piece_mask"])) == 8


def test_reversed_masks_global_counts():
    # XPrompt kept tokens 0 and 2 with 3 + 1 = 4 pieces (not the same per token)
    xp_tokens = np.array([1, 0, 1, 0, 0, 0], np.float32)
    xp_pieces = np.zeros((6, 4), np.float32)
    xp_pieces[0, [0, 1, 2]] = 1
    xp_pieces[2, 0] = 1
    tokens, pieces = pruning.reversed_masks_like(xp_tokens, xp_pieces, TOKEN_SCORES,
                                                 PIECE_SCORES)
    np.testing.assert_array_equal(tokens, [0, 1, 0, 1, 0, 0])  # scores 1.0 and 0.5
    # the 4 lowest pieces among tokens 1 and 3: (1,0)=1, (3,2)=1, (1,1)=2, (3,0)=2
    expected = np.zeros((6, 4))
    expected[[0, 2, 4, 5]] = 1  # pruned tokens
    expected[1, [0, 1]] = 1
    expected[3, [0, 2]] = 1
    np.testing.assert_array_equal(pieces, expected)


# ------------------------------------------------------------------ masking curve
def test_masking_curve_equals_a_brute_force_loop_over_ratios(fixtures_dir, t5_vocab_path):
    m, k = 4, 4
    task = synthetic_tasks.register(t5_vocab_path)
    pretrained = fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))
    model = tiny_prompted_model().clone(prompt=MaskedSoftPrompt(length=m, num_pieces=k,
                                                                token_prune_mode="zero"))
    evaluator = Evaluator(model, task, FEATURE_LENGTHS,
                          EvalConfig(mode="rank_classification", batch_size=72, max_examples=8),
                          label_strings_fn=lambda ex: ["yes", "no"],
                          main_metric_fn=lambda metrics: metrics["accuracy"])
    trainer = Trainer(model, optimizers.adafactor(), DataConfig(task, FEATURE_LENGTHS, 8),
                      TrainerConfig(model_dir="/tmp/unused-xp-curve", num_steps=1,
                                    eval_period=None, progress=False),
                      pretrained_params=pretrained, evaluator=evaluator)
    prompt = np.random.RandomState(1).uniform(-30, 30, (m, 8)).astype(np.float32)
    params = {"prompt": {"prompt": prompt}}
    ctx = types.SimpleNamespace(length=m, pieces=k, progress=False, evaluator=evaluator,
                                variables=trainer.variables)
    scores = np.array([0.3, 0.1, 0.4, 0.2])
    ratios, seeds = (0.0, 0.25, 0.75), 2
    # 9 candidates x 8 examples = one call of the eval batch (72 rows)
    curve = curve_lib.masking_curve_result(ctx, params, scores, ratios, seeds)

    variables = trainer.variables(params)

    def dev(token_mask):
        v = {key: val for key, val in variables.items() if key != MASKS}
        v[MASKS] = mask_variables(np.asarray(token_mask, np.float32), np.ones((m, k),
                                                                                np.float32))
        return evaluator.evaluate(v)["main_metric"]

    brute = {"importance": [], "reversed": [], "random": []}
    by_score = sorted(range(m), key=lambda i: scores[i])  # lowest first
    full = dev(np.ones(m))
    for ratio in ratios:
        n = int(round(ratio * m))
        if n == 0:
            for order in brute:
                brute[order].append(full)
            continue
        for order, pruned in (("importance", by_score[:n]),
                              ("reversed", by_score[::-1][:n])):
            mask = np.ones(m)
            mask[list(pruned)] = 0
            brute[order].append(dev(mask))
        draws = []
        for seed in range(seeds):
            mask = np.ones(m)
            mask[np.random.RandomState(seed).permutation(m)[:n]] = 0
            draws.append(dev(mask))
        brute["random"].append(float(np.mean(draws)))
    assert curve["ratios"] == list(ratios) and curve["pruned_tokens"] == [0, 1, 3]
    for order in ("importance", "reversed"):
        assert curve[order] == pytest.approx(brute[order]), order
    assert curve["random"] == pytest.approx(brute["random"])
    values = brute["importance"] + brute["reversed"]
    assert len(set(values)) > 1  # the masks change the predictions (the check can fail)


# ------------------------------------------------------------------ the paper recipe
# Table 3 of the paper (T5-XL, 20 prompt tokens): prompt tuning and XPrompt's trainable
# parameters per task, as printed.
TABLE3_PROMPT_TUNING = 40960
TABLE3_XPROMPT = {"wic": 2560, "wsc": 6144, "cb": 2560, "copa": 15232, "rte": 512,
                  "boolq": 29184, "multirc": 27648}


def test_paper_recipe_resolves_to_the_papers_values():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from xprompt_jax.prompts import initializers
    from xprompt_jax.runs.config import RunConfig
    from xprompt_jax.xprompt import masked_prompt

    gin.clear_config()
    try:
        gin_utils.parse_gin(["recipes/xprompt_paper.gin"],
                            ["MODEL_DIR = '/x'", "MIXTURE_OR_TASK_NAME = 't'"],
                            finalize=False)
        run = gin_utils.configured(XPromptConfig)()
        assert run.token_ratios == run.piece_ratios == (
            0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
        assert run.search_include_unpruned is False
        assert run.piece_ranking == "per_token"
        # Limitations: "requires rewinding the pruned model at different compression ratios"
        assert run.rewind_each_candidate is True and run.rewind_steps is None
        data = gin_utils.configured(DataConfig)()
        evaluation = gin_utils.configured(EvalConfig)()
        trainer = gin_utils.configured(TrainerConfig)()
        assert data.batch_size == 16 and gin.query_parameter("%TRAIN_EPOCHS") == 100
        run_bound = gin.get_bindings(RunConfig, resolve_references=False)
        assert str(run_bound["train_epochs"]) == "%TRAIN_EPOCHS"
        # Table 10's generation verbalizers, read as T5 reads labels
        assert evaluation.mode == "generation" and evaluation.label_parsing == "t5"
        assert evaluation.main_metric == ("f1a", "accuracy")
        assert trainer.eval_period and trainer.patience is None
        for name, value in (("PROMPT_LENGTH", 20), ("NUM_PIECES", 16),
                            ("TOKEN_PRUNE_MODE", "zero")):
            assert gin.query_parameter(f"%{name}") == value, name
        prompt = gin.get_bindings(masked_prompt.MaskedSoftPrompt, resolve_references=False)
        assert str(prompt["init"]) == "%PROMPT_INIT"
        init = gin.query_parameter("%PROMPT_INIT")
        assert init.configurable.wrapped is initializers.sampled_vocab
        opt = gin.get_bindings(optimizers.adafactor)
        assert opt["learning_rate"] == 0.3 and opt["weight_decay_rate"] == 1e-5
        assert opt["decay_rate"] == 0.8 and opt["multiply_by_parameter_scale"] is False
        # The model: T5.1.1 XL (gated GELU, untied logits, emb 2048) and its checkpoint.
        model_config = gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
        assert (model_config.emb_dim, model_config.num_encoder_layers,
                model_config.mlp_dim) == (2048, 24, 5120)
        assert tuple(model_config.mlp_activations) == ("gelu", "linear")
        assert model_config.logits_via_embedding is False
        assert gin.query_parameter("%INITIAL_CHECKPOINT_PATH") == (
            "gs://t5-data/pretrained_models/t5x/t5_1_1_xl/checkpoint_1000000")
        length, pieces = (gin.query_parameter("%PROMPT_LENGTH"),
                          gin.query_parameter("%NUM_PIECES"))
    finally:
        gin.clear_config()
    # Table 3's prompt-tuning count is the recipe's prompt: 20 x emb_dim parameters, here
    # the shape the recipe's MaskedSoftPrompt creates on XL's embedding (no weights read).
    module = masked_prompt.MaskedSoftPrompt(length=length, init=initializers.uniform(),
                                            num_pieces=pieces, token_prune_mode="zero")
    # (the module's `init` field, its initializer, shadows `Module.init`)
    shapes = jax.eval_shape(
        lambda: nn.Module.init(module, jax.random.PRNGKey(0),
                               jnp.zeros((1, 1, model_config.emb_dim), jnp.float32)))
    assert shapes["params"]["prompt"].size == TABLE3_PROMPT_TUNING == length * 2048
    # Every XPrompt count of Table 3 is a whole number of XL pieces (2048 / 16 = 128
    # values) and no more than the unpruned prompt (with emb 1024, BoolQ's would not be).
    piece_size = model_config.emb_dim // pieces
    for task, count in TABLE3_XPROMPT.items():
        assert count % piece_size == 0 and count <= TABLE3_PROMPT_TUNING, task
    assert TABLE3_XPROMPT["boolq"] > length * 1024


def test_table3_counts_reachable_by_the_paper_grid():
    """Which Table 3 counts the 10..90% grid reaches (the recipe header's statement):
    per-token ranking keeps t x p pieces with t = 20 - round(r 20), p = 16 - round(r 16);
    the global ranking keeps 16 t - round(r 16 t) of the surviving tokens' pieces. Counted
    by hand from those formulas, then the reachable ones rebuilt with the pruning code."""
    grid = pruning.default_ratios()
    tokens = [20 - round(r * 20) for r in grid]
    per_piece = [16 - round(r * 16) for r in grid]
    assert sorted(tokens) == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert sorted(per_piece) == [2, 3, 5, 6, 8, 10, 11, 13, 14]
    per_token = {t * p for t in tokens for p in per_piece}
    global_ = {16 * t - round(r * 16 * t) for t in tokens for r in grid}
    pieces = {task: count // 128 for task, count in TABLE3_XPROMPT.items()}
    assert pieces == {"wic": 20, "wsc": 48, "cb": 20, "copa": 119, "rte": 4, "boolq": 228,
                      "multirc": 216}
    assert {t for t, n in pieces.items() if n in per_token} == {"wic", "wsc", "cb", "rte"}
    assert {t for t, n in pieces.items() if n in global_} == {"wsc"}
    # The pruning code gives the reachable counts: WiC/CB 2 tokens x 10 pieces (token
    # ratio 0.9, piece ratio 0.4), WSC 6 x 8 (0.7, 0.5), RTE 2 x 2 (0.9, 0.9).
    rng = np.random.RandomState(0)
    for (token_ratio, piece_ratio), task in (((0.9, 0.4), "wic"), ((0.7, 0.5), "wsc"),
                                             ((0.9, 0.9), "rte")):
        token_mask = pruning.prune_tokens(rng.rand(20), np.ones(20), token_ratio)
        base = int(token_mask.sum()) * 16
        piece_mask = pruning.prune_pieces(rng.rand(20, 16), np.ones((20, 16)), token_mask,
                                          piece_ratio, base, per_token=True)
        assert pruning.trainable_parameter_count(token_mask, piece_mask, 2048) == \
            TABLE3_XPROMPT[task], task


def test_reachable_ratios_drop_only_the_ratios_that_prune_every_unit():
    from xprompt_jax.xprompt import pruning

    grid = pruning.default_ratios()
    assert pruning.reachable_ratios(grid, 16, "PIECE_RATIOS") == grid  # the paper's k = 16
    assert pruning.reachable_ratios(grid, 20, "TOKEN_RATIOS") == grid  # and m = 20
    # k = 4: round(0.9 * 4) = 4 would prune every piece of a token; 0.8 -> 3 keeps one.
    assert pruning.reachable_ratios(grid, 4, "PIECE_RATIOS") == grid[:-1]
    with pytest.raises(ValueError, match="every ratio prunes all 1 units"):
        pruning.reachable_ratios((0.6, 0.9), 1, "TOKEN_RATIOS")
