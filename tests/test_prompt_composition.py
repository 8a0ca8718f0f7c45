"""Shared + task prompt composition of a PromptBank (google-research/prompt-
tuning's multitask 'add' / 'concat') and the bank export.

References are independent single-prompt `SoftPrompt` models holding the composed value
(S + T_i, or concat(S, T_i)), each run on its own task's rows alone."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xprompt_jax.models import PromptedT5, T5Config
from xprompt_jax.prompts import SoftPrompt, initializers
from xprompt_jax.prompts.bank import PromptBank, compose, per_prompt_loss_weights, with_prompt_ids
from xprompt_jax.training import optimizers
from xprompt_jax.training.bank_training import BankAndSharedState, per_prompt_optimizer

CFG = dict(vocab_size=80, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1,
           num_decoder_layers=1, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, dropout_rate=0.0,
           mlp_activations=("gelu", "linear"), logits_via_embedding=False)
N, M, E = 3, 4, 16
IDS = np.array([2, 0, 1, 2, 0, 1])


def _batch(b=6, seed=0):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, 80, (b, 7))
    enc[1, 4:] = 0
    tgt = rng.randint(2, 80, (b, 4))
    tgt[-1, 2:] = 0
    dec = np.concatenate([np.zeros((b, 1), int), tgt[:, :-1]], axis=1)
    return enc, dec, tgt


def _setup(composition, task_length, shared_length):
    """The composed bank model, its variables (random S and T_i), the id-carrying tokens."""
    enc, dec, tgt = _batch()
    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(
        SoftPrompt(task_length), num_prompts=N, composition=composition,
        shared_length=shared_length))
    ids_enc = with_prompt_ids({"encoder_input_tokens": enc}, IDS, 80, N)["encoder_input_tokens"]
    return bank, _random_variables(bank, ids_enc, dec, tgt), ids_enc, (enc, dec, tgt)


def _random_variables(model, *args, seed=0):
    """Random values in the shapes of `model.init` (only traced: compiling T5's init takes
    longer than the whole test); LayerNorm scales 1."""
    shapes = jax.eval_shape(lambda r: model.init(r, *args, enable_dropout=False),
                            jax.random.PRNGKey(0))
    rng = np.random.RandomState(seed)

    def fill(path, x):
        if not hasattr(x, "dtype"):
            return x
        if "scale" in jax.tree_util.keystr(path):
            return jnp.ones(x.shape, x.dtype)
        return jnp.asarray(rng.uniform(-0.3, 0.3, x.shape), x.dtype)
    return jax.tree_util.tree_map_with_path(fill, shapes)


def _frozen(variables):
    return {k: v for k, v in variables["params"].items() if k != "prompt"}


def _single(value):
    return PromptedT5(T5Config(**CFG), prompt=SoftPrompt(value.shape[0]))


@functools.partial(jax.jit, static_argnums=0)
def _grad_and_logits(model, prompt_params, frozen, enc, dec, tgt, weights):
    """Grad of sum(token NLL * weights `[B, T]`) w.r.t. `params['prompt']`, and the logits
    (jitted once per model and shapes: the add and concat tests share the single model)."""
    def loss(prompt_params):
        logits = model.apply({"params": {**frozen, "prompt": prompt_params}}, enc, dec, tgt,
                             enable_dropout=False)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        nll = -jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0]
        return jnp.sum(nll * weights), logits
    return jax.grad(loss, has_aux=True)(prompt_params)


# composition: (task prompt length m, shared length m_s); both compose to 4 positions
CASES = {"add": (M, M), "concat": (2, 2)}


@pytest.mark.parametrize("composition", sorted(CASES))
def test_composed_logits_and_shared_gradient_match_single_prompts(composition):
    """Each example's logits = a SoftPrompt model of its composed prompt; the gradient of S
    from the mixed batch (per-prompt token-mean losses, as the trainer weights them) = the
    sum of each task's gradient alone, and T_i's gradient = task i's alone."""
    m, m_s = CASES[composition]
    bank, variables, ids_enc, (enc, dec, tgt) = _setup(composition, m, m_s)
    shared = np.asarray(variables["params"]["prompt"]["shared"]["prompt"])
    tasks = np.asarray(variables["params"]["prompt"]["bank"]["prompt"])
    assert shared.shape == (m_s, E) and tasks.shape == (N, m, E)
    assert variables["params_axes"]["prompt"]["shared"]["prompt_axes"].names == \
        ("prompt", "prompt_embed")  # a plain param: no bank axis
    composed = compose(shared, tasks, composition)
    assert composed.shape == (N, m if composition == "add" else m_s + m, E)
    expected = shared + tasks[1] if composition == "add" else np.concatenate([shared, tasks[1]])
    np.testing.assert_array_equal(composed[1], expected)
    np.testing.assert_array_equal(np.asarray(bank.apply(variables, method=bank.prompt_tokens)),
                                  composed)

    frozen = _frozen(variables)
    mask = (tgt > 0).astype(np.float32)
    weights = per_prompt_loss_weights(mask, IDS, N)
    grads, logits = _grad_and_logits(bank, variables["params"]["prompt"], frozen, ids_enc, dec,
                                     tgt, weights)
    single = _single(composed[0])
    shared_sum = np.zeros_like(shared)
    for i in range(N):
        rows = IDS == i
        # task i alone: a SoftPrompt of its composed prompt, its own rows and token mean
        alone = mask * rows[:, None] / max(mask[rows].sum(), 1.0)
        g, ref = _grad_and_logits(single, {"prompt": jnp.asarray(composed[i])}, frozen, enc,
                                  dec, tgt, alone)
        np.testing.assert_allclose(np.asarray(logits)[rows], np.asarray(ref)[rows],
                                   rtol=1e-5, atol=1e-5)
        g = np.asarray(g["prompt"])
        g_shared, g_task = (g, g) if composition == "add" else (g[:m_s], g[m_s:])
        shared_sum += g_shared
        np.testing.assert_allclose(np.asarray(grads["bank"]["prompt"][i]), g_task,
                                   rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grads["shared"]["prompt"]), shared_sum,
                               rtol=1e-4, atol=1e-7)
    assert np.abs(shared_sum).max() > 1e-4  # a real gradient


