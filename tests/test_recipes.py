"""gin/recipes/*_paper.gin resolve to their papers' values (read back through gin).

Expected values are transcribed from the papers: Lester et al. 2021 sections 3 and 5,
footnote 7; EPT App. B.1-B.4 and Table 5.
"""

import gin
import numpy as np
import pytest

from _tasks_import import T5_SPM, import_tasks
from xprompt_jax import gin_utils
from xprompt_jax.training import schedules

EPT_GRID = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)   # EPT B.2


@pytest.fixture
def parse(monkeypatch):
    monkeypatch.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
    import_tasks()
    gin.clear_config()

    def fn(recipe, task, *extra):
        gin.clear_config()
        gin_utils.parse_gin([recipe], [f"MIXTURE_OR_TASK_NAME = '{task}'",
                                       "MODEL_DIR = '/tmp/unused'", *extra], finalize=False)

    yield fn
    gin.clear_config()


def q(name):
    return gin.query_parameter(f"%{name}")


def resolved(name):
    value = q(name)
    return value.scoped_configurable_fn() if hasattr(value, "scoped_configurable_fn") else value


def _model():
    return q("MODEL").scoped_configurable_fn()


def test_default_lr_grid_is_the_ept_grid():
    assert tuple(schedules.DEFAULT_LR_GRID) == EPT_GRID
    assert schedules.learning_rate_grid() == list(EPT_GRID)


def test_lester_paper_recipe(parse):
    parse("recipes/lester_paper.gin", "lester_super_glue_rte_v102")
    cfg = resolved("MODEL_CONFIG")  # (building MODEL would read the checkpoint's embedding)
    # LM-adapted T5.1.1 base: gated GELU, untied logits, the lm100k checkpoint.
    assert (cfg.emb_dim, cfg.mlp_dim, tuple(cfg.mlp_activations)) == (768, 2048,
                                                                        ("gelu", "linear"))
    assert cfg.logits_via_embedding is False
    assert "t5_1_1_lm100k_base" in q("INITIAL_CHECKPOINT_PATH")
    prompt = gin.query_parameter("xprompt_jax.models.prompted.PromptedT5.prompt")
    assert prompt.configurable.name == "SoftPrompt" and q("PROMPT_LENGTH") == 100
    assert gin.query_parameter("xprompt_jax.prompts.soft_prompt.SoftPrompt.length"
                               ).scoped_configurable_fn() == 100
    assert (q("LEARNING_RATE"), q("BATCH_SIZE"), q("TRAIN_STEPS")) == (0.3, 32, 30000)
    # generation, an output that is no label scoring 0 (T5's exact label parsing)
    assert q("EVAL_MODE") == "generation" and q("LABEL_PARSING") == "t5"
    assert q("OPTIMIZER").configurable.name == "adafactor"
    ada = "xprompt_jax.training.optimizers.adafactor"
    assert gin.query_parameter(f"{ada}.decay_rate") == 0.8
    assert gin.query_parameter(f"{ada}.multiply_by_parameter_scale") is False
    assert gin.query_parameter(f"{ada}.weight_decay_rate") == 1e-5
    assert gin.query_parameter(f"{ada}.clipping_threshold") == 1.0
    assert q("PROMPT_INIT").configurable.name == "lester_prompt_init"


def test_lester_class_label_words_and_init(parse):
    tasks = import_tasks()
    ps = tasks.paper_settings
    assert ps.lester_init_words("lester_super_glue_rte_v102") == ["entailment",
                                                                  "not_entailment"]
    # Footnote 7: WSC and ReCoRD (no class labels) start from task words.
    assert ps.lester_init_words("lester_super_glue_wsc_v102") == [
        "commonsense", "pronoun", "resolution"]
    assert ps.lester_init_words("lester_super_glue_record_v102") == [
        "commonsense", "reasoning", "reading", "comprehension"]
    assert ps.lester_init_words("lester_squad_v110") is None
    # The initializer: row i = mean embedding of word i's pieces (independent encode).
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(T5_SPM))
    emb = np.random.RandomState(0).normal(size=(32128, 4)).astype(np.float32)
    from xprompt_jax.prompts import task_init
    init = task_init.lester_prompt_init(emb, "lester_super_glue_wsc_v102")
    rows = np.asarray(init(__import__("jax").random.PRNGKey(0), (5, 4)))
    for i, word in enumerate(["commonsense", "pronoun", "resolution"]):
        np.testing.assert_allclose(rows[i], emb[sp.encode(word)].mean(0), rtol=1e-6)
    # prompts/class_labels.gin's initializer uses the same words for WSC (it raised before).
    rows2 = np.asarray(task_init.class_labels_for_task(emb, "lester_super_glue_wsc_v102")(
        __import__("jax").random.PRNGKey(0), (5, 4)))
    np.testing.assert_allclose(rows2[:3], rows[:3], rtol=1e-6)


