"""XPrompt (Ma et al. 2022): masks over prompt tokens and pieces, importance scores,
hierarchical structured pruning, rewinding, and the three-stage pipeline."""

from .masked_prompt import MASKS, MaskedSoftPrompt
from .scoring import ImportanceScorer, ImportanceScores, make_mask_gradient_fn, mask_variables

__all__ = ["MASKS", "MaskedSoftPrompt", "ImportanceScorer", "ImportanceScores",
           "make_mask_gradient_fn", "mask_variables"]
