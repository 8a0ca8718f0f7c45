"""XPrompt with T5X, without t5x: `FixedMaskPrompt` (masks as constants, for the rewind
under t5x/train.py) equals `MaskedSoftPrompt` with the same masks, and the pruning CLI
(`python -m xprompt_jax.prune`) reads a T5X run checkpoint (orbax layout, as t5x/train.py
writes it) and writes masks, the rewound prompt and a report."""

import json
import os
import pathlib
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic_tasks
from training_utils import fixture_params, run_config, tiny_prompted_model
from xprompt_jax import gin_utils
from xprompt_jax.errors import DataError
from xprompt_jax.checkpoints import load_t5x_checkpoint
from xprompt_jax.models import decoding
from xprompt_jax.prompts import initializers
from xprompt_jax.xprompt import MaskedSoftPrompt, mask_variables, pruning
from xprompt_jax.xprompt import t5x_stage2
from xprompt_jax.xprompt.config import XPromptConfig
from xprompt_jax.xprompt.fixed_masks import FixedMaskPrompt, load_masks, save_masks

ROOT = pathlib.Path(__file__).resolve().parents[1]
M, K, E = 4, 4, 8  # prompt tokens, pieces per token, embed size of the tiny fixture
TOKEN_MASK = np.array([1, 0, 1, 1], np.float32)
PIECE_MASK = np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], np.float32)


