"""Test configuration: 8 emulated CPU devices (set before jax is imported) and fixture paths.

The test data (T5 SentencePiece model, tiny T5X checkpoints; third-party, Apache-2.0) lives
in `tests/fixtures/`, byte-identical to the shared copy beside the repository (test_fixtures.py
compares them when it exists), so a bare clone runs the suite.
"""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (deselect with -m 'not slow')")


# pytest.ini runs the suite on `-n auto` pytest-xdist workers (whole files per worker:
# `--dist loadfile`, so module fixtures that train once are not repeated). Each worker is a
# jax + TensorFlow process with 8 emulated devices (~2-3 GiB with the CLI subprocesses it
# starts), so `auto` means one per core, at most 4 and at most one per 4 GiB of memory.
# `-n 0` runs everything in this process.
MAX_WORKERS = 4
GIB_PER_WORKER = 4


def pytest_xdist_auto_num_workers(config):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = GIB_PER_WORKER * MAX_WORKERS
    return max(1, min(MAX_WORKERS, cores or 1, int(memory_gib // GIB_PER_WORKER)))


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"test fixtures not found at {FIXTURES} (they are part of the repository: "
                    "is the checkout complete?)")
    return FIXTURES


@pytest.fixture(scope="session")
def t5_vocab_path(fixtures_dir) -> str:
    return str(fixtures_dir / "t5_spm" / "sentencepiece.model")
