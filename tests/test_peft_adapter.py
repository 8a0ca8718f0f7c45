"""HF PEFT prompt-tuning adapters in and out, checked against real `peft` + `transformers`
(PyTorch, float32) on the same HF T5 weights:
- a prompt exported by `export_prompt(..., export_format='peft')` (soft prompt, XPrompt
  masks in both token modes, a reparameterized ResPrompt) loaded by
  `PeftModel.from_pretrained` gives the logits of our trained module (XPrompt 'remove':
  PEFT cannot skip positions, so the removed tokens are dropped and PEFT gives the logits
  of our model with that shorter prompt);
- an adapter trained for a few steps with PEFT and imported with `initializers.from_peft`
  (and `prompts/from_peft.gin`) gives PEFT's logits in our model."""

import json
import re
import shutil

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("safetensors")

from xprompt_jax import gin_utils  # noqa: E402
from xprompt_jax.checkpoints import config_from_hf, load_hf_params  # noqa: E402
from xprompt_jax.checkpoints.peft_adapter import (PeftAdapterError,  # noqa: E402
                                                  read_peft_adapter, write_peft_adapter)
from xprompt_jax.models import PromptedT5  # noqa: E402
from xprompt_jax.runs import export  # noqa: E402
from xprompt_jax.prompts import ResPrompt, SoftPrompt, initializers  # noqa: E402
from xprompt_jax.xprompt.masked_prompt import MASKS, MaskedSoftPrompt  # noqa: E402