def test_composition_settings_are_checked():
    enc, dec, tgt = _batch(b=2)
    ids_enc = with_prompt_ids({"encoder_input_tokens": enc}, [0, 1], 80)["encoder_input_tokens"]
    for bank, match in [(PromptBank(SoftPrompt(M), num_prompts=2, composition="mul"), "mul"),
                        (PromptBank(SoftPrompt(M), num_prompts=2, composition="add",
                                    shared_length=3), "same shape")]:
        model = PromptedT5(T5Config(**CFG), prompt=bank)
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(lambda r: model.init(r, ids_enc, dec, tgt, enable_dropout=False),
                           jax.random.PRNGKey(0))


def test_per_prompt_optimizer_gives_the_shared_prompt_its_own_state():
    """Bank entries: the optimizer per entry; the shared prompt: the plain optimizer on it
    alone (its own Adafactor state, not vmapped); a bank without shared params keeps the
    old (vmapped) state layout."""
    inner = optimizers.adafactor(learning_rate=0.3, decay_rate=0.8,
                                 multiply_by_parameter_scale=False, weight_decay_rate=1e-5,
                                 clipping_threshold=1.0)
    rng = np.random.RandomState(0)
    params = {"prompt": {"bank": {"prompt": jnp.asarray(rng.randn(N, 8, E), jnp.float32)},
                         "shared": {"prompt": jnp.asarray(rng.randn(8, E), jnp.float32)}}}
    grads = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.randn(*x.shape), jnp.float32),
                                   params)
    opt = per_prompt_optimizer(inner)
    state = opt.init(params)
    assert isinstance(state, BankAndSharedState)
    # the shared part: inner's own state of the shared param alone (unbatched shapes)
    ref_state = inner.init({"prompt": {"shared": params["prompt"]["shared"]}})
    assert jax.tree_util.tree_structure(state.shared) == jax.tree_util.tree_structure(ref_state)
    assert [x.shape for x in jax.tree_util.tree_leaves(state.shared)] == \
        [x.shape for x in jax.tree_util.tree_leaves(ref_state)]
    updates, state = jax.jit(opt.update)(grads, state, params)
    assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(params)
    sh = {"prompt": {"shared": params["prompt"]["shared"]}}
    sg = {"prompt": {"shared": grads["prompt"]["shared"]}}
    ref_u, _ = inner.update(sg, inner.init(sh), sh)
    np.testing.assert_allclose(np.asarray(updates["prompt"]["shared"]["prompt"]),
                               np.asarray(ref_u["prompt"]["shared"]["prompt"]),
                               rtol=1e-6, atol=1e-7)
    for k in range(N):
        ek = {"prompt": params["prompt"]["bank"]["prompt"][k]}
        gk = {"prompt": grads["prompt"]["bank"]["prompt"][k]}
        ref_k, _ = inner.update(gk, inner.init(ek), ek)
        np.testing.assert_allclose(np.asarray(updates["prompt"]["bank"]["prompt"][k]),
                                   np.asarray(ref_k["prompt"]), rtol=1e-6, atol=1e-7)
    plain = per_prompt_optimizer(inner).init({"prompt": {"bank": params["prompt"]["bank"]}})
    assert not isinstance(plain, BankAndSharedState)
    optax.apply_updates(params, updates)  # same tree


