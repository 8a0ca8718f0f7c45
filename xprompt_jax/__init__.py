"""xprompt_jax: soft-prompt adaptation of frozen T5 models in JAX/Flax.

Prompt tuning (Lester et al. 2021), XPrompt (Ma et al. 2022) and EPT, with T5X-compatible
parameter names, gin configs and checkpoints.
"""

__version__ = "0.1.0"

# Our CLIs (`python -m xprompt_jax.train`, `xprompt-*` scripts) silence TensorFlow / absl /
# JAX start-up noise; it must happen before those are imported (see terminal.py).
from . import terminal as _terminal  # noqa: E402

_terminal.maybe_setup_for_cli()

# Import paths of earlier versions keep working or name their new home (_moved.py).
from . import _moved  # noqa: E402

_moved.install()
