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
    config.addinivalue_line("markers", "jax_smoke: the tests that CI reruns under the other "
                            "jax version (the T5X environment); see JAX_SMOKE")


# What CI's T5X environment (Python 3.12, jax 0.12, the newest flax / optax / orbax) runs
# besides the t5x files themselves: one or a few fast tests per package, chosen for the APIs
# that change between jax versions. They guard: meshes, NamedSharding and sharded steps
# (test_training 4x2 mesh, test_t5_model sharded forward); orbax save / restore and T5X orbax
# and legacy reading (test_checkpointing, test_checkpoints_t5x, test_only_the_prompt_changes);
# jax.checkpoint policies (test_remat); compiled memory analysis (test_memory_plan); optax
# transforms (test_optimizers, test_reliability_training's NaN rollback); the decode loop's
# cache (incremental decoding); jax.grad per example (test_xprompt_masks); the evaluator
# (test_eval_speed, test_domain_shift); the CLIs and runs layer (test_cli, test_export,
# test_heldout_reporting); tasks and seqio (test_tasks_glue, test_tasks_registry); the world
# (test_world); the layout and old import paths (test_layout); gin's search order, locks,
# symlinks and checkpoint confinement (test_untrusted_inputs). Node-id prefixes.
JAX_SMOKE = (
    "tests/test_t5_model.py::test_incremental_decoding_matches_full_forward",
    "tests/test_t5_model.py::test_forward_sharded_on_4x2_mesh_matches_single_device",
    "tests/test_prompted.py::test_position_mask_removes_prompt_positions_from_attention",
    "tests/test_prompted.py::test_packing_is_rejected_with_a_clear_error",
    "tests/test_checkpoints_t5x.py",
    "tests/test_checkpointing.py",
    "tests/test_prompts.py",
    "tests/test_reparam_prompts.py::test_ept_equals_numpy_formula",
    "tests/test_prompt_bank.py::test_out_of_range_ids",
    "tests/test_prompt_bank.py::test_per_prompt_loss_weights",
    "tests/test_tasks_glue.py",
    "tests/test_tasks_registry.py::test_task_info",
    "tests/test_tasks_registry.py::test_vocabulary_equals_plain_seqio_vocabulary",
    "tests/test_training.py::test_five_steps_on_4x2_mesh_match_one_device",
    "tests/test_training.py::test_only_the_prompt_changes",
    "tests/test_optimizers.py",
    "tests/test_losses.py",
    "tests/test_reliability_training.py",
    "tests/test_remat.py::test_unknown_policy_is_rejected",
    "tests/test_remat.py::test_prompt_gradients_equal_without_remat",
    "tests/test_memory_plan.py",
    "tests/test_eval_speed.py::test_candidate_search_scores_equal_per_row_scores",
    "tests/test_domain_shift.py",
    "tests/test_export.py",
    "tests/test_cli.py",
    "tests/test_heldout_reporting.py",
    "tests/test_xprompt_masks.py::test_fully_masked_piece_has_no_effect_on_logits",
    "tests/test_xprompt_pruning.py",
    "tests/test_xprompt_protocol.py",
    "tests/test_world.py",
    "tests/test_layout.py",
    "tests/test_untrusted_inputs.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(JAX_SMOKE):
            item.add_marker(pytest.mark.jax_smoke)


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
