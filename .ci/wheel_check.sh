#!/usr/bin/env bash
# Wheel check: the package as a user gets it, outside the repository.
#   1. builds the wheel (`pip wheel --no-deps`) from a clean copy of the tree (tracked and
#      untracked-but-not-ignored files; no stale build/);
#   2. installs it with --no-deps into a fresh virtualenv whose dependencies come from the
#      interpreter running this script (its site-packages on the path, nothing downloaded);
#   3. from an empty temporary directory, with no repository on any path: checks the
#      package, its gin folder and the world checkpoint come from the venv, resolves the
#      quickstart's gin files, and (unless WHEEL_CHECK_GIN_ONLY=1) runs the README's main
#      command with 2 training steps (`python -m xprompt_jax.quickstart --method
#      prompt_tuning --steps 2 --no_references`, about 1.5 min on 2 CPU cores).
# Usage: .ci/wheel_check.sh [python]   (default: python3 on PATH; needs the deps installed)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/empty"

echo "wheel_check: copying the tree"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
     if [ -f "$f" ]; then cp --parents "$f" "$WORK/src/"; fi  # (tracked but deleted: skipped)
   done)
else
  cp -a "$ROOT/." "$WORK/src/" && rm -rf "$WORK/src/build" "$WORK/src/"*.egg-info
fi

echo "wheel_check: building the wheel"
(cd "$WORK/src" && "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" .)
WHEEL="$(ls "$WORK"/dist/xprompt_jax-*.whl)"
echo "wheel_check: built $(basename "$WHEEL")"

echo "wheel_check: installing into a fresh venv"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
# Dependencies: the running interpreter's site-packages directories (its own and any its
# .pth files add), after the venv's own, so the wheel's xprompt_jax wins over any installed
# or editable copy (the .pth files there, e.g. editable finders, are not run).
"$PY" -c 'import os, sys; print("\n".join(dict.fromkeys(
    p for p in sys.path if os.path.isdir(p) and os.path.basename(p) in
    ("site-packages", "dist-packages"))))' \
  > "$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_deps.pth"
"$VPY" -m pip install -q --no-deps --no-index "$WHEEL"

cd "$WORK/empty"
unset PYTHONPATH
export XPROMPT_WORLD_DIR="$WORK/world"
echo "wheel_check: gin resolution from $(pwd)"
"$VPY" - "$WORK/venv" <<'PYEOF'
import os, sys
venv = os.path.realpath(sys.argv[1])
import xprompt_jax
from xprompt_jax import gin_utils
from xprompt_jax.world import paths, quickstart
def inside(path):
    return os.path.realpath(path).startswith(venv + os.sep)
assert inside(xprompt_jax.__file__), xprompt_jax.__file__
gin_dir = gin_utils.packaged_gin_dir()
assert inside(gin_dir), gin_dir
for method in quickstart.METHODS.values():
    for name in (quickstart.MODEL_GIN, method.gin_file, quickstart.RUN_GIN):
        resolved = gin_utils._resolve(name, gin_utils.default_search_paths())
        assert inside(resolved), resolved
import glob
assert glob.glob(os.path.join(os.path.dirname(xprompt_jax.__file__), "data", "world",
                              "checkpoint_*", "state", "manifest.ocdbt"))
print("wheel_check: package, gin files and world checkpoint come from", venv)
PYEOF
"$VPY" - <<'PYEOF'
# Parse the quickstart's gin files as its entry points do (runs.flags.configure_from_argv).
import gin
import xprompt_jax.tasks  # noqa: F401 (registers configurables, as the entry points do)
from xprompt_jax import gin_utils
from xprompt_jax.world import quickstart
for method in quickstart.METHODS.values():
    gin.clear_config()
    args = quickstart.gin_args(method, "/tmp/unused", "rte", "/tmp/unused", 0, steps=2)
    files = [a.split("=", 1)[1] for a in args if a.startswith("--gin_file=")]
    bindings = [a.split("=", 1)[1] for a in gin_utils.rewrite_gin_args(args)
                if a.startswith("--gin_bindings=")]
    gin_utils.parse_gin(files, bindings, finalize=False)
    assert gin.query_parameter("%TRAIN_STEPS") == 2
    print(f"wheel_check: {method.gin_file}: gin files found and parsed")
PYEOF
"$VPY" - "$WORK/venv" <<'PYEOF'
# Every console script is installed and its entry point loads from the venv.
import os, sys
from importlib import metadata
scripts = [e for e in metadata.distribution("xprompt_jax").entry_points
           if e.group == "console_scripts"]
assert len(scripts) >= 5, scripts
for entry in scripts:
    assert os.access(os.path.join(sys.argv[1], "bin", entry.name), os.X_OK), entry.name
    assert callable(entry.load()), entry
print("wheel_check: console scripts:", ", ".join(e.name for e in scripts))
PYEOF

if [ "${WHEEL_CHECK_GIN_ONLY:-0}" != "1" ]; then
  echo "wheel_check: 2-step quickstart from an empty directory"
  "$VPY" -m xprompt_jax.quickstart --method prompt_tuning --steps 2 --no_references \
    --output_dir run
  test -s run/report.md && test -s run/report.json
  echo "wheel_check: quickstart wrote run/report.md"
fi
echo "wheel_check: OK"
