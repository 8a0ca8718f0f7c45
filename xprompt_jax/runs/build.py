"""A trainer from a `RunConfig` and explicit runtime objects.

`build_trainer(run, ...)` imports the task module, turns TRAIN_EPOCHS into steps, loads the
frozen model (`frozen.load_pretrained`), builds the evaluator (`build_evaluator`) and, for a
PromptBank model, the bank's parts (per-prompt optimizer, batch transform, per-prompt
numpy export, best prompt per task); with SWEEP, the bank of the sweep's entries
(`sweep_run`), each starting from the solo run's init, with its own best prompt and
early stopping (`sweep.SweepEntries`; PATIENCE applies per entry). What a stage passes in code - a
rewound prompt (`initial_trainable`), fixed masks (`extra_variables`), an update mask, a
step callback - are arguments here, never gin bindings.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, Mapping, Optional

from ..checkpoints.pretrained import load_embedding
from ..evaluation.bank import PromptSelection
from ..evaluation.evaluator import Evaluator
from ..evaluation.multitask import MultiTaskEvaluator
from ..prompts import bank as prompt_bank
from ..errors import ConfigError
from ..training import bank_training
from ..training import sweep as sweep_lib
from ..training.epochs import train_steps_from_epochs
from ..training.trainer import Trainer, check_feature_lengths
from .config import RunConfig
from .flags import import_task_module
from .frozen import load_pretrained

logger = logging.getLogger("xprompt_jax")


def bank_config(run: RunConfig) -> bank_training.BankConfig:
    """The run's bank settings (default: every example once per prompt)."""
    return run.bank or bank_training.BankConfig()


def build_evaluator(run: RunConfig, model=None):
    """The dev evaluator of `run` (of `model`, default the run's): every prompt of a bank in
    one batch, each task with its own prompt for mixed-task training."""
    model = run.model if model is None else model
    if prompt_bank.num_prompts(model):
        bank = bank_config(run)
        if bank.mode == "ids_in_data":
            return MultiTaskEvaluator(model, bank.tasks, run.feature_lengths, run.evaluation)
        return Evaluator(model, run.task_name, run.feature_lengths, run.evaluation,
                         prompts=PromptSelection.all(model, bank.names(model)))
    return Evaluator(model, run.task_name, run.feature_lengths, run.evaluation)


def run_steps(run: RunConfig) -> RunConfig:
    """`run` with TRAIN_EPOCHS (when set) turned into its number of steps."""
    if run.train_epochs is None:
        return run
    steps = train_steps_from_epochs(run.train_epochs, run.task_name, run.data.batch_size)
    logger.info("TRAIN_EPOCHS=%s at batch %d: %d steps", run.train_epochs,
                run.data.batch_size, steps)
    return run.with_trainer(num_steps=steps).replace(train_epochs=None)


def sweep_run(run: RunConfig) -> RunConfig:
    """`run` with SWEEP expanded (training/sweep.py): the model's prompt as a bank of one
    entry per configuration, entries named by their configurations, the optimizer
    vectorised over the entries' hyperparameters; trained in ensemble mode (every entry the
    same batches) or, when seeds are swept, each entry on its own seed's stream of
    examples ('entry_streams')."""
    configs = sweep_lib.sweep_configurations(run.sweep)
    names = sweep_lib.entry_names(configs)
    model = sweep_lib.bank_model(run.model, len(configs))
    optimizer = sweep_lib.sweep_optimizer(run.optimizer, configs)
    if sweep_lib.SEED_KEY not in configs[0]:
        return run.replace(model=model, optimizer=optimizer,
                           bank=bank_training.BankConfig("ensemble", prompt_names=names))
    seeds = tuple(sweep_lib.entry_seeds(configs, run.data.seed))
    return run.replace(model=model, optimizer=optimizer,
                       data=dataclasses.replace(run.data, entry_seeds=seeds),
                       bank=bank_training.BankConfig("entry_streams", prompt_names=names))


def build_trainer(run: RunConfig, *, initial_trainable: Optional[Mapping[str, Any]] = None,
                  extra_variables: Optional[Mapping[str, Any]] = None,
                  update_mask: Optional[Mapping[str, Any]] = None,
                  step_callback: Optional[Callable[[int, Dict[str, Any]], None]] = None
                  ) -> Trainer:
    """The trainer of `run` (module docstring)."""
    import_task_module(run.task_module, run.task_name)
    check_feature_lengths(run.feature_lengths)  # before loading anything
    run = run_steps(run)
    solo = None
    if run.sweep is not None:  # every entry starts where the solo run would
        if initial_trainable is not None:
            raise ConfigError("SWEEP with a given initial prompt is not supported yet")
        solo, run = run, sweep_run(run)
    model, optimizer, loss = run.model, run.optimizer, run.loss
    evaluator = build_evaluator(run) if run.trainer.eval_period else None
    bank_parts: Dict[str, Any] = {}
    if prompt_bank.num_prompts(model):  # a PromptBank: each prompt trains as if alone
        bank = bank_config(run)
        if solo is None:  # a sweep's optimizer is per entry already
            optimizer = bank_training.per_prompt_optimizer(optimizer)
        loss = dataclasses.replace(
            loss, normalization=bank_training.bank_loss_normalization(loss.normalization))
        bank_parts = bank_training.bank_trainer_parts(model, bank, run.model_dir)
        if solo is not None:  # each entry its own best, and its own early stopping
            bank_parts["eval_callback"] = sweep_lib.SweepEntries(
                run.model_dir, bank.names(model), sweep_lib.sweep_configurations(solo.sweep),
                run.trainer.patience, bank_parts["numpy_params_fn"])
            run = run.with_trainer(patience=None)
    pretrained = load_pretrained(model, run.frozen, run.feature_lengths)
    if solo is not None:
        initial_trainable = sweep_lib.sweep_initial_trainable(
            solo.model, sweep_lib.sweep_configurations(solo.sweep), run.trainer.seed,
            lambda m, seed: sweep_lib.solo_initial_trainable(
                m, pretrained, run.feature_lengths, run.frozen, seed),
            lambda: load_embedding(run.frozen.initial_checkpoint_path,
                                   run.frozen.checkpoint_format),
            run.task_name)
    return Trainer(model, optimizer, run.data, run.trainer, frozen_config=run.frozen,
                   pretrained_params=pretrained,
                   evaluator=evaluator, loss_config=loss, extra_variables=extra_variables,
                   initial_trainable=initial_trainable, update_mask=update_mask,
                   step_callback=step_callback, **bank_parts)
