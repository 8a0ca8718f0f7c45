"""Analyses of trained prompts: token similarity heatmaps, parameter counts."""

from .param_counts import format_param_counts, param_counts
from .prompt_similarity import cosine_similarity, plot_prompt_similarity

__all__ = ["cosine_similarity", "format_param_counts", "param_counts", "plot_prompt_similarity"]
