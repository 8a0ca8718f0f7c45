"""Runs: everything that reads or writes a MODEL_DIR, assembled in one place.

`RunConfig` (bound once in gin, `RUN`) says what a run is; the frozen model is loaded by one
loader (`frozen.py`), sharded as the trainer places it; trainers are built from a run and
explicit runtime objects (`build.py`); `train`, `evaluate`, `evaluate_ensemble`, `infer` and
`export_run` are the jobs the CLIs call; `report.py` composes report.json / report.md.
"""

from .build import build_evaluator, build_trainer
from .config import RunConfig, configured_run
from .ensemble import evaluate_ensemble
from .evaluate import evaluate
from .export import export_run
from .frozen import load_frozen_model, load_pretrained
from .infer import infer
from .restore import restore_trainable
from .train import train

__all__ = ["RunConfig", "build_evaluator", "build_trainer", "configured_run", "evaluate",
           "evaluate_ensemble", "export_run", "infer", "load_frozen_model", "load_pretrained",
           "restore_trainable", "train"]
