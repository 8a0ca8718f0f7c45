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


def test_a_plain_models_or_runs_folder_in_the_working_directory_breaks_no_lookup(
        tmp_path, monkeypatch, clean_gin):
    """gin's package-resource reader takes `models/x.gin` for the file x.gin of the Python
    package `models`; an ordinary folder `models` (or `runs`) in the working directory is
    a namespace package without a location, and gin's check raised `TypeError: expected
    str, bytes or os.PathLike object, not NoneType` instead of trying the next search path
    (t5x/train.py searches the working directory first)."""
    from gin import config as gin_config

    for name in ("models", "runs"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # `python -m ...` has the cwd on sys.path
    readers = gin_config._FILE_READERS  # pylint: disable=protected-access
    saved = list(readers)
    try:
        # gin's own check, as t5x/train.py has it before any file of ours is read
        readers[:] = [(r, getattr(e, "__wrapped__", e)) for r, e in readers]
        gin_config._LOCATION_PREFIXES[:] = ["", gin_utils.packaged_gin_dir()]
        with pytest.raises(TypeError, match="NoneType"):
            gin.parse_config_file("models/t5_1_1_tiny.gin")
        gin.clear_config()
        gin_utils.tolerate_plain_folders()
        gin.parse_config_file("models/t5_1_1_tiny.gin")  # found in the next search path
        assert gin.query_parameter("t5_config.T5Config.emb_dim") == 8
        gin.clear_config()
        (tmp_path / "mine.gin").write_text("include 'runs/no_such_file.gin'\n")
        with pytest.raises(gin_utils.GinConfigError, match="runs/no_such_file.gin") as err:
            gin_utils.parse_gin(["./mine.gin"], finalize=False)
        assert "NoneType" not in str(err.value)
    finally:
        readers[:] = saved


# ----------------------------------------------------------------------------- run lock
def _contend(model_dir, start, done, results):
    import time

    from xprompt_jax.training import run_lock

    real_fsync = os.fsync

    def slow_fsync(fd):  # a slow shared disk: widens any window between create and write
        time.sleep(0.05)
        real_fsync(fd)

    os.fsync = slow_fsync  # this forked child only
    start.wait()
    try:
        results.put(run_lock._try_acquire(model_dir, False) is None)
    except BaseException as e:  # noqa: BLE001 - reported to the test
        results.put(repr(e))
    done.wait()  # holders stay alive until every process has tried
    os._exit(0)


def test_forty_concurrent_lock_attempts_give_one_holder(tmp_path):
    import multiprocessing

    from xprompt_jax.training import run_lock  # noqa: F401 - imported once, before forking

    ctx = multiprocessing.get_context("fork")
    n = 40
    start, done, results = ctx.Barrier(n), ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), start, done, results))
             for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(n)]
    done.wait(timeout=60)
    for p in procs:
        p.join(timeout=60)
    assert outcomes.count(True) == 1 and outcomes.count(False) == n - 1, outcomes
    assert sorted(os.listdir(tmp_path)) == ["run.lock"]  # no temporaries left behind


def _live_other_process():
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


