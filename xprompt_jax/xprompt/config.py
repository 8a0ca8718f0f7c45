"""XPrompt's settings as one object, bound once in gin (`XPROMPT` of gin/xprompt.gin) and
read by the pipeline (`pipeline.run_pipeline`) and by the T5X stage 2
(`t5x_stage2.prune_t5x_checkpoint`).

The paper's method (p5, eq. 2-5): importance over NUM_SCORE_EXAMPLES (1024) training
examples, per example; token ratios then piece ratios 10%..90%, iterative; the unpruned
prompt is not a candidate; candidates scored on dev; survivors rewound to the best stage-1
values and retrained with masks fixed. Our options: `piece_ranking='global'`,
`search_include_unpruned`, `rewind_each_candidate` (retrain every candidate: jointly in one
PromptBank run by default), the mask variants and ablations of the paper's Figure 5, the
masking curve (Figure 2) and XPrompt transfer (`stage1_init_path`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from ..errors import ConfigError
from . import pruning

MASK_VARIANTS = ("xprompt", "reversed", "random", "length")
ABLATIONS = ("reversed", "random", "length")
PRUNE_LEVELS = ("token", "piece")
PIECE_RANKINGS = ("global", "per_token")
CURVE_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class XPromptConfig:
    """XPrompt's search, rewind and report settings (module docstring; gin macros in
    gin/xprompt.gin). Checked when made: a bad value is a `ConfigError` naming it.

    `mask_variant`: the masks the rewind uses - XPrompt's ('xprompt'), the same counts from
    the lowest scorers ('reversed') or at random ('random', `mask_seed`), or a fresh prompt
    of the surviving length ('length'). `ablations`: variants rewound in addition, from the
    same stage 1 and search. `rewind_steps` / `stage1_steps`: that stage's TRAIN_STEPS (None:
    the run's). `batched_search`: all candidates of a level in one batch per call."""

    num_score_examples: int = 1024
    per_example: bool = True
    token_ratios: Sequence[float] = pruning.default_ratios()
    piece_ratios: Sequence[float] = pruning.default_ratios()
    piece_ranking: str = "per_token"
    prune_levels: Sequence[str] = PRUNE_LEVELS
    mask_variant: str = "xprompt"
    mask_seed: int = 0
    search_include_unpruned: bool = False
    ablations: Sequence[str] = ()
    masking_curve: bool = True
    curve_ratios: Sequence[float] = CURVE_RATIOS
    curve_random_seeds: int = 3
    rewind_each_candidate: bool = False
    rewind_steps: Optional[int] = None
    rewind_jointly: bool = True
    batched_search: bool = True
    stage1_init_path: Optional[str] = None
    stage1_steps: Optional[int] = None

    def __post_init__(self):
        if self.mask_variant not in MASK_VARIANTS:
            raise ConfigError(f"MASK_VARIANT={self.mask_variant!r}; expected one of "
                              f"{MASK_VARIANTS}")
        ablations = tuple(self.ablations or ())
        if any(a not in ABLATIONS for a in ablations) or len(set(ablations)) != len(ablations):
            raise ConfigError(f"ABLATIONS={ablations}; expected distinct values of {ABLATIONS}")
        if self.piece_ranking not in PIECE_RANKINGS:
            raise ConfigError(f"PIECE_RANKING={self.piece_ranking!r}; expected one of "
                              f"{PIECE_RANKINGS}")
        levels = tuple(self.prune_levels)
        if not levels or any(level not in PRUNE_LEVELS for level in levels):
            raise ConfigError(f"PRUNE_LEVELS={levels}; expected a non-empty subset of "
                              f"{PRUNE_LEVELS}")
        curve = tuple(float(r) for r in self.curve_ratios)
        if (not curve or any(not 0 <= r < 1 for r in curve)
                or any(b <= a for a, b in zip(curve, curve[1:]))):
            raise ConfigError(f"CURVE_RATIOS must be strictly increasing and in [0, 1): {curve}")
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("ablations", ablations)
        set_("prune_levels", levels)
        set_("curve_ratios", curve)
        try:
            set_("token_ratios", pruning.ratios_checked(self.token_ratios, "TOKEN_RATIOS"))
            set_("piece_ratios", pruning.ratios_checked(self.piece_ratios, "PIECE_RATIOS"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