def _batch(seed=0, b=3):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, 500, (b, 9))
    enc[0, 6:] = 0
    tgt = rng.randint(2, 500, (b, 4))
    tgt[1, 3:] = 0
    dec = np.concatenate([np.zeros((b, 1), int), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": jnp.asarray(enc), "decoder_input_tokens": jnp.asarray(dec),
            "decoder_target_tokens": jnp.asarray(tgt)}


def _params_with_prompt(fixtures_dir, seed=0):
    params = dict(fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3")))
    prompt = np.random.RandomState(seed).uniform(-0.5, 0.5, (M, E)).astype(np.float32)
    return {**params, "prompt": {"prompt": prompt}}


@pytest.mark.parametrize("mode", ["remove", "zero"])
def test_fixed_mask_prompt_equals_masked_soft_prompt(tmp_path, fixtures_dir, mode):
    masks_path = save_masks(tmp_path / "masks.npz", TOKEN_MASK, PIECE_MASK)
    params = _params_with_prompt(fixtures_dir)
    base = tiny_prompted_model(prompt_length=M)
    masked = base.clone(prompt=MaskedSoftPrompt(length=M, num_pieces=K, token_prune_mode=mode))
    fixed = base.clone(prompt=FixedMaskPrompt(length=M, masks_path=str(masks_path),
                                              token_prune_mode=mode))
    masked_vars = {"params": params,
                   "prompt_masks": mask_variables(jnp.asarray(TOKEN_MASK), jnp.asarray(PIECE_MASK))}
    fixed_vars = {"params": params}  # no mask collection: what T5X's model applies
    batch = _batch()
    args = (batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"])
    want = masked.apply(masked_vars, *args, enable_dropout=False)
    got = fixed.apply(fixed_vars, *args, enable_dropout=False)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # the masks matter (else the comparison proves little)
    unmasked = base.apply({"params": params}, *args, enable_dropout=False)
    assert not np.allclose(np.asarray(unmasked), np.asarray(want))
    # the prompt as it enters the encoder, and incremental decoding (rebuilt masks)
    np.testing.assert_array_equal(
        np.asarray(fixed.apply(fixed_vars, method=fixed.prompt_tokens)),
        params["prompt"]["prompt"] * pruning.value_mask(TOKEN_MASK, PIECE_MASK, E))
    tokens = batch["encoder_input_tokens"]
    np.testing.assert_array_equal(
        np.asarray(decoding.decode_tokens(fixed, fixed_vars, tokens, 4)),
        np.asarray(decoding.decode_tokens(masked, masked_vars, tokens, 4)))


def test_fixed_mask_prompt_param_axes_and_errors(tmp_path):
    masks_path = str(save_masks(tmp_path / "masks.npz", TOKEN_MASK, PIECE_MASK))
    token, piece = load_masks(masks_path)
    np.testing.assert_array_equal(token, TOKEN_MASK)
    np.testing.assert_array_equal(piece, PIECE_MASK)
    base = tiny_prompted_model(prompt_length=M)
    batch = _batch()
    args = (batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"])
    init_value = np.full((M, E), 0.25, np.float32)
    model = base.clone(prompt=FixedMaskPrompt(length=M, init=initializers.from_array(init_value),
                                              masks_path=masks_path))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args,
                                               enable_dropout=False))
    assert set(shapes) == {"params", "params_axes"}  # no mask collection
    assert shapes["params"]["prompt"]["prompt"].shape == (M, E)
    assert tuple(shapes["params_axes"]["prompt"]["prompt_axes"].names) == ("prompt",
                                                                           "prompt_embed")
    with pytest.raises(ValueError, match="PROMPT_LENGTH"):
        base.clone(prompt=FixedMaskPrompt(length=M + 1, masks_path=masks_path)).init(
            jax.random.PRNGKey(0), *args, enable_dropout=False)
    with pytest.raises(DataError, match="masks file not found"):
        base.clone(prompt=FixedMaskPrompt(length=M, masks_path=str(tmp_path / "no.npz"))).init(
            jax.random.PRNGKey(0), *args, enable_dropout=False)
    with pytest.raises(ValueError, match="masks_path is not set"):
        base.clone(prompt=FixedMaskPrompt(length=M)).init(jax.random.PRNGKey(0), *args,
                                                          enable_dropout=False)


def test_a_bad_masks_file_is_one_line_naming_it(tmp_path):
    """Not an .npz (a text file: numpy would say "pickled data"; a lone .npy), cut short,
    missing a mask, masks of mismatched shapes, NaN: each a DataError naming the file and
    what it holds."""
    from xprompt_jax.xprompt.fixed_masks import load_masks, save_masks

    good = tmp_path / "masks.npz"
    save_masks(good, np.ones(4, np.float32), np.ones((4, 2), np.float32))
    cases = {}
    cases["text"] = (b"token_mask 1 1 1 1\n", "no .npz archive (it starts with b'toke')")
    npy = tmp_path / "one.npy"
    np.save(npy, np.ones(4, np.float32))
    cases["npy"] = (npy.read_bytes(), "an .npy array; expected the masks.npz")
    cases["truncated"] = (good.read_bytes()[:200], "unreadable .npz")
    for name, (data, says) in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        with pytest.raises(DataError) as e:
            load_masks(path)
        assert str(e.value).startswith(f"masks file {path}: ") and says in str(e.value), name
        assert "pickle" not in str(e.value)
    np.savez(tmp_path / "one_mask.npz", token_mask=np.ones(4))
    with pytest.raises(DataError, match=r"one_mask.npz lacks \['piece_mask'\]"):
        load_masks(tmp_path / "one_mask.npz")
    np.savez(tmp_path / "shapes.npz", token_mask=np.ones(4), piece_mask=np.ones((3, 2)))
    with pytest.raises(DataError, match=r"shapes.npz: expected token_mask \[m\] and "
                                        r"piece_mask \[m, k\], got \(4,\) and \(3, 2\)"):
        load_masks(tmp_path / "shapes.npz")
    np.savez(tmp_path / "nan.npz", token_mask=np.array([1, np.nan, 1, 1]),
             piece_mask=np.ones((4, 2)))
    with pytest.raises(DataError, match="nan.npz: NaN or Inf"):
        load_masks(tmp_path / "nan.npz")
    token_mask, piece_mask = load_masks(good)
    assert token_mask.shape == (4,) and piece_mask.shape == (4, 2)


def write_t5x_run_checkpoint(model_dir, params, step):
    """A checkpoint in the layout t5x/train.py writes (orbax OCDBT `state` item holding
    `{'target': params, 'state': {'step', 'param_states'}}`), like the shared fixture."""
    import orbax.checkpoint as ocp

    ckpt_dir = pathlib.Path(model_dir) / f"checkpoint_{step}"
    ckpt_dir.mkdir(parents=True)
    state = {"step": np.asarray(step, np.int32),
             "param_states": {"prompt": {"prompt": {
                 "v": np.zeros_like(params["prompt"]["prompt"])}}}}
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointer.save(str((ckpt_dir / "state").absolute()), {"target": params, "state": state})
    (ckpt_dir / "commit_success.txt").write_text("written by the test, as t5x/train.py does")
    return ckpt_dir


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    return env


PRUNE_BINDINGS = [
    "MIXTURE_OR_TASK_NAME = 'xprompt_test_synthetic'", "MIXTURE_OR_TASK_MODULE = 'synthetic_tasks'",
    "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 4}", "BATCH_SIZE = 8",
    "EVAL_MODE = 'generation'", "MAX_EVAL_EXAMPLES = 16", "NUM_PIECES = 4",
    "TOKEN_RATIOS = (0.25, 0.5)", "PIECE_RATIOS = (0.25, 0.5)", "NUM_SCORE_EXAMPLES = 8",
    "DROPOUT_RATE = 0.0"]


def _check_outputs(out_dir: pathlib.Path, stage1_prompt: np.ndarray):
    with np.load(out_dir / "masks.npz") as masks:
        token_mask, piece_mask = masks["token_mask"], masks["piece_mask"]
    assert token_mask.shape == (M,) and piece_mask.shape == (M, K)
    search = json.loads((out_dir / "search.json").read_text())
    np.testing.assert_array_equal(token_mask, search["chosen"]["token_mask"])
    np.testing.assert_array_equal(piece_mask, search["chosen"]["piece_mask"])
    assert [c["ratio"] for c in search["token_candidates"]] == [0.25, 0.5]  # never 0%
    assert [c["ratio"] for c in search["piece_candidates"]] == [0.25, 0.5]
    values = pruning.value_mask(token_mask, piece_mask, E)
    rewound = np.load(out_dir / "rewound_prompt.npy")
    np.testing.assert_array_equal(rewound, stage1_prompt * values)
    report = json.loads((out_dir / "report.json").read_text())
    assert report["parameters"]["xprompt"] == int(values.sum())
    assert report["parameters"]["prompt_tuning"] == M * E
    assert report["rewind"]["bindings"]["PROMPT_LENGTH"] == M
    text = (out_dir / "report.md").read_text()
    assert "xprompt_rewind.gin" in text and "| 25% |" in text
    assert np.asarray(json.loads((out_dir / "scores.json").read_text())["piece"]).shape == (M, K)
    assert not (out_dir / "work").exists()  # the unused trainer's empty directory is gone
    return token_mask, piece_mask


@pytest.mark.slow
def test_prune_cli_reads_t5x_run_checkpoint(tmp_path, fixtures_dir, t5_vocab_path):
    params = _params_with_prompt(fixtures_dir, seed=1)
    ckpt = write_t5x_run_checkpoint(tmp_path / "run", params, step=7)
    read = load_t5x_checkpoint(ckpt)
    assert read.format == "orbax" and read.step == 7
    assert t5x_stage2.checkpoint_param_shape(str(ckpt)) == (M, E)
    out_dir = tmp_path / "prune"
    # PROMPT_LENGTH is not given (xprompt.gin: 20): it is read from the checkpoint.
    cmd = [sys.executable, "-m", "xprompt_jax.prune", f"--t5x_checkpoint={tmp_path / 'run'}",
           "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=xprompt.gin",
           f"--output_dir={out_dir}"] + [f"--gin_bindings={b}" for b in PRUNE_BINDINGS]
    result = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "report.md" in result.stdout
    _check_outputs(out_dir, params["prompt"]["prompt"])


@pytest.mark.slow
def test_prune_with_prompt_file_and_reversed_masks(tmp_path, fixtures_dir, t5_vocab_path):
    """In process: the prompt from a numpy export overrides the checkpoint's, and the
    'reversed' variant keeps the low scorers (the same scores, the opposite order)."""
    synthetic_tasks.register(t5_vocab_path)
    params = _params_with_prompt(fixtures_dir, seed=2)
    ckpt = write_t5x_run_checkpoint(tmp_path / "run", params, step=5)
    other = np.random.RandomState(3).uniform(-0.5, 0.5, (M, E)).astype(np.float32)
    prompt_file = tmp_path / "prompt.prompt.npy"
    np.save(prompt_file, other)
    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "xprompt.gin"],
                            PRUNE_BINDINGS + [f"MODEL_DIR = '{tmp_path / 'prune'}'",
                                              "MASK_VARIANT = 'reversed'",
                                              "PRUNE_LEVELS = ('token',)"],
                            finalize=False)
        config = gin_utils.configured(XPromptConfig)()
        assert config.mask_variant == "reversed" and config.num_score_examples == 8
        report = t5x_stage2.prune_configured(str(ckpt), str(tmp_path / "prune"),
                                             str(prompt_file))
    finally:
        gin.clear_config()
    # the prompt is not the checkpoint's (step 5): the report names the file
    assert report["stage1"]["best_step"] == "prompt file prompt.prompt.npy"
    out_dir = tmp_path / "prune"
    with np.load(out_dir / "masks.npz") as masks:
        token_mask, piece_mask = masks["token_mask"], masks["piece_mask"]
    np.testing.assert_array_equal(piece_mask, np.ones((M, K)))  # token level only
    np.testing.assert_array_equal(np.load(out_dir / "rewound_prompt.npy"),
                                  other * pruning.value_mask(token_mask, piece_mask, E))
    scores = json.loads((out_dir / "scores.json").read_text())
    pruned = np.flatnonzero(token_mask == 0)
    # reversed: XPrompt's token count, kept from the lowest scorers of the full prompt
    search = json.loads((out_dir / "search.json").read_text())
    kept = int(np.sum(search["xprompt"]["token_mask"]))
    assert kept < M and int(token_mask.sum()) == kept
    np.testing.assert_array_equal(np.flatnonzero(token_mask),
                                  np.sort(np.argsort(scores["token"], kind="stable")[:kept]))


