"""Prompt modules (they produce `[m, e]` or `[B, m, e]` prompts) and their initializers."""

from . import initializers
from .initializers import make_initializer
from .soft_prompt import SoftPrompt

__all__ = ["SoftPrompt", "initializers", "make_initializer"]
