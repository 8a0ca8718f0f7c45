"""The prompt gradient equals the one HF PEFT prompt tuning computes in PyTorch (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from xprompt_jax.checkpoints import config_from_hf, load_hf_params  # noqa: E402
from xprompt_jax.models import PromptedT5  # noqa: E402
from xprompt_jax.prompts import SoftPrompt, initializers  # noqa: E402
from xprompt_jax.training.params import split_params  # noqa: E402
from xprompt_jax.training.train_step import LossConfig, batch_loss_sums  # noqa: E402
from xprompt_jax.training.params import merge_params  # noqa: E402

PROMPT_LENGTH = 5


@pytest.mark.parametrize("variant", ["gated-gelu", "relu"])
def test_prompt_gradient_matches_peft(tmp_path, variant):
    torch.manual_seed(0)
    hf_config = transformers.T5Config(
        vocab_size=120, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
        num_decoder_layers=2, relative_attention_num_buckets=8,
        relative_attention_max_distance=20, dropout_rate=0.0, feed_forward_proj=variant,
        tie_word_embeddings=variant == "relu", decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1)
    hf_model = transformers.T5ForConditionalGeneration(hf_config)
    with torch.no_grad():
        for name, param in hf_model.named_parameters():
            if "layer_norm" not in name:
                param.normal_(0.0, 0.1)
    hf_model.save_pretrained(tmp_path)
    config = config_from_hf(tmp_path / "config.json")
    params = load_hf_params(tmp_path)

    rng = np.random.RandomState(0)
    prompt = rng.uniform(-0.5, 0.5, (PROMPT_LENGTH, 32)).astype(np.float32)
    enc = rng.randint(2, 120, (3, 10))
    enc[1, 6:] = 0
    tgt = rng.randint(2, 120, (3, 4))
    tgt[2, 2:] = 0
    dec_in = np.concatenate([np.zeros((3, 1), int), tgt[:, :-1]], axis=1)

    peft_model = peft.get_peft_model(
        hf_model, peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                          num_virtual_tokens=PROMPT_LENGTH,
                                          # Lester et al.: encoder prompt only (PEFT's seq2seq
                                          # default also prefixes the decoder)
                                          num_transformer_submodules=1))
    peft_model.eval()
    embedding = peft_model.prompt_encoder["default"].embedding
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(prompt))
    labels = torch.tensor(np.where(tgt > 0, tgt, -100))
    out = peft_model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                     labels=labels)
    out.loss.backward()
    ref_grad = embedding.weight.grad.numpy()
    ref_loss = float(out.loss)

    model = PromptedT5(config, prompt=SoftPrompt(PROMPT_LENGTH, initializers.from_array(prompt)))
    batch = {"encoder_input_tokens": jnp.asarray(enc), "decoder_input_tokens": jnp.asarray(dec_in),
             "decoder_target_tokens": jnp.asarray(tgt)}
    variables = model.init(jax.random.PRNGKey(0), batch["encoder_input_tokens"],
                           batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                           enable_dropout=False)
    trainable, _ = split_params(variables["params"])
    np.testing.assert_array_equal(trainable["prompt"]["prompt"], prompt)

    def loss_fn(trainable):
        full = {"params": merge_params(trainable, params)}
        loss_sum, _, weight_sum = batch_loss_sums(model, full, batch, None, LossConfig(),
                                                  enable_dropout=False)
        return loss_sum / weight_sum

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    ours = np.asarray(grads["prompt"]["prompt"])
    assert abs(float(loss) - ref_loss) <= 1e-5 * abs(ref_loss)
    assert np.abs(ref_grad).max() > 1e-4  # a real gradient reached the prompt
    rel = np.abs(ours - ref_grad).max() / np.abs(ref_grad).max()
    assert rel <= 1e-4, rel