@pytest.mark.parametrize("content", ["null", "[]", "7", '"x"', "{", "\xff\xfe"])
def test_a_lock_without_an_owner_record_is_refused_and_forced_cleanly(tmp_path, content):
    from xprompt_jax.errors import RunLockedError
    from xprompt_jax.training import run_lock

    path = tmp_path / "run.lock"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(RunLockedError, match="pass --force"):
        run_lock.acquire(str(tmp_path))
    assert path.read_bytes() == content.encode("latin-1")
    run_lock.acquire(str(tmp_path), force=True)
    assert run_lock.read_lock(str(tmp_path))["pid"] == os.getpid()
    run_lock.release(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_an_unreadable_lock_is_not_taken_without_force(tmp_path):
    from xprompt_jax.errors import RunLockedError
    from xprompt_jax.training import run_lock

    (tmp_path / "run.lock").mkdir()  # unreadable as a file, even for root
    with pytest.raises(RunLockedError, match="unreadable lock file"):
        run_lock.acquire(str(tmp_path))
    with pytest.raises(RunLockedError, match="could not take over"):
        run_lock.acquire(str(tmp_path), force=True)
    assert os.listdir(tmp_path) == ["run.lock"]


def test_only_a_provably_dead_owner_on_this_host_is_taken_over(tmp_path):
    import json
    import socket

    from xprompt_jax.errors import RunLockedError
    from xprompt_jax.training import run_lock

    live = _live_other_process()
    dead = _live_other_process()
    dead.kill()
    dead.wait()
    path = tmp_path / "run.lock"
    try:
        for pid in (live.pid, 0, -1, 2 ** 70, "1", True):
            path.write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))
            with pytest.raises(RunLockedError):
                run_lock.acquire(str(tmp_path))
    finally:
        live.kill()
        live.wait()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    run_lock.acquire(str(tmp_path))
    assert run_lock.read_lock(str(tmp_path))["pid"] == os.getpid()
    run_lock.release(str(tmp_path))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- symlinks
def test_a_planted_symlink_at_a_temporary_name_is_not_written_through(tmp_path, monkeypatch):
    import uuid

    from xprompt_jax import fileio

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "predictions.jsonl"
    real_uuid4 = uuid.uuid4
    names = iter([uuid.UUID(int=1)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(names, None) or real_uuid4())
    planted = tmp_path / f".{out.name}.tmp-{os.getpid()}-{uuid.UUID(int=1).hex}"
    planted.symlink_to(victim)  # the name the first temporary would take
    fileio.write_lines_atomic(out, ['{"line": 1}'])
    assert victim.read_text() == "precious\n"
    assert out.read_text() == '{"line": 1}\n' and not out.is_symlink()
    assert planted.is_symlink()  # not ours: left alone

    # a symlink at the output itself is replaced, never followed
    out.unlink()
    out.symlink_to(victim)
    fileio.write_text_atomic(out, "mine\n")
    assert victim.read_text() == "precious\n" and out.read_text() == "mine\n"
    assert not out.is_symlink()


def _victim_checkpoints(root):
    victim = root / "someone_elses_run"
    for name in ("checkpoint_5", "checkpoint_6.tmp-1"):
        (victim / name).mkdir(parents=True)
        (victim / name / "prompt.npy").write_bytes(b"theirs")
    return victim


def test_checkpoint_pruning_does_not_delete_through_a_symlink(tmp_path):
    from xprompt_jax.training.checkpointing import RunCheckpointer as Checkpointer

    victim = _victim_checkpoints(tmp_path)
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "numpy_checkpoints").symlink_to(victim, target_is_directory=True)
    ckpt = Checkpointer(model_dir, keep=1)  # a writer cleans unfinished exports at start
    ckpt._prune()  # no orbax step is kept: every numpy checkpoint_<n> is "not kept"
    assert sorted(os.listdir(victim)) == ["checkpoint_5", "checkpoint_6.tmp-1"]
    assert (victim / "checkpoint_5" / "prompt.npy").read_bytes() == b"theirs"

    # one checkpoint folder a symlink inside a real numpy_checkpoints: also left alone
    model_dir = tmp_path / "run2"
    (model_dir / "numpy_checkpoints").mkdir(parents=True)
    (model_dir / "numpy_checkpoints" / "checkpoint_5").symlink_to(
        victim / "checkpoint_5", target_is_directory=True)
    (model_dir / "numpy_checkpoints" / "checkpoint_7").mkdir()
    (model_dir / "numpy_checkpoints" / "checkpoint_7" / "prompt.prompt").write_bytes(b"ours")
    Checkpointer(model_dir, keep=1)._prune()
    assert (victim / "checkpoint_5" / "prompt.npy").read_bytes() == b"theirs"
    assert os.listdir(model_dir / "numpy_checkpoints") == ["checkpoint_5"]  # ours went


