"""``python -m xprompt_jax.tasks [--write PATH]``: the markdown list of task names."""

import sys

from .catalog import main

sys.exit(main())
