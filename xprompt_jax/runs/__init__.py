"""Runs: everything that reads or writes a MODEL_DIR, assembled in one place.

`RunConfig` (bound once in gin, `RUN`) says what a run is; the frozen model is loaded by one
loader (`frozen.py`), sharded as the trainer places it; trainers are built from a run and
explicit runtime objects (`build.py`); the jobs the CLIs call are `train.train`,
`evaluate.evaluate`, `ensemble.evaluate_ensemble`, `infer.infer` and `export.export_run`
(`broadcast.evaluate_broadcast`: EPT Figure 4's broadcast prompts);
`report.py` composes report.json / report.md.
"""

from .broadcast import evaluate_broadcast
from .build import build_evaluator, build_trainer
from .config import RunConfig, configured_run
from .ensemble import evaluate_ensemble
from .export import export_run
from .frozen import load_frozen_model, load_pretrained
from .restore import restore_trainable

__all__ = ["RunConfig", "build_evaluator", "build_trainer", "configured_run",
           "evaluate_broadcast", "evaluate_ensemble", "export_run", "load_frozen_model", "load_pretrained",
           "restore_trainable"]