def test_the_world_refresh_replaces_only_its_own_files(tmp_path, monkeypatch):
    import json

    from xprompt_jax.world import tasks as world_tasks
    from xprompt_jax.world import writer

    sizes = {"train": 4, "validation": 2, "test": 2}
    world = tmp_path / "world"
    world.mkdir()
    (world / "world.json").write_text(json.dumps({"world_version": 0}))  # not ours
    (world / "notes.txt").write_text("mine")
    (world / "results").mkdir()
    (world / "results" / "run.json").write_text("{}")
    monkeypatch.setenv(writer.DIR_ENV_VAR, str(world))
    assert writer.ensure_world_data(sizes=sizes) == str(world)
    assert (world / "notes.txt").read_text() == "mine"
    assert (world / "results" / "run.json").read_text() == "{}"
    assert writer.is_current(str(world), sizes=sizes)
    task_dir = world_tasks.TASKS[world_tasks.TASK_NAMES[0]].directory
    assert (world / task_dir / "train.jsonl").read_text().count("\n") == 4

    # a task folder that is a symlink to someone else's folder: refused, nothing written
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "train.jsonl").write_text("theirs")
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "world.json").write_text("{}")
    (stale / task_dir).symlink_to(victim, target_is_directory=True)
    with pytest.raises(FileExistsError, match="symlink"):
        writer.ensure_world_data(str(stale), sizes=sizes)
    assert os.listdir(victim) == ["train.jsonl"]
    assert (victim / "train.jsonl").read_text() == "theirs"


# ----------------------------------------------------------------------------- checkpoints
LEGACY = ROOT / "tests" / "fixtures" / "t5x_tiny_legacy" / "checkpoint_3"
_EMBEDDING = "target.token_embedder.embedding"


def _crafted_legacy(tmp_path, edit):
    """A copy of the legacy fixture whose embedding spec `edit` changes, and another
    directory's array (a copy of the same zarr array, doubled) outside it."""
    import shutil

    import numpy as np
    import tensorstore as ts
    from flax import serialization

    ckpt = tmp_path / "theirs" / "checkpoint_3"
    shutil.copytree(LEGACY, ckpt)
    outside = tmp_path / "private" / "secret_array"
    shutil.copytree(LEGACY / _EMBEDDING, outside)
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(outside)}},
                    read=True, write=True).result()
    store.write(np.asarray(store.read().result()) * 2 + 1).result()
    raw = serialization.msgpack_restore((ckpt / "checkpoint").read_bytes())
    spec = raw["optimizer"]["target"]["token_embedder"]["embedding"]
    edit(spec, str(outside), ckpt)
    (ckpt / "checkpoint").write_bytes(serialization.msgpack_serialize(raw))
    return ckpt


def _top_level_path(spec, outside, ckpt):
    spec["path"] = outside  # the proof of concept: an absolute top-level "path"


def _climbing_kvstore(spec, outside, ckpt):
    spec["kvstore"]["path"] = "../../private/secret_array"


def _symlink_out(spec, outside, ckpt):
    import shutil

    shutil.rmtree(ckpt / _EMBEDDING)
    (ckpt / _EMBEDDING).symlink_to(outside, target_is_directory=True)


def _other_driver(spec, outside, ckpt):
    spec["driver"] = "json"


def _extra_key(spec, outside, ckpt):
    spec["base"] = {"driver": "zarr", "kvstore": {"driver": "file", "path": outside}}


@pytest.mark.parametrize("edit, key", [
    (_top_level_path, "'path'"), (_climbing_kvstore, "'kvstore.path'"),
    (_symlink_out, "'kvstore.path'"), (_other_driver, "'driver'"), (_extra_key, "'base'")])
