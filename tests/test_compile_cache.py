"""Every CLI uses JAX's persistent compilation cache in a private folder of the user's by
default: a second identical run compiles nothing new; `--nocompilation_cache` and
`$JAX_COMPILATION_CACHE_DIR` are honoured; an unsafe or unwritable folder costs a warning,
never the run."""

import logging
import os
import stat
import subprocess
import sys

import pytest

from test_cli import ROOT, _env, _flags
from xprompt_jax import compile_cache


def _entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.slow
def test_a_second_identical_run_compiles_nothing_new(tmp_path, fixtures_dir):
    env = _env()
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["JAX_DEBUG_LOG_MODULES"] = "jax._src.compilation_cache"  # JAX's own cache log
    cache = tmp_path / "xdg" / "xprompt_jax" / "jax_cache"

    def train(name, *extra):
        cmd = [sys.executable, "-m", "xprompt_jax.train",
               *_flags(tmp_path / name, fixtures_dir, 2), *extra]
        return subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=600).stderr

    log = train("off", "--nocompilation_cache")
    assert "Initialized persistent compilation cache" not in log  # off: JAX as without us
    assert not cache.exists()
    log = train("first")
    assert f"Initialized persistent compilation cache at {cache}" in log
    first = _entries(cache)
    assert first and log.count("to persistent compilation cache") == len(first)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    log = train("second")
    # the cache is on and JAX wrote nothing: every program was found in it (JAX writes misses)
    assert f"Initialized persistent compilation cache at {cache}" in log
    assert "to persistent compilation cache" not in log
    assert _entries(cache) == first


def test_flags_and_environment_choose_whether_and_where(tmp_path, monkeypatch):
    assert compile_cache.split_flag(["train", "--nocompilation_cache", "--x=1"]) == (
        ["train", "--x=1"], False)
    assert compile_cache.split_flag(["--compilation_cache=false", "--compilation_cache"]) == (
        [], True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == str(tmp_path / "xdg" / "xprompt_jax" / "jax_cache")
    # the user's own folder: left to JAX, ours not even created
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache.enable(["x", "--verbose"]) == ["x", "--verbose"]
    assert not (tmp_path / "xdg").exists()


def test_an_unsafe_or_unwritable_folder_is_a_warning_not_a_failure(tmp_path, monkeypatch,
                                                                   caplog):
    import jax

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    before = jax.config.jax_compilation_cache_dir
    shared = tmp_path / "xdg" / "xprompt_jax" / "jax_cache"
    shared.mkdir(parents=True)
    os.chmod(shared, 0o777)  # others could plant compiled code
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with caplog.at_level(logging.WARNING, logger="xprompt_jax.compile_cache"):
        assert compile_cache.enable(["x"]) == ["x"]
    assert "nobody else can write" in caplog.text and str(shared) in caplog.text
    assert jax.config.jax_compilation_cache_dir == before
    # a symlink planted where the folder should be is refused the same way
    os.rmdir(shared)
    os.symlink(tmp_path, shared)
    with pytest.raises(compile_cache.CacheDirError, match="nobody else can write"):
        compile_cache.private_dir()
    # a HOME / XDG_CACHE_HOME that is a file (cannot hold the folder): a warning as well
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xprompt_jax.compile_cache"):
        assert compile_cache.enable(["x"]) == ["x"]
    assert "compiling without a persistent cache" in caplog.text
    assert jax.config.jax_compilation_cache_dir == before
