"""Shared pieces of the trainer tests: the tiny T5X fixture model as frozen model."""

import functools

from xprompt_jax.models import PromptedT5, T5Config
from xprompt_jax.prompts import SoftPrompt, initializers

# The sizes of tests/fixtures/t5x_tiny_orbax (T5X local_tiny.gin).
TINY_ORBAX = dict(vocab_size=32128, emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                  num_encoder_layers=2, num_decoder_layers=2, mlp_activations=("gelu", "linear"),
                  logits_via_embedding=False, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128)

FEATURE_LENGTHS = {"inputs": 16, "targets": 4}


def tiny_prompted_model(prompt_length=4, dropout_rate=0.0, **overrides):
    cfg = T5Config(**{**TINY_ORBAX, "dropout_rate": dropout_rate, **overrides})
    return PromptedT5(cfg, prompt=SoftPrompt(length=prompt_length, init=initializers.uniform()))


@functools.lru_cache(maxsize=None)
def fixture_params(path: str):
    from xprompt_jax.checkpoints import load_t5x_params

    return load_t5x_params(path)


def run_config(model, model_dir, task="unused", **changes):
    """A `RunConfig` of `model` in `model_dir` (the tiny fixture's feature lengths)."""
    from xprompt_jax.runs import RunConfig
    from xprompt_jax.training.data import DataConfig
    from xprompt_jax.training.trainer import TrainerConfig

    return RunConfig(model=model, trainer=TrainerConfig(model_dir=str(model_dir)),
                     data=DataConfig(task, FEATURE_LENGTHS), **changes)
