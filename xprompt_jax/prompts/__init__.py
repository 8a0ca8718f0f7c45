"""Prompt modules (they produce `[m, e]` or `[B, m, e]` prompts) and their initializers."""

from . import initializers
from .initializers import make_initializer
from .soft_prompt import SoftPrompt

__all__ = ["SoftPrompt", "initializers", "make_initializer"]

# Reparameterized prompts: a raw prompt trained jointly with a network.
from .ept import EPTPrompt  # noqa: E402
from .ptuning import PTuningPrompt  # noqa: E402
from .resprompt import ResPrompt  # noqa: E402

__all__ += ["EPTPrompt", "PTuningPrompt", "ResPrompt"]

# Many prompts on one frozen model, one per example.
from .bank import PromptBank  # noqa: E402

__all__ += ["PromptBank"]