def test_a_crafted_t5x_checkpoint_cannot_read_outside_its_folder(tmp_path, edit, key):
    from xprompt_jax.checkpoints import load_t5x_params
    from xprompt_jax.errors import CheckpointError

    ckpt = _crafted_legacy(tmp_path, edit)
    with pytest.raises(CheckpointError, match=rf"token_embedder/embedding.*key {key}"):
        load_t5x_params(ckpt)


def test_an_untouched_copy_of_the_legacy_checkpoint_still_loads(tmp_path):
    import numpy as np

    from xprompt_jax.checkpoints import load_t5x_params

    ckpt = _crafted_legacy(tmp_path, lambda spec, outside, ckpt: None)
    params = load_t5x_params(ckpt)
    import tensorstore as ts

    ref = ts.open({"driver": "zarr", "kvstore": {"driver": "file",
                                                 "path": str(LEGACY / _EMBEDDING)}},
                  read=True).result().read().result()
    np.testing.assert_array_equal(params["token_embedder"]["embedding"], ref)


@pytest.mark.parametrize("shard", ["../private/model.safetensors", "ABS",
                                   "link/model.safetensors"])
def test_hf_index_shards_outside_the_folder_are_refused(tmp_path, shard):
    import json

    import numpy as np
    pytest.importorskip("safetensors", reason="the `hf` extra (not in the T5X environment)")
    from safetensors.numpy import save_file

    from xprompt_jax.checkpoints import hf_files
    from xprompt_jax.errors import CheckpointError

    private = tmp_path / "private"
    private.mkdir()
    save_file({"shared.weight": np.ones((2, 2), np.float32)}, str(private / "model.safetensors"))
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "link").symlink_to(private, target_is_directory=True)
    shard = str(private / "model.safetensors") if shard == "ABS" else shard
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"shared.weight": shard}}))
    with pytest.raises(CheckpointError, match="weight_map shard"):
        hf_files.read_weight_file(str(index))
    # a shard inside the folder is read
    save_file({"shared.weight": np.full((2, 2), 3, np.float32)},
              str(folder / "model-00001.safetensors"))
    index.write_text(json.dumps({"weight_map": {"shared.weight": "model-00001.safetensors"}}))
    weights, _ = hf_files.read_weight_file(str(index))
    np.testing.assert_array_equal(weights["shared.weight"], np.full((2, 2), 3, np.float32))


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["../../escaped", "a/b", "x)\nimport os\n#", "", ".hidden",
                                  "a..b", "$(touch pwned)", "x" * 200, 7])
def test_hostile_bank_prompt_names_are_refused_before_any_file(tmp_path, name):
    from xprompt_jax.errors import ConfigError
    from xprompt_jax.runs.export import export_bank

    with pytest.raises(ConfigError, match="prompt name #1"):
        export_bank(_bank_model(2), {}, tmp_path / "out", prompt_names=["ok_name", name])
    assert not (tmp_path / "out").exists()


def _bank_model(num):
    """A model with a real PromptBank of `num` soft prompts (export_bank reads the model's
    `prompt` only; names are checked before any parameter is read)."""
    from xprompt_jax.prompts.bank import PromptBank
    from xprompt_jax.prompts.soft_prompt import SoftPrompt

    return type("Model", (), {"prompt": PromptBank(prompt=SoftPrompt(length=2),
                                                   num_prompts=num)})()


def test_valid_names_pass_and_task_names_become_no_paths():
    from xprompt_jax.errors import ConfigError
    from xprompt_jax.fileio import check_name
    from xprompt_jax.training.bank_training import BestPerTaskPrompts

    for name in ("world_rte", "xprompt_super_glue_rte_v102", "prompt_0", "t5.1-1+x"):
        assert check_name(name, "name") == name
    with pytest.raises(ConfigError, match="task name '../x'"):
        BestPerTaskPrompts("/nonexistent", ["world_rte", "../x"], None)


