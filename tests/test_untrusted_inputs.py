"""Files other people made on a shared machine: planted gin files, crafted checkpoints, lock
races, symlinks, bombs and hostile names. Each test replays a proof of concept inside
tmp_path and checks that it now fails safely (nothing read, run, written or deleted outside
what the user named; a clear error naming the field at fault)."""

from __future__ import annotations

import os
import pathlib

import gin
import pytest

from xprompt_jax import gin_utils

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_gin():
    from gin import config as gin_config

    saved = list(gin_config._LOCATION_PREFIXES)  # pylint: disable=protected-access
    gin.clear_config()
    yield
    gin.clear_config()
    gin_config._LOCATION_PREFIXES[:] = saved  # pylint: disable=protected-access


def _plant_payload(tmp_path, monkeypatch, module):
    """A module that leaves a marker file when imported; a gin file `import`ing it stands
    for a gin file that calls any registered function."""
    marker = tmp_path / f"{module}.ran"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


# ----------------------------------------------------------------------------- gin lookups
def test_planted_gin_files_in_the_working_directory_are_not_read(tmp_path, monkeypatch,
                                                                  clean_gin):
    marker = _plant_payload(tmp_path, monkeypatch, "planted_gin_payload")
    for name in ("prompts/uniform.gin", "runs/prompt_tune.gin", "prompt_tuning.gin",
                 "models/t5_1_1_tiny.gin"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("import planted_gin_payload\n")
    monkeypatch.chdir(tmp_path)
    gin_utils.parse_gin(["prompt_tuning.gin", "models/t5_1_1_tiny.gin"], finalize=False)
    assert not marker.exists()
    # our own prompts/uniform.gin was read instead: U[-0.5, 0.5]
    assert gin.query_parameter("xprompt_jax.prompts.initializers.uniform.scale") == 0.5
    assert gin_utils.search_working_dir_last()[-1] == ""  # the working directory is last

    # The same include with gin's own order (working directory first) runs the payload.
    from gin import config as gin_config

    gin.clear_config()
    gin_config._LOCATION_PREFIXES[:] = ["", gin_utils.packaged_gin_dir()]
    gin.parse_config_file("prompt_tuning.gin")
    assert marker.exists()


def test_a_gin_file_named_as_a_location_and_its_includes_still_work(tmp_path, monkeypatch,
                                                                     clean_gin):
    (tmp_path / "base.gin").write_text("BATCH_SIZE = 3\n")
    (tmp_path / "mine.gin").write_text("include 'base.gin'\nTRAIN_STEPS = 5\n")
    monkeypatch.chdir(tmp_path)
    gin_utils.parse_gin(["./mine.gin"], finalize=False)
    assert gin.query_parameter("BATCH_SIZE/macro.value") == 3
    assert gin.query_parameter("TRAIN_STEPS/macro.value") == 5


def test_every_include_of_ours_resolves_in_our_folder():
    """With the working directory searched last, an include of ours can only come from the
    working directory if our folder lacks the file."""
    import re

    base = pathlib.Path(gin_utils.packaged_gin_dir())
    missing = []
    for path in sorted(base.rglob("*.gin")):
        for name in re.findall(r"^include\s+'([^']+)'", path.read_text(), flags=re.M):
            if name.startswith("t5x/configs/"):
                continue  # T5X's own, found through t5x's search path
            if not ((base / name).is_file() or (base / "t5x" / name).is_file()):
                missing.append(f"{path.relative_to(base)}: {name}")
    assert not missing


def test_t5x_gin_files_search_the_working_directory_last(tmp_path, monkeypatch, clean_gin):
    """Under t5x/train.py, gin's list starts with the working directory; our top-level
    gin/t5x files import t5x_compat (which moves it last) before their first include."""
    import re

    from gin import config as gin_config

    for path in sorted((ROOT / "gin" / "t5x").glob("*.gin")):
        text = path.read_text()
        first_include = re.search(r"^include ", text, flags=re.M)
        guard = re.search(r"^from xprompt_jax import t5x_compat$", text, flags=re.M)
        assert guard and guard.start() < first_include.start(), path.name
    gin_config._LOCATION_PREFIXES[:] = ["", "/t5x/search/path"]
    assert gin_utils.search_working_dir_last() == ["/t5x/search/path", ""]