@pytest.mark.parametrize("recipe,length,module", [
    ("recipes/ept_paper.gin", 1, "EPTPrompt"),
    ("recipes/ept_star_paper.gin", 10, "EPTPrompt"),
    ("recipes/ept_pt_baseline.gin", 10, "SoftPrompt"),
    ("recipes/ept_ptuning_baseline.gin", 10, "PTuningPrompt"),
    ("recipes/ept_resprompt_baseline.gin", 10, "ResPrompt")])
def test_ept_recipes(parse, recipe, length, module):
    parse(recipe, "lester_glue_rte_v200_heldout")
    model = _model()
    cfg = model.config
    # T5 v1.0 base: ReLU, logits through the tied embedding.
    assert (cfg.emb_dim, cfg.mlp_dim, tuple(cfg.mlp_activations)) == (768, 3072, ("relu",))
    assert cfg.logits_via_embedding is True
    assert "t5x/t5_base/" in q("INITIAL_CHECKPOINT_PATH")
    assert type(model.prompt).__name__ == module and model.prompt.length == length
    if module == "EPTPrompt":
        p = model.prompt
        assert (p.hidden, p.use_bias, p.activation, p.layer_norm, p.residual) == (
            1, False, None, False, False)
    if module == "PTuningPrompt":  # B.3: PEFT's MLP, 3 linear layers of the embedding size
        assert (model.prompt.encoder, model.prompt.hidden) == ("mlp", None)
    if module == "ResPrompt":      # B.3: one shared MLP of 400 hidden units, LayerNorm
        p = model.prompt
        assert (p.bottleneck, p.shared, p.layer_norm, p.activation) == (400, True, True,
                                                                         "relu")
    init = model.prompt.init(__import__("jax").random.PRNGKey(0), (2000,))
    assert -0.5 <= float(init.min()) < -0.45 and 0.45 < float(init.max()) <= 0.5
    assert q("OPTIMIZER").configurable.name == "adamw"
    assert q("WEIGHT_DECAY") == 0.01
    assert (q("LEARNING_RATE"), q("BATCH_SIZE"), q("TRAIN_STEPS"), q("EVAL_PERIOD")) == (
        0.3, 16, 30000, 1000)
    assert tuple(q("LR_GRID")) == EPT_GRID
    assert (q("EVAL_SPLIT"), q("EVAL_HELDOUT_SPLIT")) == ("validation", "test")
    assert q("LABEL_PARSING") == "t5"
    assert resolved("TASK_FEATURE_LENGTHS")["inputs"] == 256
    assert resolved("MAIN_METRIC") == "accuracy"


@pytest.mark.parametrize("task,inputs,metric", [
    ("lester_super_glue_multirc_v102_heldout", 348, "f1a"),
    ("lester_mrqa_hotpotqa_local_heldout", 512, "f1"),
    ("lester_glue_stsb_v200_heldout", 256, "pearson_corrcoef"),
    ("lester_glue_mrpc_v200_heldout", 256, "accuracy"),
    ("lester_glue_qqp_local_heldout", 256, "accuracy"),
    ("lester_glue_cola_v200_heldout", 256, "matthews_corrcoef")])
def test_ept_recipe_per_task_lengths_and_metrics(parse, task, inputs, metric):
    parse("recipes/ept_paper.gin", task)
    assert resolved("TASK_FEATURE_LENGTHS")["inputs"] == inputs
    assert resolved("MAIN_METRIC") == metric


def test_size_override_after_recipe(parse):
    parse("recipes/ept_paper.gin", "lester_glue_rte_v200_heldout")
    gin_utils.parse_gin(["models/t5_1_0_large.gin"], finalize=False)
    assert _model().config.emb_dim == 1024


@pytest.mark.parametrize("method", ["recipes/ept_paper.gin", "recipes/ept_star_paper.gin",
                                    "recipes/ept_ptuning_baseline.gin"])
def test_ept_fewshot_protocol(monkeypatch, method):
    """EPT B.2: few-shot runs train 10,000 steps at lr 0.3; the rest is the method's."""
    monkeypatch.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
    import_tasks()
    gin.clear_config()
    try:
        gin_utils.parse_gin([method, "recipes/ept_fewshot.gin"],
                            ["MIXTURE_OR_TASK_NAME = 'lester_super_glue_cb_v102_16shot'",
                             "MODEL_DIR = '/tmp/unused'"], finalize=False)
        assert (q("TRAIN_STEPS"), q("LEARNING_RATE"), tuple(q("LR_GRID"))) == (
            10000, 0.3, (0.3,))
        assert q("EVAL_HELDOUT_SPLIT") is None and q("EVAL_PERIOD") == 1000
        assert (q("BATCH_SIZE"), q("WEIGHT_DECAY")) == (16, 0.01)
    finally:
        gin.clear_config()