def test_prune_rejects_length_variant_and_non_prompt_checkpoint(tmp_path, fixtures_dir):
    with pytest.raises(ValueError, match="length"):
        t5x_stage2.prune_t5x_checkpoint(run_config(object(), tmp_path),
                                        XPromptConfig(mask_variant="length"),
                                        t5x_checkpoint="unused", output_dir=str(tmp_path))
    plain = fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"
    assert t5x_stage2.checkpoint_param_shape(str(plain)) is None
    assert t5x_stage2.checkpoint_param_shape(str(plain), ("token_embedder", "embedding")) == \
        (32128, E)
    legacy = fixtures_dir / "t5x_tiny_legacy" / "checkpoint_3"
    assert t5x_stage2.checkpoint_param_shape(str(legacy), ("token_embedder", "embedding")) == \
        (32128, 4)
    model = tiny_prompted_model().clone(prompt=MaskedSoftPrompt(length=M, num_pieces=K))
    with pytest.raises(ValueError, match="no target/prompt/prompt"):
        # (a registered task: the task name is checked first)
        run = run_config(model, tmp_path / "o", task=synthetic_tasks.TASK_NAME,
                         task_module="synthetic_tasks")
        t5x_stage2.prune_t5x_checkpoint(run, XPromptConfig(),
                                        t5x_checkpoint=str(plain),
                                        output_dir=str(tmp_path / "o"))