VOCAB, EMB = 120, 32
M = 6  # prompt length of every case
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random HF T5.1.1 (gated GELU, untied head) saved with save_pretrained."""
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=EMB, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
        num_decoder_layers=2, relative_attention_num_buckets=8,
        relative_attention_max_distance=20, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" not in name:
                param.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("hf_t5")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ours(hf_dir):
    return config_from_hf(hf_dir / "config.json"), load_hf_params(hf_dir)


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, VOCAB, (3, 10))
    enc[1, 6:] = 0
    tgt = rng.randint(2, VOCAB, (3, 4))
    dec = np.concatenate([np.zeros((3, 1), int), tgt[:, :-1]], axis=1)
    return enc, dec, tgt


def _peft_logits(peft_model, enc, dec) -> np.ndarray:
    peft_model.eval()
    with torch.no_grad():
        out = peft_model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                         decoder_input_ids=torch.tensor(dec))
    return out.logits.numpy()


def _our_logits(model, variables, enc, dec, tgt) -> np.ndarray:
    # Op by op (no jit): every case shares the shapes of prompt length M, so the primitives
    # compiled for the first case serve the others.
    return np.asarray(model.apply(variables, jnp.asarray(enc), jnp.asarray(dec), jnp.asarray(tgt),
                                  enable_dropout=False), np.float32)


def _assert_close(ours, reference):
    assert ours.shape == reference.shape
    scale = np.max(np.abs(reference))
    assert np.max(np.abs(ours - reference)) <= REL_TOL * scale, \
        np.max(np.abs(ours - reference)) / scale


def _random_tree(shapes, rng):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.uniform(-0.5, 0.5, x.shape), jnp.float32), shapes)


def _trained_variables(model, params, enc, dec, tgt, masks=None, seed=0):
    """Our frozen HF-imported params plus the prompt module's params set to random values
    (as after training), and XPrompt masks if given."""
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.asarray(enc), jnp.asarray(dec),
                                                 jnp.asarray(tgt), enable_dropout=False),
                            jax.random.PRNGKey(0))
    variables = {"params": {**params,
                            "prompt": _random_tree(shapes["params"]["prompt"],
                                                   np.random.RandomState(seed))}}
    if masks is not None:
        variables[MASKS] = {"prompt": {k: jnp.asarray(v, jnp.float32) for k, v in masks.items()}}
    return variables


TOKEN_MASK = np.array([1, 0, 1, 1, 0, 1], np.float32)
PIECE_MASK = (np.random.RandomState(3).uniform(size=(6, 4)) > 0.3).astype(np.float32)
CASES = {
    "soft_prompt": (lambda: SoftPrompt(M), None, M, 0),
    "xprompt_remove": (lambda: MaskedSoftPrompt(length=6, num_pieces=4,
                                                token_prune_mode="remove"),
                       {"token_mask": TOKEN_MASK, "piece_mask": PIECE_MASK}, 4, 0),
    "xprompt_zero": (lambda: MaskedSoftPrompt(length=6, num_pieces=4, token_prune_mode="zero"),
                     {"token_mask": TOKEN_MASK, "piece_mask": PIECE_MASK}, 6, 2),
    "resprompt": (lambda: ResPrompt(length=M, bottleneck=6), None, M, 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_adapter_runs_in_peft_with_our_logits(tmp_path, hf_dir, ours, case):
    make_prompt, masks, expected_tokens, zero_tokens = CASES[case]
    config, params = ours
    enc, dec, tgt = _batch()
    model = PromptedT5(config, prompt=make_prompt())
    variables = _trained_variables(model, params, enc, dec, tgt, masks)
    expected = _our_logits(model, variables, enc, dec, tgt)

    out = tmp_path / "export"
    record = export.export_prompt(model, variables, str(out), plot=False, export_format="peft",
                                  peft_base_model=str(hf_dir))
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "PROMPT_TUNING"
    assert adapter_config["task_type"] == "SEQ_2_SEQ_LM"
    assert adapter_config["num_virtual_tokens"] == expected_tokens
    assert adapter_config["token_dim"] == EMB
    assert adapter_config["num_transformer_submodules"] == 1
    assert adapter_config["base_model_name_or_path"] == str(hf_dir)
    written = json.loads((out / "export.json").read_text())
    assert written["peft"]["num_virtual_tokens"] == expected_tokens
    if case == "xprompt_remove":
        assert written["peft"]["dropped_tokens"] == [1, 4]
        assert any("dropped" in note and "relative position" in note
                   for note in written["peft"]["notes"])
        # What PEFT can run: the masked prompt without the removed tokens, as a plain prompt.
        masked = np.asarray(model.apply(variables, method=model.prompt_tokens))
        kept = masked[TOKEN_MASK > 0]
        np.testing.assert_array_equal(record["prompt"], masked)
        short = PromptedT5(config, prompt=SoftPrompt(4, initializers.from_array(kept)))
        expected = _our_logits(short, {"params": {**params, "prompt": {"prompt": kept}}},
                               enc, dec, tgt)
    if zero_tokens:
        assert any(f"{zero_tokens} exported tokens are zero" in n for n in written["peft"]["notes"])
    assert record["files"]["adapter_weights"] == str(out / "adapter_model.safetensors")

    base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
    peft_model = peft.PeftModel.from_pretrained(base, str(out))
    assert peft_model.peft_config["default"].num_transformer_submodules == 1
    _assert_close(expected, _peft_logits(peft_model, enc, dec))


def test_peft_trained_adapter_imported_gives_peft_logits(tmp_path, hf_dir, ours):
    config, params = ours
    enc, dec, tgt = _batch(1)
    torch.manual_seed(1)
    base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
    peft_model = peft.get_peft_model(base, peft.PromptTuningConfig(
        task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=M,
        num_transformer_submodules=1))
    embedding = peft_model.prompt_encoder["default"].embedding
    start = embedding.weight.detach().clone()
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=0.05)
    labels = torch.tensor(np.where(tgt > 0, tgt, -100))
    peft_model.train()
    for _ in range(3):
        optimizer.zero_grad()
        loss = peft_model(input_ids=torch.tensor(enc),
                          attention_mask=torch.tensor(enc > 0).long(), labels=labels).loss
        loss.backward()
        optimizer.step()
    assert float(torch.max(torch.abs(embedding.weight.detach() - start))) > 0.01  # it trained
    adapter_dir = tmp_path / "peft_adapter"
    peft_model.save_pretrained(str(adapter_dir))
    reference = _peft_logits(peft_model, enc, dec)

    prompt = SoftPrompt(M, initializers.from_peft(str(adapter_dir)))
    model = PromptedT5(config, prompt=prompt)
    # The prompt module's own init (what model.init runs for it), without the frozen model.
    # (nn.Module.init: the module's `init` field is its initializer)
    prompt_params = nn.Module.init(prompt, jax.random.PRNGKey(0),
                                   jnp.zeros((1, 1, EMB)))["params"]
    np.testing.assert_array_equal(prompt_params["prompt"], embedding.weight.detach().numpy())
    variables = {"params": {**params, "prompt": prompt_params}}
    _assert_close(_our_logits(model, variables, enc, dec, tgt), reference)

    # The same through the gin file: PROMPT_INIT = from_peft(PEFT_ADAPTER).
    gin.clear_config()
    try:
        gin_utils.parse_gin(["prompts/from_peft.gin"], [f"PEFT_ADAPTER = {str(adapter_dir)!r}"],
                            finalize=False)
        init = gin.query_parameter("%PROMPT_INIT").scoped_configurable_fn()
    finally:
        gin.clear_config()
    np.testing.assert_array_equal(init(None, (M, EMB)), embedding.weight.detach().numpy())
    with pytest.raises(ValueError, match=f"PROMPT_LENGTH={M + 1} conflicts with PEFT adapter "
                                         f".*num_virtual_tokens={M}"):
        init(None, (M + 1, EMB))


def test_round_trip_and_clear_errors(tmp_path):
    prompt = np.random.RandomState(0).normal(size=(3, 8)).astype(np.float32)
    write_peft_adapter(tmp_path / "a", prompt, base_model_name_or_path="google/t5-v1_1-small")
    read = read_peft_adapter(tmp_path / "a")
    np.testing.assert_array_equal(read.prompt, prompt)
    assert read.config["base_model_name_or_path"] == "google/t5-v1_1-small"

    # Two stored prompts whose config says one: refused, naming the fields.
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "adapter_config.json").write_text(
        json.dumps({**config, "num_transformer_submodules": 2}))
    import shutil
    shutil.copy(tmp_path / "a" / "adapter_model.safetensors", tmp_path / "b")
    with pytest.raises(PeftAdapterError, match=r"shape \(3, 8\).*num_virtual_tokens=3, "
                                               "token_dim=8, num_transformer_submodules=2"):
        read_peft_adapter(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    with pytest.raises(PeftAdapterError, match="peft_type is 'LORA'"):
        read_peft_adapter(tmp_path / "c")
    with pytest.raises(PeftAdapterError, match="adapter config not found"):
        read_peft_adapter(tmp_path / "missing")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "adapter_config.json").write_text(
        json.dumps({**config, "num_virtual_tokens": 4}))
    shutil.copy(tmp_path / "a" / "adapter_model.safetensors", tmp_path / "d")
    with pytest.raises(PeftAdapterError, match=r"shape \(3, 8\).*num_virtual_tokens=4"):
        read_peft_adapter(tmp_path / "d")
    # A weights file cut short: one line naming it (the reader's own error was a traceback).
    (tmp_path / "e").mkdir()
    shutil.copy(tmp_path / "a" / "adapter_config.json", tmp_path / "e")
    data = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    (tmp_path / "e" / "adapter_model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(PeftAdapterError, match=re.escape(
            f"{tmp_path / 'e' / 'adapter_model.safetensors'}: unreadable safetensors file")):
        read_peft_adapter(tmp_path / "e")
    # A NaN prompt in an adapter is refused as a prompt init, naming the adapter.
    nan_prompt = prompt.copy()
    nan_prompt[2, 5] = np.nan
    write_peft_adapter(tmp_path / "f", nan_prompt)
    from xprompt_jax.errors import DataError
    with pytest.raises(DataError, match=f"PEFT adapter {re.escape(str(tmp_path / 'f'))}: 1 "
                                        "values are NaN or Inf"):
        initializers.from_peft(str(tmp_path / "f"))


def test_export_run_of_an_xprompt_run_writes_the_surviving_tokens(tmp_path):
    """`export_run` (what `python -m xprompt_jax.export --format=peft` calls) on a run
    checkpoint with XPrompt masks: the saved masks shape the adapter (hand-computed
    reference: eq. 2/4, P * gamma * repeat(zeta), removed tokens dropped)."""
    import optax

    from training_utils import run_config, tiny_prompted_model
    from xprompt_jax.training.checkpointing import RunCheckpointer
    from xprompt_jax.training.train_step import TrainState
    from xprompt_jax.training.trainer import run_payload

    model = tiny_prompted_model().clone(prompt=MaskedSoftPrompt(length=6, num_pieces=4,
                                                                token_prune_mode="remove"))
    emb = model.config.emb_dim
    raw = np.random.RandomState(5).uniform(-0.5, 0.5, (6, emb)).astype(np.float32)
    masks = {"token_mask": TOKEN_MASK, "piece_mask": PIECE_MASK}
    model_dir = tmp_path / "run"
    with RunCheckpointer(model_dir) as checkpointer:
        state = TrainState.create({"prompt": {"prompt": jnp.asarray(raw)}}, optax.adamw(0.3))
        checkpointer.save(2, run_payload(state, {MASKS: {"prompt": {
            k: jnp.asarray(v) for k, v in masks.items()}}}), meta={})
    out = tmp_path / "export"
    record = export.export_run(run_config(model, model_dir), output_dir=str(out),
                               checkpoint="latest", plot=False, export_format="peft",
                               peft_base_model="google/t5-v1_1-small")
    masked = raw * TOKEN_MASK[:, None] * np.repeat(PIECE_MASK, emb // 4, axis=-1)
    adapter = read_peft_adapter(out)
    np.testing.assert_allclose(adapter.prompt, masked[TOKEN_MASK > 0], rtol=0, atol=1e-7)
    assert record["peft"]["dropped_tokens"] == [1, 4]
    assert adapter.config["base_model_name_or_path"] == "google/t5-v1_1-small"
    np.testing.assert_allclose(np.load(out / "prompt.npy"), masked, rtol=0, atol=1e-7)


def _random_prompt_weights(module, seed):
    """Every parameter of a PEFT prompt encoder set to N(0, 0.3) (as after training)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def test_peft_seq2seq_default_adapter_gives_its_encoder_half(tmp_path, hf_dir, ours, caplog):
    """PEFT's seq2seq default (num_transformer_submodules=2) stores 2n rows. In the
    installed PEFT the second half is never fed to T5: perturbing it leaves the logits
    bitwise unchanged and it receives no gradient. The import keeps the first n rows (with
    one INFO line) and gives PEFT's logits; adapters of PEFT < 0.4.0, which prefixed the
    decoder with that half, are refused."""
    config, params = ours
    enc, dec, tgt = _batch(2)
    base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
    peft_model = peft.get_peft_model(base, peft.PromptTuningConfig(
        task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=M))
    assert peft_model.peft_config["default"].num_transformer_submodules == 2
    embedding = peft_model.prompt_encoder["default"].embedding
    assert tuple(embedding.weight.shape) == (2 * M, EMB)
    _random_prompt_weights(embedding, 5)
    reference = _peft_logits(peft_model, enc, dec)
    labels = torch.tensor(np.where(tgt > 0, tgt, -100))
    loss = peft_model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                      labels=labels).loss
    loss.backward()
    grad = embedding.weight.grad.numpy()
    assert np.abs(grad[:M]).max() > 0 and np.abs(grad[M:]).max() == 0
    adapter_dir = tmp_path / "default_adapter"
    peft_model.save_pretrained(str(adapter_dir))
    saved = embedding.weight.detach().numpy().copy()
    with torch.no_grad():
        embedding.weight[M:] += 10.0
    np.testing.assert_array_equal(_peft_logits(peft_model, enc, dec), reference)

    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["num_transformer_submodules"] == 2
    with caplog.at_level("INFO", logger="xprompt_jax"):
        read = read_peft_adapter(adapter_dir)
    np.testing.assert_array_equal(read.prompt, saved[:M])
    notes = [r.getMessage() for r in caplog.records if "num_transformer_submodules=2" in
             r.getMessage()]
    assert len(notes) == 1 and f"ignoring rows {M}-{2 * M - 1}" in notes[0]
    model = PromptedT5(config, prompt=SoftPrompt(M, initializers.from_peft(str(adapter_dir))))
    variables = {"params": {**params, "prompt": {"prompt": jnp.asarray(read.prompt)}}}
    _assert_close(_our_logits(model, variables, enc, dec, tgt), reference)

    # Written by a PEFT that prompted the decoder: refused, naming the version.
    for name, edit in (("old_version", {"peft_version": "0.3.0"}), ("no_revision", None)):
        old = tmp_path / name
        shutil.copytree(adapter_dir, old)
        old_config = dict(adapter_config)
        if edit is None:
            old_config.pop("revision")
            old_config.pop("peft_version", None)
        else:
            old_config.update(edit)
        (old / "adapter_config.json").write_text(json.dumps(old_config))
        with pytest.raises(PeftAdapterError, match=r"num_transformer_submodules is 2 and the "
                                                   r"adapter was written by PEFT (0\.3\.0|< 0\.4\.0)"):
            read_peft_adapter(old)


