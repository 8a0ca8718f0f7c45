"""Shared pieces of the trainer tests: the tiny T5X fixture model as frozen model."""

import functools

import numpy as np

from xprompt_jax.models import PromptedT5, T5Config
from xprompt_jax.prompts import SoftPrompt, initializers

# The sizes of tests/fixtures/t5x_tiny_orbax (T5X local_tiny.gin).
TINY_ORBAX = dict(vocab_size=32128, emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                  num_encoder_layers=2, num_decoder_layers=2, mlp_activations=("gelu", "linear"),
                  logits_via_embedding=False, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128)

FEATURE_LENGTHS = {"inputs": 16, "targets": 4}

# The synthetic world's T5 (gin/models/world_tiny.gin; checkpoint: world.paths).
WORLD_TINY = dict(vocab_size=768, emb_dim=128, num_heads=8, num_encoder_layers=3,
                  num_decoder_layers=2, head_dim=16, mlp_dim=256,
                  mlp_activations=("gelu", "linear"), dropout_rate=0.0,
                  logits_via_embedding=False, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128)


def tiny_prompted_model(prompt_length=4, dropout_rate=0.0, **overrides):
    cfg = T5Config(**{**TINY_ORBAX, "dropout_rate": dropout_rate, **overrides})
    return PromptedT5(cfg, prompt=SoftPrompt(length=prompt_length, init=initializers.uniform()))


@functools.lru_cache(maxsize=None)
def fixture_params(path: str):
    from xprompt_jax.checkpoints import load_t5x_params

    return load_t5x_params(path)


def world_variables(prompt):
    """(PromptedT5 of the world's T5 with a SoftPrompt of `prompt`'s length, its variables:
    the shipped world checkpoint with `prompt` `[m, 128]` as `prompt/prompt`)."""
    from xprompt_jax.world import paths

    model = PromptedT5(T5Config(**WORLD_TINY), prompt=SoftPrompt(length=prompt.shape[0]))
    return model, {"params": {**fixture_params(paths.checkpoint_path()),
                              "prompt": {"prompt": np.asarray(prompt, np.float32)}}}


def run_config(model, model_dir, task="unused", **changes):
    """A `RunConfig` of `model` in `model_dir` (the tiny fixture's feature lengths)."""
    from xprompt_jax.runs import RunConfig
    from xprompt_jax.training.data import DataConfig
    from xprompt_jax.training.trainer import TrainerConfig

    return RunConfig(model=model, trainer=TrainerConfig(model_dir=str(model_dir)),
                     data=DataConfig(task, FEATURE_LENGTHS), **changes)


# ------------------------------------------------------------------ reference predictions
# Independent of the evaluator's kernels (one encoder pass shared by packed verbalizers,
# cached incremental decoding): every score and every decoded token comes from the model's
# plain teacher-forced forward pass over a whole `[B, T]` decoder row.

def _padded(rows, length):
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def reference_option_scores(model, variables, inputs, options):
    """`[B, L]` sums of log p(option tokens | input) for `inputs` (token id lists, EOS
    included) and the same `options` (token id lists, EOS included) for every row."""
    import jax
    import jax.numpy as jnp

    encoder = _padded(inputs, max(len(r) for r in inputs))
    scores = np.zeros((len(inputs), len(options)))
    for j, option in enumerate(options):
        targets = np.tile(np.asarray(option, np.int32), (len(inputs), 1))
        decoder_in = np.concatenate([np.zeros((len(inputs), 1), np.int32), targets[:, :-1]], 1)
        logits = model.apply(variables, encoder, decoder_in, targets, enable_dropout=False)
        logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
        scores[:, j] = np.asarray(jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
                                  ).sum(axis=1)
    return scores


def reference_greedy(model, variables, inputs, max_length, eos_id=1):
    """Greedy decodes (token id lists, without EOS) of `inputs`: at step t the whole prefix
    is fed again and the argmax of position t is taken."""
    encoder = _padded(inputs, max(len(r) for r in inputs))
    batch = len(inputs)
    decoder_in = np.zeros((batch, max_length), np.int32)
    targets = np.ones((batch, max_length), np.int32)  # no padding: only the causal mask
    out = [[] for _ in range(batch)]
    done = np.zeros(batch, bool)
    for t in range(max_length):
        logits = np.asarray(model.apply(variables, encoder, decoder_in, targets,
                                        enable_dropout=False))
        token = logits[:, t].argmax(-1)
        for b in range(batch):
            if not done[b]:
                if token[b] == eos_id:
                    done[b] = True
                else:
                    out[b].append(int(token[b]))
        if t + 1 < max_length:
            decoder_in[:, t + 1] = token
    return out