def test_t5x_rewind_prompt_treats_pruned_tokens_as_the_prune_cli_searched():
    """Without t5x: the T5X rewind's prompt (gin/t5x/methods/xprompt_rewind.gin, shared by
    xprompt_rewind.gin, eval and infer) has the TOKEN_PRUNE_MODE of gin/xprompt.gin, under
    which `python -m xprompt_jax.prune` chose the masks (the paper's 'zero', gamma * P).
    tests/test_t5x_readme.py checks the whole rewind gin under t5x."""
    modes = []
    for files, bindings in ((["models/t5_1_1_tiny.gin", "xprompt.gin"], ["MODEL_DIR = '/x'"]),
                            ([str(ROOT / "gin" / "t5x" / "methods" / "xprompt_rewind.gin")],
                             ["MASKS_PATH = '/x/masks.npz'",
                              "REWOUND_PROMPT_PATH = '/x/rewound_prompt.npy'"])):
        gin.clear_config()
        try:
            gin_utils.parse_gin(files, bindings, finalize=False)
            prompt = MaskedSoftPrompt if "xprompt.gin" in files else FixedMaskPrompt
            bound = gin.get_bindings(prompt, resolve_references=False)["token_prune_mode"]
            assert str(bound) == "%TOKEN_PRUNE_MODE"  # the prompt reads the macro
            modes.append(gin.query_parameter("%TOKEN_PRUNE_MODE"))
        finally:
            gin.clear_config()
    assert modes == ["zero", "zero"]