@pytest.mark.parametrize("encoder,submodules", [("MLP", None), ("LSTM", 1)])
def test_peft_p_tuning_adapter_imported_gives_peft_logits(tmp_path, hf_dir, ours, encoder,
                                                          submodules):
    """A P-Tuning adapter (PromptEncoderConfig, MLP or LSTM reparameterisation): PEFT saves
    the encoder's output; imported as a plain prompt it gives the logits of the live PEFT
    model (the one running its MLP / LSTM)."""
    config, params = ours
    enc, dec, tgt = _batch(3)
    base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
    extra = {} if submodules is None else {"num_transformer_submodules": submodules}
    peft_model = peft.get_peft_model(base, peft.PromptEncoderConfig(
        task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=M, encoder_hidden_size=16,
        encoder_reparameterization_type=encoder, **extra))
    prompt_encoder = peft_model.prompt_encoder["default"]
    _random_prompt_weights(prompt_encoder, 7)
    reference = _peft_logits(peft_model, enc, dec)
    adapter_dir = tmp_path / f"p_tuning_{encoder}"
    peft_model.save_pretrained(str(adapter_dir))
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["peft_type"] == \
        "P_TUNING"

    read = read_peft_adapter(adapter_dir)
    raw = prompt_encoder.embedding.weight.detach().numpy()[:M]
    assert read.prompt.shape == (M, EMB)
    assert np.abs(read.prompt - raw).max() > 0.1  # the projected prompt, not the raw table
    model = PromptedT5(config, prompt=SoftPrompt(M, initializers.from_peft(str(adapter_dir))))
    variables = {"params": {**params, "prompt": {"prompt": jnp.asarray(read.prompt)}}}
    _assert_close(_our_logits(model, variables, enc, dec, tgt), reference)


