"""Hugging Face Hub names (`google/t5-v1_1-base`) resolved from the local Hugging Face cache,
as `transformers` / `peft` `from_pretrained` resolve them offline.

`resolve(name, what)` returns `name` unchanged when it is an existing local path or a
remote (`gs://`) one. Otherwise, when it has the form of a Hub repository id, it returns the
cached snapshot directory (`<cache>/models--org--name/snapshots/<commit>`, `<commit>` from
`refs/main`), found with `huggingface_hub.snapshot_download(local_files_only=True)`: nothing
is downloaded. The cache is `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else
`HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`
(huggingface_hub's order; read when called, so a changed environment counts). A name in
neither place is one line naming it and the cache directory searched.
"""

from __future__ import annotations

import logging
import os
import re

from ..errors import CheckpointError
from . import paths

logger = logging.getLogger("xprompt_jax")

# huggingface_hub's repo id rule: [org/]name of word characters, '-' and '.', no '--' or
# '..', at most 96 characters.
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")


def cache_dir() -> str:
    """The Hugging Face Hub cache directory the environment names now."""
    home = os.getenv("HF_HOME") or os.path.join(
        os.getenv("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    home = os.path.expandvars(os.path.expanduser(home))
    hub = os.getenv("HF_HUB_CACHE") or os.getenv("HUGGINGFACE_HUB_CACHE") or \
        os.path.join(home, "hub")
    return os.path.expandvars(os.path.expanduser(hub))


def is_repo_id(name) -> bool:
    """Whether `name` has the form of a Hub repository id (`org/name` or `name`)."""
    return (isinstance(name, str) and len(name) <= 96 and bool(_REPO_ID.match(name))
            and "--" not in name and ".." not in name
            and not name.startswith((".", "-")) and not name.endswith((".", "-"))
            and not re.search(r"/[.-]|[.-]/", name))


def resolve(name, what: str):
    """`name` itself (a local or remote path), or the cached snapshot directory of the Hub
    repository `name`; `what` names the setting in the error (module docstring)."""
    text = paths.fspath(name) if isinstance(name, (str, os.PathLike)) else name
    if not isinstance(text, str) or paths.is_remote(text) or os.path.exists(text) \
            or not is_repo_id(text):
        return name
    cache = cache_dir()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{what} {text!r}: no such path; reading it as a Hugging Face "
                              "Hub name from the cache needs huggingface_hub (pip install "
                              "'xprompt_jax[hf]')") from None
    try:
        snapshot = snapshot_download(text, cache_dir=cache, local_files_only=True)
    except Exception:  # pylint: disable=broad-except  # not cached (LocalEntryNotFoundError, ...)
        snapshot = None
    if not snapshot or not os.path.isdir(snapshot):
        raise CheckpointError(f"{what} {text!r}: neither a local path nor a model in the "
                              f"Hugging Face cache {cache} (HF_HUB_CACHE / HF_HOME); download "
                              f"it first (huggingface-cli download {text}) or give its "
                              "directory")
    logger.info("%s %r: the Hugging Face cache's snapshot %s", what, text, snapshot)
    return snapshot
