"""What a run is, as one object: `RunConfig`, bound once in gin (`RUN` of
gin/runs/prompt_tune.gin, which every method file includes) the way T5X binds its config
classes, and passed in code from there on.

    RUN = @run_config.RunConfig()
    run_config.RunConfig:
      model = %MODEL                          # PromptedT5 with its prompt module
      optimizer = %OPTIMIZER
      trainer = @trainer.TrainerConfig()      # MODEL_DIR, TRAIN_STEPS, EVAL_PERIOD, ...
      data = @data.DataConfig()               # MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, ...
      evaluation = @evaluator.EvalConfig()    # EVAL_MODE, EVAL_SPLIT, MAIN_METRIC, ...
      loss = @train_step.LossConfig()
      frozen = @frozen_model.FrozenModelConfig()  # INITIAL_CHECKPOINT_PATH, TRAINABLE_REGEX, ...

Train, evaluate, ensemble, infer, export and the XPrompt pipeline all take it; what a
caller changes for one stage (another MODEL_DIR, a model with masks, fewer steps) it
changes with `run.replace(...)` / `run.with_model_dir(...)`, never through gin.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from ..evaluation.evaluator import EvalConfig
from ..training.bank_training import BankConfig
from ..training.data import DataConfig
from ..training.frozen_model import FrozenModelConfig
from ..training.train_step import LossConfig
from ..training.trainer import TrainerConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run's model and settings (module docstring). `task_module`: imported before the
    task is used (MIXTURE_OR_TASK_MODULE); `train_epochs` (TRAIN_EPOCHS) replaces
    `trainer.num_steps` by ceil(epochs * n_train / batch size); `record_prompt_norm`
    keeps EPT's mu_t of every step; `bank`: how a PromptBank model trains (ensemble.gin,
    mixed_tasks.gin; None: every example once per prompt); `sweep`: SWEEP, the optimizer
    hyperparameters of a sweep trained as one bank (training/sweep.py; None: no sweep)."""

    model: Any
    trainer: TrainerConfig
    data: DataConfig
    evaluation: EvalConfig = EvalConfig()
    loss: LossConfig = LossConfig()
    frozen: FrozenModelConfig = FrozenModelConfig()
    optimizer: Any = None
    task_module: Optional[str] = None
    train_epochs: Optional[float] = None
    record_prompt_norm: bool = False
    bank: Optional[BankConfig] = None
    sweep: Any = None

    @property
    def model_dir(self) -> str:
        return self.trainer.model_dir

    @property
    def task_name(self) -> str:
        return self.data.mixture_or_task_name

    @property
    def feature_lengths(self) -> Mapping[str, int]:
        return self.data.task_feature_lengths

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def with_trainer(self, **changes) -> "RunConfig":
        """This run with `TrainerConfig` fields changed (e.g. `model_dir`, `num_steps`)."""
        return dataclasses.replace(self, trainer=dataclasses.replace(self.trainer, **changes))

    def with_model_dir(self, model_dir: str) -> "RunConfig":
        return self.with_trainer(model_dir=model_dir)


def configured_run() -> RunConfig:
    """The `RunConfig` the parsed gin files bind (what `RUN` resolves to)."""
    from .. import gin_utils

    return gin_utils.configured(RunConfig)()
