"""Import ``xprompt_jax.tasks`` for tests, falling back to loading ``tasks/`` directly.

The installed package maps ``xprompt_jax.tasks`` to the top-level ``tasks/`` folder
(``package_dir`` in setup.py). Without that install, load ``tasks/__init__.py`` under
the same package name so relative imports work.
"""

import importlib
import importlib.util
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
T5_SPM = REPO_ROOT / "tests" / "fixtures" / "t5_spm" / "sentencepiece.model"


def import_tasks():
    try:
        return importlib.import_module("xprompt_jax.tasks")
    except ModuleNotFoundError as e:
        if e.name not in ("xprompt_jax", "xprompt_jax.tasks"):
            raise
    import xprompt_jax  # noqa: F401  (the parent package must exist)
    spec = importlib.util.spec_from_file_location(
        "xprompt_jax.tasks", REPO_ROOT / "tasks" / "__init__.py",
        submodule_search_locations=[str(REPO_ROOT / "tasks")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["xprompt_jax.tasks"] = module
    spec.loader.exec_module(module)
    return module