def test_prompt_length_comes_from_the_adapter(tmp_path):
    """prompts/from_peft.gin after prompt_tuning.gin (PROMPT_LENGTH 100): the model's prompt
    gets the adapter's length; a conflicting PROMPT_LENGTH flag is one line naming both."""
    from xprompt_jax.errors import DataError

    prompt = np.random.RandomState(1).normal(size=(7, 8)).astype(np.float32)  # tiny: emb 8
    write_peft_adapter(tmp_path / "a", prompt)
    files = ["models/t5_1_1_tiny.gin", "prompt_tuning.gin", "prompts/from_peft.gin"]
    for flags, expected in (([], 7), (["PROMPT_LENGTH = 7"], 7), (["PROMPT_LENGTH = 20"], 20)):
        gin.clear_config()
        try:
            gin_utils.parse_gin(files, [f"PEFT_ADAPTER = {str(tmp_path / 'a')!r}", *flags],
                                finalize=False)
            soft_prompt = gin.query_parameter("%MODEL").scoped_configurable_fn().prompt
        finally:
            gin.clear_config()
        assert soft_prompt.length == expected
        if expected == 7:
            np.testing.assert_array_equal(soft_prompt.init(None, (7, 8)), prompt)
        else:
            with pytest.raises(DataError, match=re.escape(
                    f"PROMPT_LENGTH=20 conflicts with PEFT adapter {tmp_path / 'a'}: "
                    "num_virtual_tokens=7")):
                soft_prompt.init(None, (20, 8))


