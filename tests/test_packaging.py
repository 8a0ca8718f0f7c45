"""The wheel is the package as users get it: every gin config of the top-level `gin/`, the
world checkpoint and vocabulary, the tasks; and (slow) it works installed outside the
repository (`.ci/wheel_check.sh`)."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _clean_copy(dest: pathlib.Path) -> None:
    """The tree as committed or about to be (tracked + untracked, not ignored)."""
    try:
        names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                               check=True, capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        return
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set:
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    _clean_copy(src)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                             "--no-build-isolation", "-w", str(dist), "."], cwd=src,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # setuptools warns about undeclared data folders ("... is not a package"): none left.
    assert "absent from the `packages` configuration" not in result.stderr, result.stderr
    (wheel,) = dist.glob("xprompt_jax-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_wheel_holds_every_gin_file(wheel_names):
    expected = {"xprompt_jax/gin/" + p.relative_to(ROOT / "gin").as_posix()
                for p in (ROOT / "gin").rglob("*.gin")}
    assert len(expected) > 30  # models/, prompts/, runs/, t5x/, world/, method files
    shipped = {n for n in wheel_names if n.endswith(".gin")}
    assert shipped == expected, (expected - shipped, shipped - expected)
    assert "xprompt_jax/gin/prompt_tuning.gin" in shipped  # the marker gin_utils looks for


def test_wheel_holds_world_checkpoint_and_vocab(wheel_names):
    world = ROOT / "xprompt_jax" / "data" / "world"
    expected = {p.relative_to(ROOT).as_posix() for p in world.rglob("*") if p.is_file()
                and "__pycache__" not in p.parts}
    for name in ("xprompt_jax/data/world/sentencepiece.model",
                 "xprompt_jax/data/world/checkpoint_9000/state/manifest.ocdbt"):
        assert name in expected
    assert expected <= wheel_names, sorted(expected - wheel_names)


def test_wheel_holds_code_and_tasks_not_tests(wheel_names):
    for name in ("xprompt_jax/__init__.py", "xprompt_jax/gin_utils.py", "xprompt_jax/tasks/__init__.py",
                 "xprompt_jax/tasks/superglue.py", "xprompt_jax/world/paths.py"):
        assert name in wheel_names, name
    assert not [n for n in wheel_names if n.startswith(("tests/", "xprompt_jax/tests/"))]
    assert not [n for n in wheel_names if "fixtures/" in n]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                    reason="needs git and bash")
def test_installed_wheel_resolves_gin_from_an_empty_directory(tmp_path):
    """`.ci/wheel_check.sh` (gin-only mode): wheel into a fresh venv, run from an empty
    directory: the package, gin files and world checkpoint come from the venv."""
    env = dict(os.environ, WHEEL_CHECK_GIN_ONLY="1", TMPDIR=str(tmp_path))
    env.pop("PYTHONPATH", None)
    result = subprocess.run(["bash", str(ROOT / ".ci" / "wheel_check.sh"), sys.executable],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "wheel_check: OK" in result.stdout
    assert "come from" in result.stdout