# --------------------------------------------------------------- trainer run + bank export
def _world_trainer(model_dir):
    import gin

    import xprompt_jax.tasks  # noqa: F401  (as the CLI does before parsing)
    from xprompt_jax import gin_utils
    from xprompt_jax.runs import build_trainer, configured_run
    from xprompt_jax.runs.build import bank_config

    gin.clear_config()
    gin_utils.parse_gin(
        ["models/world_tiny.gin", "prompt_tuning.gin", "world/run.gin", "mixed_tasks.gin"],
        [f"MODEL_DIR = '{model_dir}'", "TRAIN_STEPS = 2", "EVAL_PERIOD = None", "SAVE_PERIOD = 2",
         "BATCH_SIZE = 8", "MAX_EVAL_EXAMPLES = 4", "PROMPT_LENGTH = 3",
         "SHARED_PROMPT = 'add'", "MIXED_TASKS = ['world_boolq', 'world_rte']",
         "NUM_PROMPTS = 2"], finalize=False)  # two tasks: half the tf.data set-up
    try:
        run = configured_run()
        return build_trainer(run), run, bank_config(run).names(run.model)
    finally:
        gin.clear_config()


@pytest.fixture(scope="module")
def trained_add_run(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("mixed_add")
    trainer, run, names = _world_trainer(str(model_dir))
    summary = trainer.run()
    return trainer, summary, names, model_dir, run


def test_mixed_task_add_run_trains_and_checkpoints(trained_add_run):
    trainer, summary, names, model_dir, _ = trained_add_run
    assert names == ["world_boolq", "world_rte"]
    assert summary["final_step"] == 2 and trainer.checkpointer.latest_step() == 2
    params = trainer.state.params["prompt"]
    assert params["shared"]["prompt"].shape == (3, 128)
    assert params["bank"]["prompt"].shape == (2, 3, 128)
    # the shared prompt has its own (unbatched) optimizer state beside the bank's
    states = [s for s in jax.tree_util.tree_leaves(
        trainer.state.opt_state, is_leaf=lambda x: isinstance(x, BankAndSharedState))
        if isinstance(s, BankAndSharedState)]
    assert len(states) == 1
    # the checkpoint restores that state (a resume): params and both optimizer states
    before = jax.tree_util.tree_map(np.asarray, trainer.state)
    trainer.restore(2)
    after = jax.tree_util.tree_map(np.asarray, trainer.state)
    assert jax.tree_util.tree_structure(after) == jax.tree_util.tree_structure(before)
    for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(before)):
        np.testing.assert_array_equal(a, b)
    # best_per_task and the numpy export hold the composed prompts (shared folded in)
    composed = np.asarray(params["shared"]["prompt"])[None] + np.asarray(params["bank"]["prompt"])
    npy = np.load(model_dir / "numpy_checkpoints" / "checkpoint_2" / "world_rte.npy")
    np.testing.assert_allclose(npy, composed[1], rtol=1e-6, atol=1e-6)


def test_bank_export_reproduces_the_bank_logits(trained_add_run, tmp_path):
    """export_run on the trained composed bank: each prompts/<name>.npy, loaded into a plain
    SoftPrompt model through its inference_<name>.gin, gives the bank model's logits for
    that prompt id on the same text."""
    import gin

    from xprompt_jax import gin_utils
    from xprompt_jax.prompts.bank import prepend_id_tokens
    from xprompt_jax.runs import export_run

    trainer, _, names, model_dir, run = trained_add_run
    record = export_run(run, output_dir=str(tmp_path / "export"), checkpoint="latest")
    listed = json.load(open(tmp_path / "export" / "export.json"))
    assert [p["name"] for p in listed["prompts"]] == names
    assert listed["composition"] == "add" and listed["num_prompts"] == 2
    variables = trainer.variables()
    rng = np.random.RandomState(3)
    enc = rng.randint(2, 700, (2, 9))
    enc[1, 6:] = 0
    tgt = rng.randint(2, 700, (2, 3))
    dec = np.concatenate([np.zeros((2, 1), int), tgt[:, :-1]], axis=1)
    frozen = {k: v for k, v in variables["params"].items() if k != "prompt"}
    bank_logits = jax.jit(lambda v, e: trainer.model.apply(v, e, dec, tgt, enable_dropout=False))
    plain_logits = None
    for i, entry in enumerate(record["prompts"]):
        assert os.path.basename(entry["file"]) == f"{names[i]}.npy"
        gin.clear_config()
        try:
            gin_utils.parse_gin(["models/world_tiny.gin", "prompt_tuning.gin",
                                 entry["inference_gin"]], [], finalize=False)
            plain = gin.query_parameter("%MODEL").scoped_configurable_fn()
        finally:
            gin.clear_config()
        assert isinstance(plain.prompt, SoftPrompt) and plain.prompt.length == 3
        # its initializer reads the exported file (what init_variables puts in the params)
        prompt = plain.prompt.init(jax.random.PRNGKey(7), (3, 128))
        np.testing.assert_array_equal(np.asarray(prompt), np.load(entry["file"]))
        if plain_logits is None:  # the plain models differ only in their init: one jit
            plain_logits = jax.jit(lambda v: plain.apply(v, enc, dec, tgt, enable_dropout=False))
        ref = plain_logits({"params": {**frozen, "prompt": {"prompt": prompt}}})
        got = bank_logits(variables, prepend_id_tokens(enc, i, 768, 2))
        np.testing.assert_allclose(np.asarray(ref), np.asarray(got), rtol=1e-5, atol=1e-5)
        assert np.abs(np.asarray(got)).max() > 1.0