BF16_READ = """
import sys
import numpy as np
from xprompt_jax.checkpoints import hf_files
assert 'jax' not in sys.modules and 'ml_dtypes' not in sys.modules
weights, _ = hf_files.read_weight_file(sys.argv[1])
print(weights['shared.weight'].dtype, float(weights['shared.weight'].astype(np.float32).sum()))
from xprompt_jax.checkpoints.peft_adapter import read_peft_adapter
adapter = read_peft_adapter(sys.argv[2])
print(adapter.prompt.dtype, float(adapter.prompt.sum()))
"""


def test_bfloat16_files_read_in_a_fresh_process(tmp_path):
    """bf16 safetensors (a checkpoint and an adapter) read in a process that has imported
    only our readers (jax, which registers numpy's bfloat16 on import, not yet loaded)."""
    import os
    import subprocess
    import sys

    import ml_dtypes
    from safetensors.numpy import save_file

    table = np.random.RandomState(0).normal(size=(5, 4)).astype(ml_dtypes.bfloat16)
    save_file({"shared.weight": table}, str(tmp_path / "model.safetensors"))
    prompt = np.random.RandomState(1).normal(size=(3, 4)).astype(ml_dtypes.bfloat16)
    write_peft_adapter(tmp_path / "adapter", np.zeros((3, 4), np.float32))
    save_file({"prompt_embeddings": prompt}, str(tmp_path / "adapter" /
                                                 "adapter_model.safetensors"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", BF16_READ, str(tmp_path / "model.safetensors"),
                          str(tmp_path / "adapter")], capture_output=True, text=True, env=env,
                         cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[0].split() == ["bfloat16", repr(float(table.astype(np.float32).sum()))]
    assert lines[1].split() == ["float32", repr(float(prompt.astype(np.float32).sum()))]


def _cache_snapshot(cache, repo_id, commit):
    """The snapshot folder huggingface_hub lays out for `repo_id` at `commit` (refs/main
    names it)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def test_hub_names_resolve_from_the_local_hf_cache(tmp_path, hf_dir, monkeypatch):
    """`google/...` names (INITIAL_CHECKPOINT_PATH, a PEFT adapter) are read from a cache laid
    out as huggingface_hub lays it out, found through HF_HUB_CACHE or HF_HOME as
    transformers finds it; a name not cached is one line naming it and the cache."""
    from xprompt_jax.checkpoints.pretrained import load_pretrained_params
    from xprompt_jax.errors import CheckpointError

    home = tmp_path / "hf_home"
    cache = home / "hub"
    snapshot = _cache_snapshot(cache, "google/t5-tiny-cached", "a" * 40)
    transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).save_pretrained(snapshot)
    # A stale snapshot that refs/main does not name (what an update leaves behind).
    (snapshot.parent / ("b" * 40)).mkdir()
    adapter_prompt = np.random.RandomState(2).normal(size=(4, EMB)).astype(np.float32)
    write_peft_adapter(_cache_snapshot(cache, "someone/t5-adapter", "c" * 40), adapter_prompt)
    # transformers' own offline resolution of the name in this cache: the reference.
    reference = transformers.T5ForConditionalGeneration.from_pretrained(
        "google/t5-tiny-cached", cache_dir=str(cache), local_files_only=True)
    shared = reference.shared.weight.detach().numpy()
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    for env, value in (("HF_HOME", home), ("HF_HUB_CACHE", cache)):
        monkeypatch.setenv(env, str(value))
        params = load_pretrained_params("google/t5-tiny-cached")
        np.testing.assert_array_equal(np.asarray(params["token_embedder"]["embedding"]), shared)
        np.testing.assert_array_equal(read_peft_adapter("someone/t5-adapter").prompt,
                                      adapter_prompt)
        monkeypatch.delenv(env)

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(CheckpointError) as info:
        load_pretrained_params("google/t5-v1_1-base")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("INITIAL_CHECKPOINT_PATH 'google/t5-v1_1-base': neither a local "
                              f"path nor a model in the Hugging Face cache {cache}")
    with pytest.raises(CheckpointError, match=re.escape(
            f"PEFT adapter 'someone/other': neither a local path nor a model in the Hugging "
            f"Face cache {cache}")):
        read_peft_adapter("someone/other")


def test_evaluate_a_peft_adapter_without_a_run(tmp_path, monkeypatch):
    """`python -m xprompt_jax.evaluate ... --gin_file=runs/eval_peft.gin`: a PEFT adapter
    (seq2seq default, two prompt halves) evaluated on world_boolq with no training run, the
    frozen model being the adapter's base model, a Hub name read from the HF cache. The
    reference: real PEFT's rank classification (sum of the label's token log-probabilities,
    argmax) on the same examples."""
    import os

    from xprompt_jax.evaluation.evaluator import EvalConfig, Evaluator
    import xprompt_jax.world.seqio_tasks  # noqa: F401  # registers world_boolq

    cache = tmp_path / "hub"
    repo_id = "xprompt-test/world-t5"
    snapshot = _cache_snapshot(cache, repo_id, "d" * 40)
    torch.manual_seed(3)
    hf_config = transformers.T5Config(  # models/world_tiny.gin's sizes
        vocab_size=768, d_model=128, d_kv=16, num_heads=8, d_ff=256, num_layers=3,
        num_decoder_layers=2, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(hf_config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" not in name:
                param.normal_(0.0, 0.3)
    model.save_pretrained(snapshot)
    base = transformers.T5ForConditionalGeneration.from_pretrained(
        repo_id, cache_dir=str(cache), local_files_only=True)
    peft_model = peft.get_peft_model(base, peft.PromptTuningConfig(
        task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=5))
    _random_prompt_weights(peft_model.prompt_encoder["default"].embedding, 11)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    assert json.loads((adapter_dir / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == repo_id

    out_dir = tmp_path / "eval_out"  # not a run: only where eval_results.json goes
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # The CLI's main (`python -m xprompt_jax.evaluate`), in this process to save the start-up.
    from xprompt_jax import evaluate as evaluate_cli
    gin.clear_config()
    import time; _t = time.time()
    try:
        evaluate_cli.main([
            "evaluate", "--gin_file=models/world_tiny.gin", "--gin_file=prompt_tuning.gin",
            "--gin_file=runs/eval_peft.gin", f"--gin.PEFT_ADAPTER='{adapter_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='world_boolq'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 4}",
            "--gin.MAX_EVAL_EXAMPLES=16", "--gin.EVAL_MODE='rank_classification'",
            f"--gin.MODEL_DIR='{out_dir}'"])
    finally:
        gin.clear_config()
    print("TIME main", time.time() - _t)
    result = json.loads((out_dir / "eval_results.json").read_text())
    assert result["peft_adapter"] == str(adapter_dir) and result["checkpoint_step"] is None
    assert sorted(os.listdir(out_dir)) == ["eval_results.json"]

    evaluator = Evaluator(None, "world_boolq", {"inputs": 48, "targets": 4},
                          EvalConfig(mode="rank_classification", split=result["split"],
                                     max_examples=16))
    labels, option_ids = evaluator.rank_options()
    assert all(len(ids) == 2 for ex_ids in option_ids for ids in ex_ids)  # 'False' / 'True'
    inputs = np.zeros((len(labels), 48), np.int64)
    for i, example in enumerate(evaluator.examples):
        tokens = list(example["inputs"][:48])
        inputs[i, :len(tokens)] = tokens
    peft_model.eval()
    scores = []
    with torch.no_grad():
        for k in range(2):  # every example's k-th label, one batch
            targets = torch.tensor([ex_ids[k] for ex_ids in option_ids])
            logits = peft_model(input_ids=torch.tensor(inputs),
                                attention_mask=torch.tensor(inputs > 0).long(),
                                labels=targets).logits
            log_probs = torch.log_softmax(logits.double(), -1)
            scores.append(log_probs.gather(-1, targets[..., None])[..., 0].sum(-1).numpy())
    best = np.argmax(np.stack(scores, -1), -1)  # first on ties, as ours
    predictions = [ex_labels[j] for ex_labels, j in zip(labels, best)]
    assert len(set(predictions)) > 1  # the scores depend on the example: a real check
    # The task's own postprocessor reads a label as its class, as for the targets.
    classes = [evaluator.task.postprocess_fn(p, example=ex, is_target=False)
               for p, ex in zip(predictions, evaluator.examples)]
    accuracy = 100.0 * np.mean([c == t for c, t in zip(classes, evaluator.targets)])
    assert result["predictions_sample"] == predictions[:5]
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