def _stand_ins(tmp_path):
    """A `gcloud` on PATH that records its argv and runs its --command in bash as a worker
    would, and a `python` there that records its argv instead of training."""
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(
        "#!/usr/bin/env bash\n"
        f"printf '%s\\0' \"$@\" > {tmp_path}/gcloud.argv\n"
        "for a in \"$@\"; do case \"$a\" in --command=*) cmd=${a#--command=};; esac; done\n"
        "exec bash -c \"$cmd\"\n")
    python = bin_dir / "python"
    python.write_text(f"#!/usr/bin/env bash\nprintf '%s\\0' \"$@\" > {tmp_path}/python.argv\n")
    for path in (gcloud, python):
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _pod(tmp_path, *args, env=None):
    import subprocess

    bin_dir = _stand_ins(tmp_path)
    repo = tmp_path / "repo on worker"
    repo.mkdir(exist_ok=True)
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "REPO_DIR": str(repo), **(env or {})}
    return subprocess.run(["bash", str(ROOT / "launch" / "tpu_pod.sh"), *args],
                          env=full_env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def _argv(path):
    return path.read_bytes().decode().split("\0")[:-1]


def test_tpu_pod_script_runs_nothing_from_its_arguments(tmp_path):
    pwned = tmp_path / "pwned"
    # the proof of concept: a $(...) in MODEL_DIR (a gin string too): refused, nothing run
    out = _pod(tmp_path, "tpu", "zone", f"gs://b/run$(touch {pwned})", "world_rte")
    assert out.returncode == 2 and "MODEL_DIR" in out.stderr
    assert not (tmp_path / "gcloud.argv").exists() and not pwned.exists()
    out = _pod(tmp_path, "tpu", "zone", "gs://b/run", f"rte';touch {pwned};'")
    assert out.returncode == 2 and "TASK" in out.stderr and not pwned.exists()
    # extra flags and gin files with shell syntax reach python as they were written
    extra = [f"--gin.NOTE='$(touch {pwned})'", f"--gin.X=`touch {pwned}`; touch {pwned}"]
    out = _pod(tmp_path, "tpu", "zone", "gs://b/run-1", "world_rte", *extra,
               env={"METHOD_GIN": f"a b;touch {pwned}.gin", "PROJECT": "p $(x)"})
    assert out.returncode == 0, out.stderr
    assert not pwned.exists() and not pwned.with_suffix(".gin").exists()
    assert _argv(tmp_path / "python.argv") == [
        "-m", "xprompt_jax.train", "--gin_file=models/t5_1_1_lm100k_xxl.gin",
        f"--gin_file=a b;touch {pwned}.gin", "--gin.MODEL_DIR='gs://b/run-1'",
        "--gin.MIXTURE_OR_TASK_NAME='world_rte'", "--gin.MESH_SHAPE=(-1, 8)",
        "--multiprocess=yes", *extra]
    gcloud = _argv(tmp_path / "gcloud.argv")
    assert gcloud[:6] == ["compute", "tpus", "tpu-vm", "ssh", "tpu", "--zone=zone"]
    assert "--project=p $(x)" in gcloud and "--worker=all" in gcloud


# ----------------------------------------------------------------------------- bombs
def _peak_bytes(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - returned to the test
        result = e
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak


def test_an_mrqa_gzip_bomb_is_streamed_within_a_stated_bound(tmp_path, monkeypatch):
    import gzip

    from xprompt_jax.tasks import mrqa

    monkeypatch.setattr(mrqa, "MAX_LINE_CHARS", 1 << 20)  # 1 MiB lines, for a fast test
    size = 32 << 20  # inflates to 32 MiB
    one_line = tmp_path / "one_line.jsonl.gz"
    with gzip.open(one_line, "wb", compresslevel=9) as f:
        f.write(b'{"context": "' + b"a" * size + b'"}\n')
    blank_lines = tmp_path / "blank_lines.jsonl.gz"
    with gzip.open(blank_lines, "wb", compresslevel=9) as f:
        f.write(b'{"header": {"dataset": "SQuAD"}}\n' + (b" " * 65535 + b"\n") * (size >> 16))
    assert one_line.stat().st_size < 200_000 and blank_lines.stat().st_size < 200_000

    error, peak = _peak_bytes(lambda: mrqa.read_mrqa(str(one_line)))
    assert isinstance(error, mrqa.MRQAFormatError) and f"{one_line}:1: line longer" in str(error)
    assert peak < 12 << 20, peak  # whole-file decompression held >= 2 x 32 MiB
    result, peak = _peak_bytes(lambda: mrqa.read_mrqa(str(blank_lines)))
    assert result == [] and peak < 12 << 20, peak


def test_infer_requests_are_streamed_capped_and_echoes_cut(tmp_path, monkeypatch):
    import json

    from xprompt_jax.runs import infer

    monkeypatch.setattr(infer, "MAX_LINE_CHARS", 4096)
    path = tmp_path / "requests.jsonl"
    huge_name = "p" * 50_000
    with open(path, "w") as f:
        f.write(json.dumps({"prompt": "world_rte", "premise": "x" * 10_000}) + "\n")
        f.write(json.dumps({"prompt": huge_name[:3000], "premise": "x"}) + "\n")
        f.write(json.dumps({"task": huge_name[:3000]}) + "\n")
        f.write(json.dumps({"prompt": "world_rte", "premise": "a", "hypothesis": "b"}) + "\n")
    items = list(infer.iter_requests(str(path), ["world_rte"], {"world_rte": "world_rte"}))
    assert [(n, name) for n, name, _ in items] == [(1, None), (2, None), (3, None),
                                                  (4, "world_rte")]
    assert items[0][2] == "line 1: longer than 4096 characters; skipped unread"
    for _, _, message in items[1:3]:
        assert "(3002 characters)" in message and len(message) < 250
    assert items[3][2]["hypothesis"] == "b"

    # one line at a time: 30 000 requests of about 720 B (21 MB) are read in a few KB
    many = tmp_path / "many.jsonl"
    line = json.dumps({"prompt": "world_rte", "premise": "m" * 650, "hypothesis": "h"})
    many.write_text((line + "\n") * 30_000)

    def count():
        return sum(1 for _ in infer.iter_requests(str(many), ["world_rte"],
                                                  {"world_rte": "world_rte"}))

    result, peak = _peak_bytes(count)
    assert result == 30_000 and peak < 1 << 20, peak


def test_a_resumed_data_position_is_validated():
    from xprompt_jax.errors import CheckpointError
    from xprompt_jax.training.trainer import resume_position

    assert resume_position({"data": {"position": 4, "seed": 0}}, 4, "step 4") == 4
    assert resume_position({}, 6, "step 6") == 6  # older checkpoints: one batch a step
    for bad in (10 ** 18, -1, 5, 2.0, "3", True, None, [4]):
        with pytest.raises(CheckpointError, match=r"step 4 in /c: meta field 'data.position'"):
            resume_position({"data": {"position": bad}}, 4, "step 4 in /c")
    with pytest.raises(CheckpointError, match="meta field 'data'"):
        resume_position({"data": [1]}, 4, "step 4 in /c")


# ----------------------------------------------------------------------------- permissions
def test_the_benchmark_compilation_cache_is_private_and_not_in_its_output(tmp_path,
                                                                          monkeypatch):
    import stat
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("quality", None)
    import quality

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    output = tmp_path / "shared_output" / "fewshot16" / "world_rte" / "pt" / "seed0"
    cache = quality.run_env(str(output))["JAX_COMPILATION_CACHE_DIR"]
    assert cache == str(tmp_path / "cache" / "xprompt_jax" / "jax_cache")
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert not (tmp_path / "shared_output").exists()
    # a cache folder others can write (or a planted symlink) is refused, never used
    os.chmod(cache, 0o777)
    with pytest.raises(RuntimeError, match="nobody else can write"):
        quality.run_env(str(output))
    os.rmdir(cache)
    os.symlink(tmp_path / "shared_output", cache)
    with pytest.raises(RuntimeError, match="nobody else can write"):
        quality.run_env(str(output))
    # the user's own choice is kept
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert quality.run_env(str(output))["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "mine")


def test_files_we_write_follow_the_umask(tmp_path):
    import stat

    from xprompt_jax import fileio
    from xprompt_jax.training import run_lock

    old = os.umask(0o077)
    try:
        fileio.write_text_atomic(tmp_path / "report.md", "x")
        fileio.save_npy_atomic(tmp_path / "prompt.npy", [1.0])
        run_lock.acquire(str(tmp_path))
        modes = {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)
                 for name in ("report.md", "prompt.npy", "run.lock")}
        run_lock.release(str(tmp_path))
        os.umask(0o022)
        fileio.write_text_atomic(tmp_path / "shared.md", "x")
        shared = stat.S_IMODE(os.stat(tmp_path / "shared.md").st_mode)
    finally:
        os.umask(old)
    assert modes == {"report.md": 0o600, "prompt.npy": 0o600, "run.lock": 0o600}
    assert shared == 0o644  # the default umask: readable by others (docs/security.md)


def test_the_t5x_environment_pins_what_the_docs_say_and_checks_the_snapshots():
    import re

    ci = (ROOT / ".ci" / "run").read_text()
    installs = re.findall(r'"\$venv/bin/pip" install (.*)', ci)
    registry = [line for line in installs if "--no-deps" not in line and "-U pip" not in line]
    assert registry and all("-c \"$ROOT/.ci/t5x_constraints.txt\"" in line
                            for line in registry), registry
    assert 'sha256sum -c --quiet "$ROOT/.ci/t5x_sources.sha256"' in ci
    hashes = (ROOT / ".ci" / "t5x_sources.sha256").read_text().split()
    assert sorted(hashes[1::2]) == ["airio.tar.gz", "jestimator.tar.gz", "t5x.tar.gz"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes[0::2])
    pins = dict(line.split("==") for line in
                (ROOT / ".ci" / "t5x_constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    doc = " ".join((ROOT / "docs" / "t5x.md").read_text().split())
    said = re.search(r"This resolves to (.*?)\.\s", doc).group(1)
    stated = re.findall(r"([a-z][a-z0-9/-]*) (\d[\w.]*)", said)
    assert len(stated) >= 9, said
    for names, version in stated:
        for name in names.split("/"):
            assert pins.get(name) == version, (name, version, pins.get(name))


def test_appended_logs_and_adapter_files_are_not_written_through_symlinks(tmp_path):
    import numpy as np
    pytest.importorskip("safetensors", reason="the `hf` extra (not in the T5X environment)")

    from xprompt_jax.checkpoints import peft_adapter
    from xprompt_jax.training.run_logging import append_log_line

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").symlink_to(victim)
    with pytest.raises(OSError):
        append_log_line(str(run), "started")
    out = tmp_path / "adapter"
    out.mkdir()
    for name in (peft_adapter.ADAPTER_CONFIG, peft_adapter.ADAPTER_SAFETENSORS):
        (out / name).symlink_to(victim)
    files = peft_adapter.write_peft_adapter(str(out), np.ones((2, 4), np.float32))
    assert victim.read_text() == "precious\n"
    assert not any(os.path.islink(p) for p in files.values())


def test_a_symlinked_orbax_checkpoints_folder_is_refused_by_a_writer(tmp_path):
    from xprompt_jax.errors import CheckpointError
    from xprompt_jax.training.checkpointing import RunCheckpointer

    victim = tmp_path / "someone_elses_run" / "checkpoints"
    (victim / "7.orbax-checkpoint-tmp").mkdir(parents=True)  # their save in progress
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "checkpoints").symlink_to(victim, target_is_directory=True)
    with pytest.raises(CheckpointError, match="checkpoints is a symlink"):
        RunCheckpointer(model_dir, keep=1)
    assert os.listdir(victim) == ["7.orbax-checkpoint-tmp"]