@pytest.fixture
def ram_filesystem(monkeypatch):
    """TensorFlow's in-memory filesystem `ram://` (offline, not local) through etils.epath,
    the layer all our file reads and writes use.

    epath knows gs://, s3://, az:// and hf:// only: `epath.Path('ram://b/x')` raises
    KeyError, and registering the prefix alone (`epath.register_path_cls`) turns it into
    the local path `ram:/b/x`. Here epath gets `ram` as one more scheme with the backend
    it uses for gs:// (tf.io.gfile), so our code runs exactly its gs:// path, on memory."""
    tf = pytest.importorskip("tensorflow")
    from etils.epath import gpath, register

    monkeypatch.setattr(gpath, "_URI_PREFIXES", gpath._URI_PREFIXES + ("ram://",))
    monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"ram"})
    monkeypatch.setitem(gpath._URI_MAP_ROOT, "ram://", "/ram/")
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "ram", gpath._PREFIX_TO_BACKEND["gs"])
    monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, "ram://", gpath.PosixGPath)
    root = f"ram://xprompt_test/{os.getpid()}_{np.random.randint(1 << 30)}"
    yield root, tf.io.gfile
    if tf.io.gfile.exists(root):
        tf.io.gfile.rmtree(root)


def _gfile_npy(gfile, path):
    with gfile.GFile(path, "rb") as f:
        return np.load(f, allow_pickle=False)


