"""What XPrompt's stages share, as explicit objects: the run, the masked-prompt model on its
frozen weights, the dev evaluator and the importance-scoring examples.

Our pipeline makes it from its stage-1 trainer (`from_trainer`); the T5X stage 2 from a
`t5x/train.py` checkpoint loaded by the runs layer's frozen-model loader. Neither builds a
trainer it does not train.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError
from ..training.data import TrainBatchIterator
from ..training.params import merge_params
from .scoring import ImportanceScorer, ScoreBatches

# Importance-scoring examples: one draw of the train split with this offset on the data
# seed (not the training stream's batches), reused by every rescoring of the search.
SCORE_SEED_OFFSET = 7919


def masked_prompt_module(model):
    """The model's MaskedSoftPrompt (ConfigError for any other prompt module)."""
    prompt = getattr(model, "prompt", None)
    if prompt is None or not hasattr(prompt, "num_pieces"):
        raise ConfigError("XPrompt needs PromptedT5 with a MaskedSoftPrompt (gin/xprompt.gin "
                          "sets it)")
    emb_dim = getattr(getattr(model, "config", None), "emb_dim", None)
    if emb_dim and emb_dim % prompt.num_pieces:
        fits = [k for k in range(2, emb_dim + 1) if emb_dim % k == 0 and k <= 64]
        raise ConfigError(f"NUM_PIECES={prompt.num_pieces} does not divide the model's "
                          f"embedding size {emb_dim} (models/<size>.gin): pass "
                          f"--gin.NUM_PIECES=<one of {fits}> (the paper's 16 fits the public "
                          "T5 sizes)")
    return prompt


@dataclasses.dataclass
class XPromptContext:
    """`run`: the stage-1 run (its model holds the MaskedSoftPrompt); `model_dir`: where the
    stages write; `frozen`: the frozen variables on the mesh (`{'params': ...,
    collections}`); `evaluator`: the dev evaluator the candidates are scored with;
    `batch_sharding`: how scoring batches are laid out; `progress`: bars on/off/auto."""

    run: Any
    model_dir: str
    frozen: Mapping[str, Any]
    evaluator: Any
    batch_sharding: Any = None
    progress: Optional[bool] = None
    _score_batches: Optional[ScoreBatches] = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        self.prompt = masked_prompt_module(self.model)
        self.length, self.pieces = self.prompt.length, self.prompt.num_pieces
        self.embed_dim = self.model.config.emb_dim
        if self.evaluator is None:
            raise ConfigError("the XPrompt search scores candidates on the dev split: set "
                              "EVAL_PERIOD (an evaluator is needed)")

    @classmethod
    def from_trainer(cls, run, trainer, model_dir: str) -> "XPromptContext":
        """The context of our pipeline, around its stage-1 trainer."""
        return cls(run=run, model_dir=model_dir, frozen=trainer.frozen,
                   evaluator=trainer.evaluator, batch_sharding=trainer.batch_sharding,
                   progress=trainer.config.progress)

    @property
    def model(self):
        return self.run.model

    def variables(self, trainable: Mapping[str, Any]) -> Dict[str, Any]:
        """Full variables with `trainable` (the stage-1 prompt) in place."""
        out = dict(self.frozen)
        out["params"] = merge_params(trainable, self.frozen["params"])
        return out

    def scorer(self, trainable, per_example: bool) -> ImportanceScorer:
        return ImportanceScorer(self.model, trainable, self.frozen, self.batch_sharding,
                                per_example)

    def score_batches(self) -> ScoreBatches:
        """The importance-scoring examples (module constant SCORE_SEED_OFFSET), drawn once
        and reused by the first scoring and every rescoring (`ScoreBatches`)."""
        if self._score_batches is None:
            config = dataclasses.replace(self.run.data,
                                         seed=self.run.data.seed + SCORE_SEED_OFFSET)
            self._score_batches = ScoreBatches(lambda: TrainBatchIterator(config))
        return self._score_batches