@pytest.mark.slow
def test_prune_writes_to_a_remote_filesystem_and_the_rewind_reads_from_it(
        tmp_path, monkeypatch, fixtures_dir, t5_vocab_path, ram_filesystem):
    """Stage 2 -> stage 3 with every XPrompt file on a non-local filesystem (`ram://`, as a
    pod keeps its runs on gs://): the prompt file is read from it, masks, rewound prompt,
    scores, search table, report and plots are written to it (before: a local folder
    `./gs:/...`), and the rewind's FixedMaskPrompt reads masks and init from it."""
    root, gfile = ram_filesystem
    synthetic_tasks.register(t5_vocab_path)
    monkeypatch.chdir(tmp_path)
    params = _params_with_prompt(fixtures_dir, seed=4)
    ckpt = write_t5x_run_checkpoint(tmp_path / "run", params, step=5)
    stage1 = np.random.RandomState(5).uniform(-0.5, 0.5, (M, E)).astype(np.float32)
    prompt_file = f"{root}/run/numpy_checkpoints/checkpoint_5/prompt.prompt.npy"
    gfile.makedirs(os.path.dirname(prompt_file))
    with gfile.GFile(prompt_file, "wb") as f:
        np.save(f, stage1)
    out = f"{root}/prune"
    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "xprompt.gin"],
                            PRUNE_BINDINGS + [f"MODEL_DIR = '{out}'",
                                              "PRUNE_LEVELS = ('token',)"], finalize=False)
        report = t5x_stage2.prune_configured(str(ckpt), out, prompt_file)
    finally:
        gin.clear_config()
    assert report["outputs"]["masks"] == f"{out}/masks.npz"
    assert report["stage1"]["best_step"] == 5  # from the prompt file's checkpoint_5 folder
    assert not any(p.name.startswith(("ram:", "gs:")) for p in tmp_path.iterdir())
    written = set(gfile.listdir(out))
    assert {"masks.npz", "rewound_prompt.npy", "scores.json", "search.json", "report.json",
            "report.md", "importance_heatmap.png"} <= written, written
    with gfile.GFile(f"{out}/masks.npz", "rb") as f, np.load(f) as masks:
        token_mask, piece_mask = masks["token_mask"], masks["piece_mask"]
    rewound = _gfile_npy(gfile, f"{out}/rewound_prompt.npy")
    np.testing.assert_array_equal(rewound,
                                  stage1 * pruning.value_mask(token_mask, piece_mask, E))
    with gfile.GFile(f"{out}/importance_heatmap.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # stage 3: the rewind's prompt module reads both files from the remote filesystem
    fixed = FixedMaskPrompt(length=M, masks_path=f"{out}/masks.npz", token_prune_mode="zero",
                            init=initializers.from_file(f"{out}/rewound_prompt.npy"))
    got_token, got_piece = fixed.masks()
    np.testing.assert_array_equal(got_token, token_mask)
    np.testing.assert_array_equal(got_piece, piece_mask)
    model = tiny_prompted_model(prompt_length=M).clone(prompt=fixed)
    batch = _batch()
    variables = model.init(jax.random.PRNGKey(0), batch["encoder_input_tokens"],
                           batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                           enable_dropout=False)
    np.testing.assert_array_equal(np.asarray(variables["params"]["prompt"]["prompt"]), rewound)


def test_prune_help_and_bad_flags_and_pieces_that_do_not_fit_are_one_line(tmp_path,
                                                                         fixtures_dir):
    """`prune --help` prints the usage and every flag (absl's parser alone knew no --help:
    a traceback); an unknown flag is one line; NUM_PIECES (xprompt.gin: 16) that does not
    divide the tiny size's emb_dim 8 is one line naming NUM_PIECES and the sizes that fit
    (before: a ValueError traceback from inside the model)."""
    from xprompt_jax.errors import ConfigError

    help_out = subprocess.run([sys.executable, "-m", "xprompt_jax.prune", "--help"],
                              env=_env(), cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
    assert help_out.returncode == 0, help_out.stderr[-2000:]
    for flag in ("--t5x_checkpoint", "--output_dir", "--prompt_file", "--gin_file",
                 "--gin_search_paths"):
        assert flag in help_out.stdout, flag
    assert "Traceback" not in help_out.stderr
    bad = subprocess.run([sys.executable, "-m", "xprompt_jax.prune", "--t5x_checkpont=x"],
                         env=_env(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "xprompt_jax.prune: error: Unknown command line flag 't5x_checkpont'")

    params = _params_with_prompt(fixtures_dir)
    ckpt = write_t5x_run_checkpoint(tmp_path / "run", params, step=3)
    model = tiny_prompted_model().clone(prompt=MaskedSoftPrompt(length=M, num_pieces=16))
    with pytest.raises(ConfigError, match=r"NUM_PIECES=16 does not divide the model's "
                                          r"embedding size 8 .*<one of \[2, 4, 8\]>"):
        t5x_stage2._stage1_model(run_config(model, tmp_path / "o"), str(ckpt), None)
